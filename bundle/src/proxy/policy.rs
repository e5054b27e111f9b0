//! The pure core of the proxy: which requests may leave, and with which credential.
//!
//! [`Policy`] is built once from the contract's routes and the secrets file (the one
//! conversion) and then only answers [`Policy::decide`]. It does no IO, so every rule here is
//! tested by plain unit tests.

use bottle_contract::bundle_config::RouteConfig;
use bottle_contract::secrets::SecretsFile;

use crate::proxy::inject::{Injection, InjectionError};
use crate::proxy::push_block;

/// What [`normalize_path`] refuses, for messages that explain a refusal (a macro so that
/// `concat!` can build `&'static str` reasons from it).
macro_rules! ambiguous_forms {
    () => {
        "encoded `/`, `\\`, NUL, a double-encoded `.`, `/`, `\\`, `;` or `%`, invalid UTF-8 \
         (such as an overlong `%C0%AE`), a `.` or `..` segment with `;` parameters, or a `..` \
         above the root"
    };
}
pub(crate) const AMBIGUOUS_FORMS: &str = ambiguous_forms!();

/// Why the route table could not be built. Messages name the route and never a token value.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("route {index} host {host:?}: {reason}")]
    Host {
        index: usize,
        host: String,
        reason: &'static str,
    },
    #[error("route {index} ({host}) path_allowlist entry {path:?}: {reason}")]
    Path {
        index: usize,
        host: String,
        path: String,
        reason: &'static str,
    },
    #[error("route {index} ({host}): {error}")]
    Auth {
        index: usize,
        host: String,
        error: InjectionError,
    },
}

/// A validated host name pattern: an exact name or a one-label `*.` wildcard, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Exact(String),
    /// `*.example.com`, stored as `example.com`: matches exactly one more label.
    Wildcard(String),
}

impl Host {
    fn parse(text: &str) -> Result<Host, &'static str> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("*.") {
            Some(rest) => {
                check_dns_name(rest)?;
                if !rest.contains('.') {
                    return Err("a wildcard needs at least two labels after `*.`");
                }
                Ok(Host::Wildcard(rest.to_owned()))
            }
            None => {
                check_dns_name(&lower)?;
                Ok(Host::Exact(lower))
            }
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(name) => name == host,
            Host::Wildcard(parent) => host
                .strip_suffix(parent.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// The pattern as written in the config (`*.example.com` or `api.example.com`).
    pub(crate) fn pattern(&self) -> String {
        match self {
            Host::Exact(name) => name.clone(),
            Host::Wildcard(parent) => format!("*.{parent}"),
        }
    }
}

/// Checks an LDH host name; IP literals are refused (routes name hosts, not addresses).
pub(crate) fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name must be 1 to 253 characters");
    }
    if is_ip_literal(name) {
        return Err("an IP address is not a route; name the host");
    }
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') {
            return Err(
                "use letters, digits and `-` in dot-separated labels (a `*.` prefix for a wildcard)",
            );
        }
    }
    Ok(())
}

/// Whether a host (without IPv6 brackets) is an IP address rather than a name: an IPv6
/// literal, or anything a resolver's `inet_aton` reads as IPv4 (`127.1`, `2130706433`,
/// `0x7f.0.0.1`: one to four decimal, octal or `0x` hex parts).
pub(crate) fn is_ip_literal(host: &str) -> bool {
    let number = |part: &str| match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
    };
    let host = host.trim_end_matches('.');
    host.contains(':')
        || host.parse::<std::net::IpAddr>().is_ok()
        || (host.split('.').count() <= 4 && host.split('.').all(number))
}

/// A normalized path prefix from `path_allowlist`, starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPrefix(String);

impl PathPrefix {
    fn parse(text: &str) -> Result<PathPrefix, &'static str> {
        if !text.starts_with('/') {
            return Err("a path prefix must start with `/`");
        }
        normalize_path(text)
            .map(PathPrefix)
            .map_err(|_| concat!("the prefix is ambiguous (", ambiguous_forms!(), ")"))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// One allowed host with its limits and credential.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) host: Host,
    /// `None` means the scheme's default port (443 over TLS, 80 in cleartext).
    pub(crate) port: Option<u16>,
    /// Empty means every path.
    pub(crate) paths: Vec<PathPrefix>,
    pub(crate) auth: Option<Injection>,
}

impl Route {
    /// How the route is named in audit events and `/routes`.
    pub(crate) fn label(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host.pattern()),
            None => self.host.pattern(),
        }
    }
}

/// The route table. Swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub(crate) routes: Vec<Route>,
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
            let (host_text, port) =
                split_port(&route.host).map_err(|reason| PolicyError::Host {
                    index,
                    host: route.host.clone(),
                    reason,
                })?;
            let host = Host::parse(host_text).map_err(|reason| PolicyError::Host {
                index,
                host: route.host.clone(),
                reason,
            })?;
            let paths = route
                .path_allowlist
                .iter()
                .map(|p| {
                    PathPrefix::parse(p).map_err(|reason| PolicyError::Path {
                        index,
                        host: route.host.clone(),
                        path: p.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let auth = match &route.auth {
                Some(auth) => Some(Injection::from_config(auth, secrets).map_err(|error| {
                    PolicyError::Auth {
                        index,
                        host: route.host.clone(),
                        error,
                    }
                })?),
                None => None,
            };
            out.push(Route {
                host,
                port,
                paths,
                auth,
            });
        }
        Ok(Policy { routes: out })
    }

    /// Finds the route for a host and port; exact names win over wildcards.
    pub(crate) fn route_for(&self, host: &str, port: u16, tls: bool) -> Option<usize> {
        let default_port = if tls { 443 } else { 80 };
        let port_ok = |r: &Route| r.port.unwrap_or(default_port) == port;
        let exact = self
            .routes
            .iter()
            .position(|r| matches!(r.host, Host::Exact(_)) && r.host.matches(host) && port_ok(r));
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
        if !route.paths.is_empty() && !route.paths.iter().any(|p| path.starts_with(&p.0)) {
            return Decision::Deny(DenyReason::PathNotAllowed);
        }
        Decision::Allow(Allowed { route: index, path })
    }
}

/// Splits an optional `:port` off a route host.
fn split_port(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("the port after `:` must be a number from 1 to 65535")?;
            Ok((host, Some(port)))
        }
        None => Ok((text, None)),
    }
}

/// The path is ambiguous and is refused rather than guessed at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ambiguous;

/// Normalizes an origin-form path the way the upstream will read it: decodes percent-encoded
/// unreserved bytes, upper-cases other escapes (raw non-ASCII becomes escapes), removes dot
/// segments (RFC 3986 §5.2.4), and refuses what an upstream could still read another way
/// (see [`AMBIGUOUS_FORMS`]), and a path not starting with `/`.
pub(crate) fn normalize_path(raw: &str) -> Result<String, Ambiguous> {
    if !raw.starts_with('/') {
        return Err(Ambiguous);
    }
    let canonical = canonical_escapes(raw)?;
    refuse_double_encoding(&canonical)?;
    remove_dot_segments(&canonical)
}

/// One round of percent-decoding, keeping what must stay encoded as upper-case escapes.
/// Refuses encoded separators and NUL, and a decoded byte string that is not UTF-8: some
/// decoders read an overlong `%C0%AE` as `.`.
fn canonical_escapes(raw: &str) -> Result<String, Ambiguous> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = hex_pair(bytes.get(i + 1..i + 3)).ok_or(Ambiguous)?;
            decoded.push(value);
            match value {
                b'/' | b'\\' | 0 => return Err(Ambiguous),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => push_escape(&mut out, v),
            }
            i += 3;
            continue;
        }
        if b == b'\\' || b.is_ascii_control() || matches!(b, b' ' | b'#' | b'?') {
            return Err(Ambiguous);
        }
        decoded.push(b);
        match b.is_ascii() {
            true => out.push(char::from(b)),
            // Raw UTF-8 is sent in its escaped form, so the judged and the sent path agree.
            false => push_escape(&mut out, b),
        }
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(Ambiguous);
    }
    Ok(out)
}

/// Refuses `%25` escapes (an encoded `%`) whose following hex pair would decode to something
/// that changes the path's structure for an upstream that decodes twice: `%252e%252e` is
/// `..` there. Double-encoded letters, digits and the like stay (they can only fail a prefix).
fn refuse_double_encoding(canonical: &str) -> Result<(), Ambiguous> {
    let bytes = canonical.as_bytes();
    for (i, window) in bytes.windows(3).enumerate() {
        if window != b"%25" {
            continue;
        }
        let Some(value) = hex_pair(bytes.get(i + 3..i + 5)) else {
            continue;
        };
        let structural = matches!(value, b'.' | b'/' | b'\\' | b';' | b'%' | b'?' | b'#');
        if structural || !(0x20..0x7f).contains(&value) {
            return Err(Ambiguous);
        }
    }
    Ok(())
}

/// Dot-segment removal on `/`-separated segments; a `..` at the root is refused, and so is a
/// dot segment carrying `;` parameters (`..;`), which servers such as Tomcat read as `..`.
fn remove_dot_segments(canonical: &str) -> Result<String, Ambiguous> {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = canonical[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        let head = without_params(seg);
        if head != *seg && (head == "." || head == "..") {
            return Err(Ambiguous);
        }
        match *seg {
            "." => {
                if n == last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(Ambiguous);
                }
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// A segment without its `;` parameters (a literal `;` or an encoded `%3B`).
fn without_params(seg: &str) -> &str {
    let cut = [seg.find(';'), seg.find("%3B")].into_iter().flatten().min();
    cut.map_or(seg, |at| &seg[..at])
}

fn hex_pair(hex: Option<&[u8]>) -> Option<u8> {
    let text = std::str::from_utf8(hex?).ok()?;
    u8::from_str_radix(text, 16).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_escape(out: &mut String, b: u8) {
    use std::fmt::Write as _;
    let _ = write!(out, "%{b:02X}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::bundle_config::{AuthConfig, AuthScheme};

    fn policy() -> Policy {
        let mut secrets = SecretsFile::default();
        secrets.tokens.insert("GH".into(), "ghp_secret".into());
        let routes = vec![
            RouteConfig {
                host: "api.github.com".into(),
                path_allowlist: vec!["/repos/alice/".into()],
                auth: Some(AuthConfig {
                    scheme: AuthScheme::Bearer,
                    token_slot: "GH".into(),
                }),
            },
            RouteConfig {
                host: "*.linear.app".into(),
                path_allowlist: vec![],
                auth: None,
            },
            RouteConfig {
                host: "internal.test:8443".into(),
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
            assert_eq!(normalize_path(path), Err(Ambiguous), "{path}");
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
    fn bad_routes_name_the_route() {
        let secrets = SecretsFile::default();
        let cases = [
            (
                "10.0.0.1",
                vec![],
                "route 0 host \"10.0.0.1\": an IP address is not a route; name the host",
            ),
            (
                "*.com",
                vec![],
                "route 0 host \"*.com\": a wildcard needs at least two labels after `*.`",
            ),
            (
                "a b.com",
                vec![],
                "route 0 host \"a b.com\": use letters, digits and `-` in dot-separated labels (a `*.` prefix for a wildcard)",
            ),
            (
                "a.com",
                vec!["x/".to_owned()],
                "route 0 (a.com) path_allowlist entry \"x/\": a path prefix must start with `/`",
            ),
        ];
        for (host, paths, want) in cases {
            let route = RouteConfig {
                host: host.into(),
                path_allowlist: paths,
                auth: None,
            };
            let err = Policy::from_config(&[route], &secrets)
                .unwrap_err()
                .to_string();
            assert_eq!(err, want);
        }
    }
}
