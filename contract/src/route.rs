//! The route vocabulary: an egress route's host, path prefixes, credential header, token name
//! and scheme, as types that cannot be built or deserialized invalid.
//!
//! Every place a route is written or read (the manifest, the plan, the bundle config, the
//! proxy's policy, the MCP `egress-block` tool, the host's approval, `routes.json`) parses
//! through these, so one rule decides what a route may be: a value one place accepts, every
//! place accepts. Each parse error is a sentence saying what to write instead; the caller adds
//! where the value came from (`FILE:LINE: key`, an MCP field, a config route index).

mod normalize;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use normalize::{AMBIGUOUS_FORMS, Ambiguous, normalize_path};

use crate::text::{Layout, escape_controls};

/// Why a route value is refused: a sentence that quotes the value (control characters
/// escaped) and says what to write instead. Never holds a token value: tokens are not parsed
/// here, only their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError(String);

impl RouteError {
    fn new(message: impl Into<String>) -> RouteError {
        RouteError(message.into())
    }

    /// The sentence.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouteError {}

/// `text` quoted for a message: control and invisible characters escaped.
fn shown(text: &str) -> String {
    escape_controls(text, Layout::Line)
}

/// Implements `Display`, `as_str`, string serde (validating on the way in) for a newtype.
macro_rules! string_type {
    ($name:ident) => {
        impl $name {
            /// The value as written in configs and manifests.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so width and alignment apply as they do to a `str`.
                f.pad(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = RouteError;
            fn try_from(text: String) -> Result<$name, RouteError> {
                $name::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        // Hash and Eq are the inner string's, so borrowing as `str` is sound (and lets a list
        // of them be `join`ed).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = RouteError;
            fn from_str(text: &str) -> Result<$name, RouteError> {
                $name::parse(text)
            }
        }
    };
}

/// A route's host: a lowercase DNS name of at least two labels, or `*.` and such a name (a
/// one-label wildcard: `*.example.com` matches `api.example.com`, not `example.com` nor
/// `a.b.example.com`). Never an IP address, a port, a scheme or a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouteHost(String);

string_type!(RouteHost);

impl RouteHost {
    /// Validates `text`.
    pub fn parse(text: &str) -> Result<RouteHost, RouteError> {
        let quoted = shown(text);
        if text.is_empty() {
            return Err(RouteError::new(
                "is empty; write a host name such as api.github.com",
            ));
        }
        if text.contains("://") || text.contains('/') {
            return Err(RouteError::new(format!(
                "`{quoted}` must be a bare host name such as api.github.com (no scheme or path)"
            )));
        }
        let ip = || {
            RouteError::new(format!(
                "`{quoted}` is an IP address; routes name hosts (the proxy refuses IP literals)"
            ))
        };
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Err(ip());
        }
        if text.contains(':') {
            return Err(RouteError::new(format!(
                "`{quoted}` must be a bare host name without a port (routes are for HTTPS on 443)"
            )));
        }
        if is_ip_literal(text) {
            return Err(ip());
        }
        if !text.is_ascii() {
            return Err(RouteError::new(format!(
                "`{quoted}` is not ASCII; write an international name in its `xn--` form"
            )));
        }
        if text != text.to_ascii_lowercase() {
            return Err(RouteError::new(format!(
                "`{quoted}` must be lowercase: write `{}`",
                shown(&text.to_ascii_lowercase())
            )));
        }
        let name = text.strip_prefix("*.").unwrap_or(text);
        let labels: Vec<&str> = name.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        };
        if name.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(RouteError::new(format!(
                "`{quoted}` is not a valid host name (labels of a-z, 0-9 and `-`, at least two, optionally starting with `*.`)"
            )));
        }
        Ok(RouteHost(text.to_owned()))
    }

    /// Whether this is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether a request for `host` (lowercase, no trailing dot, no port) is this route's.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => self.0 == host,
        }
    }
}

/// Whether a host (without IPv6 brackets) is an IP address rather than a name: an IPv6
/// literal, or anything a resolver's `inet_aton` reads as IPv4 (`127.1`, `2130706433`,
/// `0x7f.0.0.1`: one to four decimal, octal or `0x` hex parts).
pub fn is_ip_literal(host: &str) -> bool {
    let number = |part: &str| match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
    };
    let host = host.trim_end_matches('.');
    host.contains(':')
        || host.parse::<std::net::IpAddr>().is_ok()
        || (host.split('.').count() <= 4 && host.split('.').all(number))
}

/// Longest path prefix.
pub const MAX_PATH_PREFIX_BYTES: usize = 1024;

/// A path prefix from a route's `path_allowlist`: absolute, plain and already in the form the
/// proxy normalises request paths to, so a prefix means one thing to the person who wrote it,
/// the proxy and the upstream. The proxy allows a request whose normalised path starts with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

string_type!(PathPrefix);

impl PathPrefix {
    /// Validates `text`.
    pub fn parse(text: &str) -> Result<PathPrefix, RouteError> {
        let quoted = shown(text);
        if !text.starts_with('/') {
            return Err(RouteError::new(format!(
                "`{quoted}` must start with `/`, e.g. /repos/alice/"
            )));
        }
        if text.len() > MAX_PATH_PREFIX_BYTES {
            return Err(RouteError::new(format!(
                "is longer than {MAX_PATH_PREFIX_BYTES} bytes"
            )));
        }
        // `quoted != text`: a control, bidi override or zero-width mark would make the prefix
        // read as another one in the plan and the dashboard.
        if text.contains(['?', '#', '\\'])
            || text.chars().any(char::is_whitespace)
            || quoted != text
        {
            return Err(RouteError::new(format!(
                "`{quoted}` must be a plain path prefix: no query, fragment, backslash, whitespace, control or invisible formatting character"
            )));
        }
        // A `;` parameter does not stop a dot segment: some servers read `..;` as `..`.
        let is_dot = |seg: &str| matches!(seg.split(';').next(), Some(".." | "."));
        if text.split('/').any(is_dot) {
            return Err(RouteError::new(format!(
                "`{quoted}` contains a `.` or `..` segment"
            )));
        }
        if text.contains('%') {
            return Err(RouteError::new(format!(
                "`{quoted}` contains `%`: write the decoded path, the proxy compares decoded paths"
            )));
        }
        if normalize_path(text).is_err() {
            return Err(RouteError::new(format!(
                "`{quoted}` is ambiguous (it has {AMBIGUOUS_FORMS})"
            )));
        }
        Ok(PathPrefix(text.to_owned()))
    }

    /// Whether `path`, normalised with [`normalize_path`], is inside this prefix.
    pub fn covers(&self, normalized_path: &str) -> bool {
        // The prefix is compared in the normalised form too (raw non-ASCII becomes escapes).
        match normalize_path(&self.0) {
            Ok(prefix) => normalized_path.starts_with(&prefix),
            Err(Ambiguous) => false,
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy ones: the proxy never forwards them.
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that can never carry a credential: every [`HOP_BY_HOP_HEADERS`] one (the proxy
/// strips them), framing, and headers an upstream reads as something other than this route's
/// credential.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Longest header name.
pub const MAX_HEADER_NAME_BYTES: usize = 64;

/// The header of a `scheme: header` credential: an HTTP token (RFC 9110), lowercase, that is
/// not in [`RESERVED_HEADERS`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderName(String);

string_type!(HeaderName);

impl HeaderName {
    /// Validates `text`; any case is accepted and kept lowercase (header names are
    /// case-insensitive).
    pub fn parse(text: &str) -> Result<HeaderName, RouteError> {
        let quoted = shown(text);
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if text.is_empty() {
            return Err(RouteError::new(
                "is empty; name the header the API expects, e.g. x-api-key",
            ));
        }
        if text.len() > MAX_HEADER_NAME_BYTES || !text.chars().all(token) {
            return Err(RouteError::new(format!(
                "`{quoted}` is not an HTTP header name (letters, digits and `-`, at most {MAX_HEADER_NAME_BYTES})"
            )));
        }
        let lower = text.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(RouteError::new(format!(
                "`{quoted}` cannot carry a credential (it is framing, hop-by-hop or read as something else); use the header the API expects, such as `x-api-key`"
            )));
        }
        Ok(HeaderName(lower))
    }
}

/// Longest token name.
pub const MAX_TOKEN_REF_BYTES: usize = 128;

/// The name of a route's token: the host environment variable the launcher reads it from, and
/// the same name as its key in the bundle's secrets file. A name, never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenRef(String);

string_type!(TokenRef);

impl TokenRef {
    /// Validates `text`: `[A-Z_][A-Z0-9_]*`, at most [`MAX_TOKEN_REF_BYTES`]. Upper case
    /// only: a lower-case word is as likely a token pasted by mistake (`ghp_…`), which would
    /// then be quoted back in "variable … is not set" messages.
    pub fn parse(text: &str) -> Result<TokenRef, RouteError> {
        let mut bytes = text.bytes();
        let ok = text.len() <= MAX_TOKEN_REF_BYTES
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            // The value may be a token pasted by mistake: it is not quoted back.
            return Err(RouteError::new(
                "must name a host environment variable in upper case (A-Z, 0-9, `_`, e.g. GH_PAT), not hold the token itself",
            ));
        }
        Ok(TokenRef(text.to_owned()))
    }
}

impl TokenRef {
    /// The host variable holding the Claude credential ([`crate::wire::CLAUDE_TOKEN_ENV`]),
    /// the token of the built-in `api.anthropic.com` route.
    pub fn claude() -> TokenRef {
        TokenRef(crate::wire::CLAUDE_TOKEN_ENV.to_owned())
    }
}

/// How the bundle puts a route's token on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: token <token>` (GitHub/Gitea style).
    Token,
    /// `Authorization: Basic <base64(token)>`, the token being `user:password`.
    Basic,
    /// `<name>: <token>` in a custom header, e.g. `x-api-key`.
    Header { name: HeaderName },
}

/// The schemes in their one documented spelling, as manifests and the MCP tool write them.
pub const AUTH_SCHEMES: &[&str] = &["Bearer", "token", "Basic", "header"];

impl AuthScheme {
    /// The scheme's documented name: `Bearer`, `token`, `Basic` or `header`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthScheme::Bearer => "Bearer",
            AuthScheme::Token => "token",
            AuthScheme::Basic => "Basic",
            AuthScheme::Header { .. } => "header",
        }
    }

    /// The header a `header` scheme sends the token in.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            AuthScheme::Header { name } => Some(name),
            _ => None,
        }
    }

    /// A scheme as written: its name in the documented spelling, and the header name, which
    /// only `header` takes (and needs). The error says which of the two is wrong with
    /// [`SchemeError`].
    pub fn from_parts(scheme: &str, header: Option<&str>) -> Result<AuthScheme, SchemeError> {
        if let Some(exact) = AUTH_SCHEMES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(scheme) && **s != scheme)
        {
            return Err(SchemeError::Scheme(RouteError::new(format!(
                "scheme `{}` is spelled `{exact}`: write `scheme: {exact}`",
                shown(scheme)
            ))));
        }
        match (scheme, header) {
            ("Bearer", None) => Ok(AuthScheme::Bearer),
            ("token", None) => Ok(AuthScheme::Token),
            ("Basic", None) => Ok(AuthScheme::Basic),
            ("header", Some(name)) => Ok(AuthScheme::Header {
                name: HeaderName::parse(name).map_err(SchemeError::Header)?,
            }),
            ("header", None) => Err(SchemeError::MissingHeader),
            ("Bearer" | "token" | "Basic", Some(_)) => Err(SchemeError::Header(RouteError::new(
                format!("`header` is only used with `scheme: header`, not `{scheme}`"),
            ))),
            (other, _) => Err(SchemeError::Scheme(RouteError::new(format!(
                "unknown scheme `{}`; use one of Bearer, token, Basic, header",
                shown(other)
            )))),
        }
    }
}

/// What is wrong with a scheme as written, by the field to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeError {
    /// The scheme's name.
    Scheme(RouteError),
    /// The header name (bad, or given to a scheme that takes none).
    Header(RouteError),
    /// `header` without a header name.
    MissingHeader,
}

impl SchemeError {
    /// The sentence for the field.
    pub fn message(&self) -> String {
        match self {
            SchemeError::Scheme(e) | SchemeError::Header(e) => e.message().to_owned(),
            SchemeError::MissingHeader => {
                "scheme `header` needs the header's name, e.g. `header: x-api-key`".to_owned()
            }
        }
    }
}

/// A route's credential: the scheme and the name of its token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    pub scheme: AuthScheme,
    /// Written `token_slot` before schema 3; a saved `routes.json` of that time still reads.
    #[serde(alias = "token_slot")]
    pub token_ref: TokenRef,
}

/// The live route table: what `http://egress.local/routes` serves and `list-egress-routes`
/// returns (the agent reads both), and what the host's approval reads to confirm a new route is
/// live. Names only, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RouteTable {
    pub routes: Vec<RouteSummary>,
}

/// One route of a [`RouteTable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RouteSummary {
    /// Host name (`*.` for a one-label wildcard).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub host: RouteHost,
    /// A port other than the scheme's default, if the route names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<std::num::NonZeroU16>,
    /// Allowed path prefixes; empty means every path.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub path_allowlist: Vec<PathPrefix>,
    /// The injected credential's scheme (`Bearer`, `token`, `Basic`, `header`), if any; never
    /// the token or its name.
    pub auth: Option<String>,
    /// The header the credential goes in, for scheme `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub header: Option<HeaderName>,
}

impl From<&crate::bundle_config::RouteConfig> for RouteSummary {
    fn from(route: &crate::bundle_config::RouteConfig) -> RouteSummary {
        let scheme = route.auth.as_ref().map(|a| &a.scheme);
        RouteSummary {
            host: route.host.clone(),
            port: route.port,
            path_allowlist: route.path_allowlist.clone(),
            auth: scheme.map(|s| s.name().to_owned()),
            header: scheme.and_then(|s| s.header()).cloned(),
        }
    }
}

impl RouteTable {
    /// The table of a config's routes.
    pub fn of(routes: &[crate::bundle_config::RouteConfig]) -> RouteTable {
        RouteTable {
            routes: routes.iter().map(RouteSummary::from).collect(),
        }
    }

    /// Whether the table holds `host` (default port) with exactly these path prefixes.
    pub fn lists(&self, host: &RouteHost, paths: &[PathPrefix]) -> bool {
        let mut want: Vec<&PathPrefix> = paths.iter().collect();
        want.sort();
        self.routes.iter().any(|r| {
            let mut have: Vec<&PathPrefix> = r.path_allowlist.iter().collect();
            have.sort();
            r.host == *host && r.port.is_none() && have == want
        })
    }
}

/// Values every side must judge alike, for the conformance tests of each crate (the manifest,
/// the MCP tool and the proxy's config each check that they accept exactly the ones the
/// contract's types accept). Good and bad values mixed; the types decide which is which.
pub mod samples {
    pub const HOSTS: &[&str] = &[
        "api.github.com",
        "*.linear.app",
        "a-1.b.example",
        "xn--bcher-kva.example",
        "",
        "localhost",
        "*.com",
        "API.github.com",
        "api.github.com:443",
        "https://api.github.com",
        "api.github.com/x",
        "10.0.0.1",
        "127.1",
        "[::1]",
        "::1",
        "2130706433",
        "0x7f.0.0.1",
        "bücher.example",
        "-a.example",
        "a-.example",
        "a..example",
        "a b.example",
        "*.*.example.com",
        "a.example.",
    ];
    pub const PATHS: &[&str] = &[
        "/",
        "/repos/alice/",
        "/v1/messages",
        "/résumé/",
        "/a;b/",
        "",
        "repos/",
        "/a/../b",
        "/a/./b",
        "/a/..;/b",
        "/a%2fb",
        "/a%20b",
        "/%2e%2e/",
        "/a?b",
        "/a#b",
        "/a\\b",
        "/a b",
        "/a\u{202e}b",
        "/a\u{0}b",
        "/a\u{1b}[2K",
    ];
    pub const HEADERS: &[&str] = &[
        "x-api-key",
        "X-Api-Key",
        "authorization",
        "x_key",
        "",
        "te",
        "TE",
        "keep-alive",
        "upgrade",
        "trailer",
        "cookie",
        "Cookie",
        "host",
        "connection",
        "transfer-encoding",
        "content-length",
        "proxy-authorization",
        "proxy-connection",
        "x api",
        "x:y",
        "é",
    ];
    pub const TOKEN_REFS: &[&str] = &[
        "GH_PAT",
        "_X1",
        "A",
        "",
        "1X",
        "gh_pat",
        "ghp_abcdef",
        "sk-ant-abc",
        "A B",
        "A\u{1b}",
    ];
    pub const SCHEMES: &[&str] = &[
        "Bearer", "token", "Basic", "header", "bearer", "BASIC", "Token", "oauth", "",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of the shared samples each type accepts: the samples are the one table (the
    /// conformance tests of the manifest, the MCP tool and the proxy judge the same ones).
    fn accepted(samples: &[&'static str], parse: impl Fn(&str) -> bool) -> Vec<&'static str> {
        samples.iter().copied().filter(|s| parse(s)).collect()
    }

    #[test]
    fn hosts() {
        assert_eq!(
            accepted(samples::HOSTS, |h| RouteHost::parse(h).is_ok()),
            [
                "api.github.com",
                "*.linear.app",
                "a-1.b.example",
                "xn--bcher-kva.example"
            ]
        );
        let wild = RouteHost::parse("*.example.com").unwrap();
        assert!(wild.is_wildcard());
        assert!(wild.matches("api.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(!wild.matches("apiexample.com"));
        let exact = RouteHost::parse("api.example.com").unwrap();
        assert!(exact.matches("api.example.com") && !exact.matches("x.api.example.com"));
    }

    #[test]
    fn path_prefixes() {
        assert_eq!(
            accepted(samples::PATHS, |p| PathPrefix::parse(p).is_ok()),
            ["/", "/repos/alice/", "/v1/messages", "/résumé/", "/a;b/"]
        );
        let prefix = PathPrefix::parse("/r\u{e9}/").unwrap();
        assert!(prefix.covers(&normalize_path("/r%C3%A9/x").unwrap()));
        assert!(!prefix.covers(&normalize_path("/other").unwrap()));
    }

    #[test]
    fn header_names() {
        assert_eq!(
            HeaderName::parse("X-Api-Key").unwrap().as_str(),
            "x-api-key"
        );
        assert_eq!(
            accepted(samples::HEADERS, |h| HeaderName::parse(h).is_ok()),
            ["x-api-key", "X-Api-Key", "authorization", "x_key"]
        );
    }

    #[test]
    fn every_hop_by_hop_header_is_reserved() {
        for h in HOP_BY_HOP_HEADERS {
            assert!(RESERVED_HEADERS.contains(h), "{h}");
        }
    }

    #[test]
    fn token_refs_name_variables_and_never_quote_the_value() {
        for ok in ["GH_PAT", "_X1", "A"] {
            assert!(TokenRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1X",
            "gh_pat",
            "ghp_abcdef",
            "ghp_abc-def",
            "A B",
            &"A".repeat(129),
        ] {
            let err = TokenRef::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !err.message().contains(bad), "{err}");
        }
    }

    #[test]
    fn the_claude_token_name_is_a_valid_one() {
        assert_eq!(
            TokenRef::parse(crate::wire::CLAUDE_TOKEN_ENV),
            Ok(TokenRef::claude())
        );
    }

    #[test]
    fn schemes_in_their_one_spelling() {
        assert_eq!(
            AuthScheme::from_parts("Bearer", None),
            Ok(AuthScheme::Bearer)
        );
        assert_eq!(
            AuthScheme::from_parts("header", Some("X-Key"))
                .unwrap()
                .header()
                .map(HeaderName::as_str),
            Some("x-key")
        );
        let wrong = AuthScheme::from_parts("bearer", None).unwrap_err();
        assert_eq!(
            wrong.message(),
            "scheme `bearer` is spelled `Bearer`: write `scheme: Bearer`"
        );
        assert_eq!(
            AuthScheme::from_parts("header", None),
            Err(SchemeError::MissingHeader)
        );
        assert!(matches!(
            AuthScheme::from_parts("header", Some("te")),
            Err(SchemeError::Header(_))
        ));
        assert!(matches!(
            AuthScheme::from_parts("Basic", Some("x")),
            Err(SchemeError::Header(_))
        ));
        assert!(matches!(
            AuthScheme::from_parts("oauth", None),
            Err(SchemeError::Scheme(_))
        ));
    }

    #[test]
    fn nothing_invalid_deserializes() {
        assert!(serde_json::from_str::<RouteHost>("\"API.example.com\"").is_err());
        assert!(serde_json::from_str::<PathPrefix>("\"/a%2e%2e/\"").is_err());
        assert!(serde_json::from_str::<AuthScheme>(r#"{"header":{"name":"te"}}"#).is_err());
        assert!(serde_json::from_str::<TokenRef>("\"a-b\"").is_err());
        let auth: RouteAuth =
            serde_json::from_str(r#"{"scheme":{"header":{"name":"X-Key"}},"token_ref":"K"}"#)
                .unwrap();
        assert_eq!(auth.scheme.header().unwrap().as_str(), "x-key");
    }
}
