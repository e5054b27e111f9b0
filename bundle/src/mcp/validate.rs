//! Checking what an agent sends before it becomes a proposal.
//!
//! Every check is pure and every error names the input field and says what to send instead:
//! the agent reads these messages and retries, and an operator should never have to look at
//! a proposal that could not have been applied.

use bottle_contract::bundle_config::{AuthScheme, RouteConfig};
use bottle_contract::supervise::AuthRequest;

/// Longest justification, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 4000;
/// Largest proposed Dockerfile.
pub const MAX_DOCKERFILE_BYTES: usize = 64 * 1024;
/// Largest pipelock change.
pub const MAX_PIPELOCK_BYTES: usize = 16 * 1024;
/// Most path prefixes in one egress proposal, and the longest one.
pub const MAX_PATHS: usize = 32;
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest `token_ref`.
pub const MAX_TOKEN_REF: usize = 128;

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

/// The host an `egress-block` asks for: an exact, lowercase DNS name.
pub fn host(text: &str) -> Result<String, Invalid> {
    let field = "host";
    if text.trim().is_empty() {
        return Err(invalid(
            field,
            "empty; send the host name the proxy refused, e.g. api.example.com",
        ));
    }
    if text.contains("://") || text.contains('/') {
        return Err(invalid(
            field,
            format!(
                "{text:?} is not a bare host name; send only the host (no scheme, no path), e.g. api.example.com"
            ),
        ));
    }
    if text.contains('*') {
        return Err(invalid(
            field,
            format!("{text:?}: wildcards are not accepted; ask for each exact host you need"),
        ));
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Err(invalid(
            field,
            format!(
                "{text:?} is an IP address; routes name hosts, so ask for the host name instead"
            ),
        ));
    }
    if text.contains(':') {
        return Err(invalid(
            field,
            format!("{text:?} has a port; send the host name without `:port`"),
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            field,
            format!(
                "{text:?} must be lowercase; send {:?}",
                text.to_ascii_lowercase()
            ),
        ));
    }
    if text.len() > 253 {
        return Err(invalid(
            field,
            format!("{} characters; a host name has at most 253", text.len()),
        ));
    }
    crate::proxy::policy::check_dns_name(text).map_err(|reason| invalid(field, reason))?;
    Ok(text.to_owned())
}

/// The routes in `routes` that already serve `host` (exact name, or a one-label wildcard).
pub fn routes_serving<'a>(routes: &'a [RouteConfig], host: &str) -> Vec<&'a RouteConfig> {
    routes
        .iter()
        .filter(|r| {
            let pattern = r.host.rsplit_once(':').map_or(r.host.as_str(), |(h, p)| {
                if p.parse::<u16>().is_ok() {
                    h
                } else {
                    r.host.as_str()
                }
            });
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .strip_suffix(parent)
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                None => pattern == host,
            }
        })
        .collect()
}

/// Whether asking for `host` with `paths` adds anything to the routes already `serving` it.
///
/// A request for a routed host is refused (naming what the route allows) unless it asks for
/// path prefixes the route does not cover yet: the proxy's "outside the route's
/// path_allowlist" refusal tells the agent to ask exactly that way.
pub fn check_routed(host: &str, paths: &[String], serving: &[&RouteConfig]) -> Result<(), Invalid> {
    if serving.is_empty() {
        return Ok(());
    }
    let covered = |path: &str| {
        serving.iter().any(|r| {
            r.path_allowlist.is_empty() || r.path_allowlist.iter().any(|p| path.starts_with(p))
        })
    };
    if !paths.is_empty() && !paths.iter().all(|p| covered(p)) {
        return Ok(());
    }
    let described: Vec<String> = serving
        .iter()
        .map(|r| {
            let paths = if r.path_allowlist.is_empty() {
                "every path".to_owned()
            } else {
                format!("path prefixes {}", r.path_allowlist.join(", "))
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

/// `path_allowlist`: each a prefix starting with `/` that the proxy can match unambiguously.
pub fn paths(paths: &[String]) -> Result<Vec<String>, Invalid> {
    if paths.len() > MAX_PATHS {
        return Err(invalid(
            "path_allowlist",
            format!(
                "{} entries; send at most {MAX_PATHS} prefixes (or none for every path)",
                paths.len()
            ),
        ));
    }
    for (i, path) in paths.iter().enumerate() {
        let field = format!("path_allowlist[{i}]");
        if !path.starts_with('/') {
            return Err(invalid(
                field,
                format!("{path:?} must start with `/`, e.g. /repos/alice/"),
            ));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid(
                field,
                format!("longer than {MAX_PATH_BYTES} bytes"),
            ));
        }
        if crate::proxy::policy::normalize_path(path).is_err() {
            return Err(invalid(
                field,
                format!(
                    "{path:?} is ambiguous (it has {}); send a plain prefix",
                    crate::proxy::policy::AMBIGUOUS_FORMS
                ),
            ));
        }
    }
    Ok(paths.to_vec())
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
/// the host variable holding the token.
pub fn auth(scheme: &str, token_ref: &str, header: Option<&str>) -> Result<AuthRequest, Invalid> {
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "bearer" => AuthScheme::Bearer,
        "token" => AuthScheme::Token,
        "basic" => AuthScheme::Basic,
        "header" => {
            let name = header.map(str::trim).unwrap_or_default();
            if name.is_empty() {
                return Err(invalid(
                    "auth.header",
                    "scheme `header` needs the header name, e.g. x-api-key",
                ));
            }
            let valid = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(invalid(
                    "auth.header",
                    format!("{name:?} is not a header name; use letters, digits and `-`"),
                ));
            }
            let name = name.to_ascii_lowercase();
            if crate::proxy::inject::RESERVED.contains(&name.as_str()) {
                return Err(invalid(
                    "auth.header",
                    format!("{name} cannot carry a credential; name the header the API expects"),
                ));
            }
            AuthScheme::Header { name }
        }
        other => {
            return Err(invalid(
                "auth.scheme",
                format!("{other:?} is not a scheme; use one of Bearer, token, Basic, header"),
            ));
        }
    };
    if header.is_some() && !matches!(scheme, AuthScheme::Header { .. }) {
        return Err(invalid(
            "auth.header",
            "only for scheme `header`; leave it out for Bearer, token and Basic",
        ));
    }
    let token_ok = !token_ref.is_empty()
        && token_ref.len() <= MAX_TOKEN_REF
        && token_ref
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && token_ref
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !token_ok {
        return Err(invalid(
            "auth.token_ref",
            "not a variable name; send the NAME of the host environment variable holding the \
             token ([A-Z_][A-Z0-9_]*, e.g. GITHUB_TOKEN), never the token itself",
        ));
    }
    Ok(AuthRequest {
        scheme,
        token_ref: token_ref.to_owned(),
    })
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

    fn route(host: &str, paths: &[&str]) -> RouteConfig {
        RouteConfig {
            host: host.into(),
            path_allowlist: paths.iter().map(|p| (*p).to_owned()).collect(),
            auth: None,
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("docs.rs").unwrap(), "docs.rs");
        assert_eq!(host("a-b.example.co.uk").unwrap(), "a-b.example.co.uk");
        expect_test::expect![[r#"
            [
                "host: empty; send the host name the proxy refused, e.g. api.example.com",
                "host: \"https://docs.rs\" is not a bare host name; send only the host (no scheme, no path), e.g. api.example.com",
                "host: \"docs.rs/x\" is not a bare host name; send only the host (no scheme, no path), e.g. api.example.com",
                "host: \"*.docs.rs\": wildcards are not accepted; ask for each exact host you need",
                "host: \"10.0.0.1\" is an IP address; routes name hosts, so ask for the host name instead",
                "host: \"[::1]\" is an IP address; routes name hosts, so ask for the host name instead",
                "host: \"docs.rs:443\" has a port; send the host name without `:port`",
                "host: \"Docs.RS\" must be lowercase; send \"docs.rs\"",
                "host: 254 characters; a host name has at most 253",
                "host: use letters, digits and `-` in dot-separated labels (a `*.` prefix for a wildcard)",
                "host: use letters, digits and `-` in dot-separated labels (a `*.` prefix for a wildcard)",
                "host: an IP address is not a route; name the host",
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

    #[test]
    fn routed_hosts_are_found_with_ports_and_wildcards() {
        let routes = [
            route("api.github.com", &["/repos/a/"]),
            route("*.example.com", &[]),
            route("git.test:8443", &[]),
        ];
        assert_eq!(routes_serving(&routes, "api.github.com").len(), 1);
        assert_eq!(routes_serving(&routes, "x.example.com").len(), 1);
        assert_eq!(routes_serving(&routes, "a.b.example.com").len(), 0);
        assert_eq!(routes_serving(&routes, "git.test").len(), 1);
        assert_eq!(routes_serving(&routes, "github.com").len(), 0);
        let gh = routes_serving(&routes, "api.github.com");
        let msg = check_routed("api.github.com", &[], &gh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("path prefixes /repos/a/"), "{msg}");
        assert!(msg.contains("path_allowlist you need"), "{msg}");
        let msg = check_routed("api.github.com", &["/repos/a/x".into()], &gh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("already inside"), "{msg}");
        // Asking for a prefix the route lacks is an extension, not a duplicate.
        check_routed(
            "api.github.com",
            &["/repos/a/x".into(), "/user".into()],
            &gh,
        )
        .unwrap();
        let wild = routes_serving(&routes, "x.example.com");
        let msg = check_routed("x.example.com", &["/v1/".into()], &wild)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("every path"), "{msg}");
        check_routed("docs.rs", &[], &[]).unwrap();
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
                .contains("ambiguous")
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
                name: "x-api-key".into()
            }
        );
        let field = |r: Result<AuthRequest, Invalid>| r.unwrap_err().field;
        assert_eq!(field(auth("Digest", "K", None)), "auth.scheme");
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
        assert!(msg.contains("never the token itself"), "{msg}");
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
