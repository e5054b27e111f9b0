//! The pure core of the proxy: which requests may leave, and with which credential.
//!
//! [`Policy`] is built once from the contract's routes and the secrets file (the one
//! conversion) and then only answers [`Policy::decide`]. It does no IO, so every rule here is
//! tested by plain unit tests.

use std::sync::Arc;

use bottle_contract::bundle_config::RouteConfig;
use bottle_contract::route::{PathPrefix, RouteHost, RouteTable};
use bottle_contract::secrets::SecretsFile;

use crate::proxy::dlp::SecretSet;

use crate::proxy::inject::{Injection, InjectionError};
use crate::proxy::push_block;

pub(crate) use bottle_contract::route::{AMBIGUOUS_FORMS, is_ip_literal, normalize_path};

/// Why the route table could not be built. Messages name the route and never a token value.
///
/// Hosts and path prefixes cannot be invalid here: the contract's types refused them when the
/// config was read. What remains is the credential, which needs the secrets file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("route {index} ({host}): {error}")]
    Auth {
        index: usize,
        host: String,
        error: InjectionError,
    },
}

/// One allowed host with its limits and credential.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) host: RouteHost,
    /// `None` means the scheme's default port (443 over TLS, 80 in cleartext).
    pub(crate) port: Option<u16>,
    /// Empty means every path.
    pub(crate) paths: Vec<PathPrefix>,
    pub(crate) auth: Option<Injection>,
    /// The name of the token the route injects (it may carry that token, no other).
    pub(crate) token_ref: Option<String>,
}

impl Route {
    /// How the route is named in audit events and `/routes`.
    pub(crate) fn label(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }
}

/// The route table. Swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub(crate) routes: Vec<Route>,
    /// Every secret of the bottle, in every form the proxy looks for.
    pub(crate) secrets: Arc<SecretSet>,
    /// What `/routes` serves: the same routes, names only.
    pub(crate) table: RouteTable,
}

/// What the proxy knows about a request when it decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    /// Lower-case host without a trailing dot.
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The request travels over TLS to the upstream (true inside a CONNECT tunnel).
    pub(crate) tls: bool,
    /// The raw path (origin form, without the query).
    pub(crate) path: &'a str,
    /// The raw query, if any.
    pub(crate) query: Option<&'a str>,
    pub(crate) content_type: Option<&'a str>,
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow(Allowed),
    Deny(DenyReason),
}

/// An allowed request: which route, and the normalized path to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub(crate) route: usize,
    pub(crate) path: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenyReason {
    NoRoute,
    PathNotAllowed,
    AmbiguousPath,
    GitPush,
    CredentialOverCleartext,
    /// The request's Host or `:authority` does not name the tunnel's target.
    HostMismatch,
    /// Direct mode resolved the host to a private or special address.
    PrivateAddress,
    /// The host resolves to the proxy's own listener.
    Loop,
    /// A CONNECT to an IP address: routes name hosts, so no address is ever routed.
    IpLiteral,
    /// A CONNECT to a port that no route allows.
    PortNotRouted,
    /// Pipelock, behind the proxy, refused the request (its own allowlist or DLP).
    Pipelock,
}

impl DenyReason {
    /// Short stable name for the audit log.
    pub(crate) fn code(self) -> &'static str {
        match self {
            DenyReason::NoRoute => "no-route",
            DenyReason::PathNotAllowed => "path-not-allowed",
            DenyReason::AmbiguousPath => "ambiguous-path",
            DenyReason::GitPush => "git-push",
            DenyReason::CredentialOverCleartext => "credential-over-cleartext",
            DenyReason::HostMismatch => "host-mismatch",
            DenyReason::PrivateAddress => "private-address",
            DenyReason::Loop => "loop",
            DenyReason::IpLiteral => "ip-literal",
            DenyReason::PortNotRouted => "port-not-routed",
            DenyReason::Pipelock => "pipelock",
        }
    }
}

impl Policy {
    /// Builds the route table; every route is checked and every token slot must exist.
    pub fn from_config(
        routes: &[RouteConfig],
        secrets: &SecretsFile,
    ) -> Result<Policy, PolicyError> {
        let mut out = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let mut route = Route {
                host: route.host.clone(),
                port: route.port.map(u16::from),
                paths: route.path_allowlist.clone(),
                auth: None,
                token_ref: route.auth.as_ref().map(|a| a.token_ref.to_string()),
            };
            if let Some(auth) = &routes[index].auth {
                let injection =
                    Injection::from_config(auth, secrets).map_err(|error| PolicyError::Auth {
                        index,
                        host: route.label(),
                        error,
                    })?;
                route.auth = Some(injection);
            }
            out.push(route);
        }
        Ok(Policy {
            routes: out,
            secrets: Arc::new(SecretSet::from_secrets(secrets)),
            table: RouteTable::of(routes),
        })
    }

    /// Finds the route for a host and port; exact names win over wildcards.
    pub(crate) fn route_for(&self, host: &str, port: u16, tls: bool) -> Option<usize> {
        let default_port = if tls { 443 } else { 80 };
        let port_ok = |r: &Route| r.port.unwrap_or(default_port) == port;
        let exact = self
            .routes
            .iter()
            .position(|r| !r.host.is_wildcard() && r.host.matches(host) && port_ok(r));
        exact.or_else(|| {
            self.routes
                .iter()
                .position(|r| r.host.matches(host) && port_ok(r))
        })
    }

    /// Whether any route allows `port` (a route without a port allows the scheme's default).
    pub(crate) fn routes_port(&self, port: u16, tls: bool) -> bool {
        let default_port = if tls { 443 } else { 80 };
        self.routes
            .iter()
            .any(|r| r.port.unwrap_or(default_port) == port)
    }

    /// Decides one request. Any doubt is a denial.
    pub(crate) fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        // Before the route lookup, so the agent is told that no address is ever a route
        // rather than pointed at asking for one.
        if is_ip_literal(facts.host) {
            return Decision::Deny(DenyReason::IpLiteral);
        }
        if push_block::is_git_push(facts.path, facts.query, facts.content_type) {
            return Decision::Deny(DenyReason::GitPush);
        }
        let Some(index) = self.route_for(facts.host, facts.port, facts.tls) else {
            return Decision::Deny(DenyReason::NoRoute);
        };
        let route = &self.routes[index];
        if route.auth.is_some() && !facts.tls {
            return Decision::Deny(DenyReason::CredentialOverCleartext);
        }
        let Ok(path) = normalize_path(facts.path) else {
            return Decision::Deny(DenyReason::AmbiguousPath);
        };
        if !route.paths.is_empty() && !route.paths.iter().any(|p| p.covers(&path)) {
            return Decision::Deny(DenyReason::PathNotAllowed);
        }
        Decision::Allow(Allowed { route: index, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::route::{AuthScheme, RouteAuth};

    fn policy() -> Policy {
        let mut secrets = SecretsFile::default();
        secrets.tokens.insert(
            "GH".into(),
            bottle_contract::secret::Secret::new("ghp_secret".into()),
        );
        let routes = vec![
            RouteConfig {
                host: "api.github.com".parse().unwrap(),
                port: None,
                path_allowlist: vec!["/repos/alice/".parse().unwrap()],
                auth: Some(RouteAuth {
                    scheme: AuthScheme::Bearer,
                    token_ref: "GH".parse().unwrap(),
                }),
            },
            RouteConfig {
                host: "*.linear.app".parse().unwrap(),
                port: None,
                path_allowlist: vec![],
                auth: None,
            },
            RouteConfig {
                host: "internal.test".parse().unwrap(),
                port: std::num::NonZeroU16::new(8443),
                path_allowlist: vec![],
                auth: None,
            },
        ];
        Policy::from_config(&routes, &secrets).unwrap()
    }

    fn check(host: &str, port: u16, tls: bool, target: &str, expect: expect_test::Expect) {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let facts = RequestFacts {
            host,
            port,
            tls,
            path,
            query,
            content_type: None,
        };
        expect.assert_eq(&format!("{:?}", policy().decide(&facts)));
    }

    #[test]
    fn routes_and_paths() {
        use expect_test::expect;
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice/x",
            expect![[r#"Allow(Allowed { route: 0, path: "/repos/alice/x" })"#]],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/bob/x",
            expect!["Deny(PathNotAllowed)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice/../bob/x",
            expect!["Deny(PathNotAllowed)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice/%2e%2e/bob",
            expect!["Deny(PathNotAllowed)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice%2fx",
            expect!["Deny(AmbiguousPath)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice/%5c",
            expect!["Deny(AmbiguousPath)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/../../etc",
            expect!["Deny(AmbiguousPath)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/alice/..;/bob",
            expect!["Deny(AmbiguousPath)"],
        );
        check(
            "api.github.com",
            443,
            true,
            "/repos/%61lice/./y",
            expect![[r#"Allow(Allowed { route: 0, path: "/repos/alice/y" })"#]],
        );
        check(
            "api.github.com",
            80,
            false,
            "/repos/alice/x",
            expect!["Deny(CredentialOverCleartext)"],
        );
        check(
            "api.github.com",
            8443,
            true,
            "/repos/alice/x",
            expect!["Deny(NoRoute)"],
        );
        check("evil.com", 443, true, "/", expect!["Deny(NoRoute)"]);
        check(
            "169.254.169.254",
            80,
            false,
            "/",
            expect!["Deny(IpLiteral)"],
        );
        check("::1", 443, true, "/", expect!["Deny(IpLiteral)"]);
        check(
            "a.linear.app",
            443,
            true,
            "/x",
            expect![[r#"Allow(Allowed { route: 1, path: "/x" })"#]],
        );
        check("a.b.linear.app", 443, true, "/x", expect!["Deny(NoRoute)"]);
        check("linear.app", 443, true, "/x", expect!["Deny(NoRoute)"]);
        check(
            "a.linear.app",
            80,
            false,
            "/x",
            expect![[r#"Allow(Allowed { route: 1, path: "/x" })"#]],
        );
        check(
            "internal.test",
            8443,
            true,
            "/",
            expect![[r#"Allow(Allowed { route: 2, path: "/" })"#]],
        );
        check("internal.test", 443, true, "/", expect!["Deny(NoRoute)"]);
        check(
            "a.linear.app",
            443,
            true,
            "/r.git/info/refs?service=git-receive-pack",
            expect!["Deny(GitPush)"],
        );
    }

    #[test]
    fn paths_an_upstream_could_read_another_way_are_ambiguous() {
        let ambiguous = [
            // A `;` parameter on a dot segment: Tomcat-style servers read `..;` as `..`.
            "/repos/alice/..;/bob",
            "/repos/alice/..;x=1/bob",
            "/repos/alice/.;/x",
            "/repos/alice/%2e%2e;/bob",
            "/repos/alice/..%3b/bob",
            // Double (and triple) encoding of `.`, `/`, `\`, `;`, `%`.
            "/repos/alice/%252e%252e/bob",
            "/repos/alice/%252E%252E/bob",
            "/repos/alice%252fbob",
            "/repos/alice/%255c",
            "/repos/alice/..%253b/bob",
            "/repos/alice/%25252e%25252e/bob",
            "/repos/alice/%2500",
            // Overlong and otherwise invalid UTF-8 after decoding.
            "/repos/alice/%c0%ae%c0%ae/bob",
            "/repos/alice/%C0%AF",
            "/repos/alice/%e0%80%ae",
            "/repos/alice/%ff",
            "/repos/alice/%25c0%25ae",
        ];
        for path in ambiguous {
            assert_eq!(
                normalize_path(path),
                Err(bottle_contract::route::Ambiguous),
                "{path}"
            );
        }
        let fine = [
            ("/a;b/c", "/a;b/c"),
            ("/a/..b/c", "/a/..b/c"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a%2520b", "/a%2520b"),
            ("/a%2541", "/a%2541"),
        ];
        for (path, want) in fine {
            assert_eq!(normalize_path(path).as_deref(), Ok(want), "{path}");
        }
    }

    #[test]
    fn ip_literals_in_every_form_resolvers_accept() {
        for host in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1%eth0",
            "10.0.0.1.",
        ] {
            assert!(is_ip_literal(host), "{host}");
        }
        for host in [
            "api.example.com",
            "0x7f.example.com",
            "1.2.3.4.5",
            "a1",
            "x",
        ] {
            assert!(!is_ip_literal(host), "{host}");
        }
    }

    #[test]
    fn bad_routes_never_reach_the_policy_and_a_missing_token_names_the_route() {
        // Hosts and prefixes are refused when the config is read (the contract's types).
        for (route, want) in [
            (r#"{"host":"10.0.0.1","auth":null}"#, "is an IP address"),
            (
                r#"{"host":"*.com","auth":null}"#,
                "is not a valid host name",
            ),
            (
                r#"{"host":"a b.com","auth":null}"#,
                "is not a valid host name",
            ),
            (
                r#"{"host":"a.com","path_allowlist":["x/"],"auth":null}"#,
                "must start with `/`",
            ),
            (
                r#"{"host":"a.com","auth":{"scheme":{"header":{"name":"te"}},"token_ref":"K"}}"#,
                "cannot carry a credential",
            ),
        ] {
            let err = serde_json::from_str::<RouteConfig>(route)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{route}: {err}");
        }
        let route: RouteConfig = serde_json::from_str(
            r#"{"host":"a.com","auth":{"scheme":"bearer","token_ref":"MISSING"}}"#,
        )
        .unwrap();
        let err = Policy::from_config(&[route], &SecretsFile::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "route 0 (a.com): token slot \"MISSING\" is not in the secrets file"
        );
    }
}
