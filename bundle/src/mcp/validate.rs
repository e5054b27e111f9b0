//! Checking what an agent sends before it becomes a proposal.
//!
//! Every check is pure and every error names the input field and says what to send instead:
//! the agent reads these messages and retries, and an operator should never have to look at
//! a proposal that could not have been applied.

use bottle_contract::bundle_config::RouteConfig;
use bottle_contract::route::{AuthScheme, PathPrefix, RouteAuth, RouteHost, SchemeError, TokenRef};

/// Longest justification, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 4000;
/// Largest proposed Dockerfile.
pub const MAX_DOCKERFILE_BYTES: usize = 64 * 1024;
/// Largest pipelock change.
pub const MAX_PIPELOCK_BYTES: usize = 16 * 1024;
/// Most path prefixes in one egress proposal, and the longest one.
pub const MAX_PATHS: usize = 32;

/// A bad input: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The host an `egress-block` asks for: a route host (the one rule every side uses) that is
/// not a wildcard.
pub fn host(text: &str) -> Result<RouteHost, Invalid> {
    let field = "host";
    if text.trim().is_empty() {
        return Err(invalid(
            field,
            "empty; send the host name the proxy refused, e.g. api.example.com",
        ));
    }
    let host = RouteHost::parse(text).map_err(|e| invalid(field, e.message()))?;
    if host.is_wildcard() {
        return Err(invalid(
            field,
            format!("{text:?}: wildcards are not accepted; ask for each exact host you need"),
        ));
    }
    Ok(host)
}

/// The routes in `routes` that already serve `host` (exact name, or a one-label wildcard).
pub fn routes_serving<'a>(routes: &'a [RouteConfig], host: &RouteHost) -> Vec<&'a RouteConfig> {
    routes
        .iter()
        .filter(|r| r.host.matches(host.as_str()))
        .collect()
}

/// Whether asking for `host` with `paths` adds anything to the routes already `serving` it.
///
/// A request for a routed host is refused (naming what the route allows) unless it asks for
/// path prefixes the route does not cover yet: the proxy's "outside the route's
/// path_allowlist" refusal tells the agent to ask exactly that way.
pub fn check_routed(
    host: &RouteHost,
    paths: &[PathPrefix],
    serving: &[&RouteConfig],
) -> Result<(), Invalid> {
    if serving.is_empty() {
        return Ok(());
    }
    let covered = |path: &PathPrefix| {
        serving.iter().any(|r| {
            r.path_allowlist.is_empty()
                || r.path_allowlist
                    .iter()
                    .any(|p| path.as_str().starts_with(p.as_str()))
        })
    };
    if !paths.is_empty() && !paths.iter().all(covered) {
        return Ok(());
    }
    let described: Vec<String> = serving
        .iter()
        .map(|r| {
            let paths = if r.path_allowlist.is_empty() {
                "every path".to_owned()
            } else {
                let prefixes: Vec<&str> = r.path_allowlist.iter().map(PathPrefix::as_str).collect();
                format!("path prefixes {}", prefixes.join(", "))
            };
            format!("route {} allows {paths}", r.host)
        })
        .collect();
    let hint = if serving.iter().any(|r| r.path_allowlist.is_empty()) {
        "A request refused for this host is not a missing route; call list-egress-routes to see it"
    } else if paths.is_empty() {
        "If a path outside those prefixes was refused, call egress-block again with the \
         path_allowlist you need"
    } else {
        "The paths you sent are already inside those prefixes; call list-egress-routes to see them"
    };
    Err(invalid(
        "host",
        format!(
            "{host} already has a route ({}). {hint}",
            described.join("; ")
        ),
    ))
}

/// `path_allowlist`: at most [`MAX_PATHS`] path prefixes (the one rule every side uses).
pub fn paths(paths: &[String]) -> Result<Vec<PathPrefix>, Invalid> {
    if paths.len() > MAX_PATHS {
        return Err(invalid(
            "path_allowlist",
            format!(
                "{} entries; send at most {MAX_PATHS} prefixes (or none for every path)",
                paths.len()
            ),
        ));
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            PathPrefix::parse(path)
                .map_err(|e| invalid(format!("path_allowlist[{i}]"), e.message()))
        })
        .collect()
}

/// The justification, trimmed: non-empty and at most [`MAX_JUSTIFICATION_CHARS`].
pub fn justification(text: &str) -> Result<String, Invalid> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(
            "justification",
            "empty; say what you were doing and why you need this, so the operator can decide",
        ));
    }
    let chars = trimmed.chars().count();
    if chars > MAX_JUSTIFICATION_CHARS {
        return Err(invalid(
            "justification",
            format!("{chars} characters; keep it under {MAX_JUSTIFICATION_CHARS}"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// An `auth` block: scheme name (`Bearer`, `token`, `Basic`, `header` with a header name) and
/// the host variable holding the token, by the rules every side uses.
pub fn auth(scheme: &str, token_ref: &str, header: Option<&str>) -> Result<RouteAuth, Invalid> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    let scheme = AuthScheme::from_parts(scheme, header).map_err(|e| match &e {
        SchemeError::Scheme(_) => invalid("auth.scheme", e.message()),
        SchemeError::Header(_) | SchemeError::MissingHeader => invalid("auth.header", e.message()),
    })?;
    let token_ref =
        TokenRef::parse(token_ref).map_err(|e| invalid("auth.token_ref", e.message()))?;
    Ok(RouteAuth { scheme, token_ref })
}

/// A whole proposed Dockerfile: at most [`MAX_DOCKERFILE_BYTES`] and parses.
pub fn dockerfile(text: &str) -> Result<String, Invalid> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(invalid(
            "dockerfile",
            format!(
                "{} bytes; at most {MAX_DOCKERFILE_BYTES} (send the Dockerfile, not build context)",
                text.len()
            ),
        ));
    }
    super::dockerfile::parse(text).map_err(|e| {
        invalid(
            "dockerfile",
            format!("does not parse: {e}. Send the whole modified file"),
        )
    })?;
    Ok(text.to_owned())
}

/// A pipelock change: a non-empty YAML mapping of at most [`MAX_PIPELOCK_BYTES`].
pub fn pipelock_change(text: &str) -> Result<String, Invalid> {
    if text.len() > MAX_PIPELOCK_BYTES {
        return Err(invalid(
            "change",
            format!("{} bytes; at most {MAX_PIPELOCK_BYTES}", text.len()),
        ));
    }
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        invalid(
            "change",
            format!("is not valid YAML: {}", first_line(&e.to_string())),
        )
    })?;
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => Ok(text.to_owned()),
        serde_json::Value::Object(_) => Err(invalid(
            "change",
            "an empty mapping; send the pipelock keys to change, e.g. `api_allowlist: [example.com]`",
        )),
        _ => Err(invalid(
            "change",
            "must be a YAML mapping of pipelock config keys, e.g. `api_allowlist: [example.com]`",
        )),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, port: Option<u16>, paths: &[&str]) -> RouteConfig {
        RouteConfig {
            host: host.parse().unwrap(),
            port: port.and_then(std::num::NonZeroU16::new),
            path_allowlist: paths.iter().map(|p| p.parse().unwrap()).collect(),
            auth: None,
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("docs.rs").unwrap().as_str(), "docs.rs");
        assert_eq!(
            host("a-b.example.co.uk").unwrap().as_str(),
            "a-b.example.co.uk"
        );
        expect_test::expect![[r#"
            [
                "host: empty; send the host name the proxy refused, e.g. api.example.com",
                "host: `https://docs.rs` must be a bare host name such as api.github.com (no scheme or path)",
                "host: `docs.rs/x` must be a bare host name such as api.github.com (no scheme or path)",
                "host: \"*.docs.rs\": wildcards are not accepted; ask for each exact host you need",
                "host: `10.0.0.1` is an IP address; routes name hosts (the proxy refuses IP literals)",
                "host: `[::1]` is an IP address; routes name hosts (the proxy refuses IP literals)",
                "host: `docs.rs:443` must be a bare host name without a port (routes are for HTTPS on 443)",
                "host: `Docs.RS` must be lowercase: write `docs.rs`",
                "host: `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa` is not a valid host name (labels of a-z, 0-9 and `-`, at least two, optionally starting with `*.`)",
                "host: `docs..rs` is not a valid host name (labels of a-z, 0-9 and `-`, at least two, optionally starting with `*.`)",
                "host: `do cs.rs` is not a valid host name (labels of a-z, 0-9 and `-`, at least two, optionally starting with `*.`)",
                "host: `1.2` is an IP address; routes name hosts (the proxy refuses IP literals)",
            ]
        "#]]
        .assert_debug_eq(
            &[
                "",
                "https://docs.rs",
                "docs.rs/x",
                "*.docs.rs",
                "10.0.0.1",
                "[::1]",
                "docs.rs:443",
                "Docs.RS",
                &"a".repeat(254),
                "docs..rs",
                "do cs.rs",
                "1.2",
            ]
            .map(|h| host(h).unwrap_err().to_string()),
        );
    }

    /// The MCP tool and the proxy's config accept exactly what the contract's types accept,
    /// on the same samples the manifest's conformance test judges: a proposal the tool files
    /// is one the host can approve and the proxy can load.
    #[test]
    fn the_tool_and_the_proxy_config_judge_routes_as_the_contract_does() {
        use bottle_contract::route::{HeaderName, samples};
        let config_accepts = |route: serde_json::Value| {
            serde_json::from_value::<RouteConfig>(route).is_ok_and(|r| {
                let mut secrets = bottle_contract::secrets::SecretsFile::default();
                secrets
                    .tokens
                    .insert("K".into(), bottle_contract::secret::Secret::new("v".into()));
                crate::proxy::policy::Policy::from_config(&[r], &secrets).is_ok()
            })
        };
        for h in samples::HOSTS {
            let parsed = RouteHost::parse(h);
            let exact = parsed.as_ref().is_ok_and(|p| !p.is_wildcard());
            assert_eq!(host(h).is_ok(), exact, "tool, host {h:?}");
            let route = serde_json::json!({"host": h, "auth": null});
            assert_eq!(config_accepts(route), parsed.is_ok(), "config, host {h:?}");
        }
        for p in samples::PATHS {
            let want = PathPrefix::parse(p).is_ok();
            assert_eq!(paths(&[(*p).to_owned()]).is_ok(), want, "tool, path {p:?}");
            let route =
                serde_json::json!({"host": "a.example", "path_allowlist": [p], "auth": null});
            assert_eq!(config_accepts(route), want, "config, path {p:?}");
        }
        for h in samples::HEADERS {
            let want = HeaderName::parse(h).is_ok();
            assert_eq!(
                auth("header", "K", Some(h)).is_ok(),
                want,
                "tool, header {h:?}"
            );
            let route = serde_json::json!({"host": "a.example",
                "auth": {"scheme": {"header": {"name": h}}, "token_ref": "K"}});
            assert_eq!(config_accepts(route), want, "config, header {h:?}");
        }
        for t in samples::TOKEN_REFS {
            let want = TokenRef::parse(t).is_ok();
            assert_eq!(
                auth("Bearer", t, None).is_ok(),
                want,
                "tool, token_ref {t:?}"
            );
        }
        for s in samples::SCHEMES {
            for header in [None, Some("x-key")] {
                let want = AuthScheme::from_parts(s, header).is_ok();
                assert_eq!(
                    auth(s, "K", header).is_ok(),
                    want,
                    "tool, scheme {s:?} {header:?}"
                );
            }
        }
    }

    #[test]
    fn routed_hosts_are_found_with_ports_and_wildcards() {
        let routes = [
            route("api.github.com", None, &["/repos/a/"]),
            route("*.example.com", None, &[]),
            route("git.test", Some(8443), &[]),
        ];
        let h = |text: &str| -> RouteHost { text.parse().unwrap() };
        let p = |text: &str| -> PathPrefix { text.parse().unwrap() };
        assert_eq!(routes_serving(&routes, &h("api.github.com")).len(), 1);
        assert_eq!(routes_serving(&routes, &h("x.example.com")).len(), 1);
        assert_eq!(routes_serving(&routes, &h("a.b.example.com")).len(), 0);
        assert_eq!(routes_serving(&routes, &h("git.test")).len(), 1);
        assert_eq!(routes_serving(&routes, &h("github.com")).len(), 0);
        let gh = routes_serving(&routes, &h("api.github.com"));
        let msg = check_routed(&h("api.github.com"), &[], &gh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("path prefixes /repos/a/"), "{msg}");
        assert!(msg.contains("path_allowlist you need"), "{msg}");
        let msg = check_routed(&h("api.github.com"), &[p("/repos/a/x")], &gh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("already inside"), "{msg}");
        // Asking for a prefix the route lacks is an extension, not a duplicate.
        check_routed(&h("api.github.com"), &[p("/repos/a/x"), p("/user")], &gh).unwrap();
        let wild = routes_serving(&routes, &h("x.example.com"));
        let msg = check_routed(&h("x.example.com"), &[p("/v1/")], &wild)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("every path"), "{msg}");
        check_routed(&h("docs.rs"), &[], &[]).unwrap();
    }

    #[test]
    fn paths_and_justifications() {
        assert!(paths(&["/v1/".into()]).is_ok());
        assert_eq!(
            paths(&["/ok".into(), "v1".into()]).unwrap_err().field,
            "path_allowlist[1]"
        );
        assert!(
            paths(&["/a/%2f".into()])
                .unwrap_err()
                .message
                .contains("write the decoded path")
        );
        assert!(paths(&vec!["/a".to_owned(); 33]).is_err());
        assert_eq!(justification("  why \n").unwrap(), "why");
        assert!(justification(" \n\t").is_err());
        assert!(justification(&"x".repeat(4000)).is_ok());
        assert!(justification(&"é".repeat(4001)).is_err());
    }

    #[test]
    fn auth_schemes_map_to_the_contract() {
        assert_eq!(
            auth("Bearer", "GH_PAT", None).unwrap().scheme,
            AuthScheme::Bearer
        );
        assert_eq!(auth("token", "T1", None).unwrap().scheme, AuthScheme::Token);
        assert_eq!(auth("Basic", "_X", None).unwrap().scheme, AuthScheme::Basic);
        assert_eq!(
            auth("header", "KEY", Some("X-Api-Key")).unwrap().scheme,
            AuthScheme::Header {
                name: "x-api-key".parse().unwrap()
            }
        );
        let field = |r: Result<RouteAuth, Invalid>| r.unwrap_err().field;
        assert_eq!(field(auth("Digest", "K", None)), "auth.scheme");
        assert_eq!(field(auth("bearer", "K", None)), "auth.scheme");
        assert_eq!(field(auth("header", "K", Some("cookie"))), "auth.header");
        assert_eq!(field(auth("header", "K", Some("te"))), "auth.header");
        assert_eq!(field(auth("header", "K", None)), "auth.header");
        assert_eq!(field(auth("header", "K", Some("host"))), "auth.header");
        assert_eq!(field(auth("header", "K", Some("a b"))), "auth.header");
        assert_eq!(field(auth("Bearer", "K", Some("x-a"))), "auth.header");
        assert_eq!(field(auth("Bearer", "gh_pat", None)), "auth.token_ref");
        assert_eq!(field(auth("Bearer", "1GH", None)), "auth.token_ref");
        assert_eq!(field(auth("Bearer", "", None)), "auth.token_ref");
        let msg = auth("Bearer", "ghp_secretvalue", None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not hold the token itself"), "{msg}");
    }

    #[test]
    fn dockerfiles_and_pipelock_changes() {
        assert!(dockerfile("FROM debian\nRUN true\n").is_ok());
        let e = dockerfile("FROM a\nBOGUS x\n").unwrap_err().to_string();
        assert!(
            e.starts_with("dockerfile: does not parse: line 2: unknown instruction"),
            "{e}"
        );
        let big = format!("FROM a\n{}", "RUN true\n".repeat(8000));
        assert!(dockerfile(&big).unwrap_err().message.contains("bytes"));

        assert!(pipelock_change("api_allowlist: [docs.rs]\n").is_ok());
        for bad in ["- a\n- b\n", "just text", "{}", "a: [unclosed\n", ""] {
            let e = pipelock_change(bad).unwrap_err();
            assert_eq!(e.field, "change", "{bad:?}: {e}");
        }
        assert!(pipelock_change(&format!("a: \"{}\"\n", "x".repeat(17000))).is_err());
    }
}
