//! The manifest accepts exactly the route values the contract's types accept: the same
//! samples the MCP tool's and the proxy's conformance tests judge (`bottle_contract::route::
//! samples`), so a route that passes here can never be refused by the bundle later.

use std::path::Path;

use bottle_contract::route::{AuthScheme, HeaderName, PathPrefix, RouteHost, TokenRef, samples};

use super::BOTTLE_FILE;
use crate::manifest::validate::parse_bottle;

/// Whether a bottle with this one route parses; values are written as JSON strings, which
/// YAML reads the same (a value with a control character cannot be written in a manifest at
/// all, so it is refused either way).
fn accepts(route: &str) -> bool {
    let text = format!("---\negress:\n  routes:\n    - {route}\n---\n");
    parse_bottle(Path::new(BOTTLE_FILE), "b", &text).is_ok()
}

fn quoted(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn hosts_prefixes_headers_token_names_and_schemes_are_judged_as_the_contract_judges_them() {
    for host in samples::HOSTS {
        let want = RouteHost::parse(host).is_ok();
        assert_eq!(
            accepts(&format!("host: {}", quoted(host))),
            want,
            "host {host:?}"
        );
    }
    for path in samples::PATHS {
        let want = PathPrefix::parse(path).is_ok();
        let route = format!(
            "{{host: api.test.example, path_allowlist: [{}]}}",
            quoted(path)
        );
        assert_eq!(accepts(&route), want, "path {path:?}");
    }
    for header in samples::HEADERS {
        let want = HeaderName::parse(header).is_ok();
        let route = format!(
            "{{host: api.test.example, auth: {{scheme: header, header: {}, token_ref: K}}}}",
            quoted(header)
        );
        assert_eq!(accepts(&route), want, "header {header:?}");
    }
    for token in samples::TOKEN_REFS {
        let want = TokenRef::parse(token).is_ok();
        let route = format!(
            "{{host: api.test.example, auth: {{scheme: Bearer, token_ref: {}}}}}",
            quoted(token)
        );
        assert_eq!(accepts(&route), want, "token_ref {token:?}");
    }
    for scheme in samples::SCHEMES {
        for header in [None, Some("x-key")] {
            let want = AuthScheme::from_parts(scheme, header).is_ok();
            let header = header.map_or(String::new(), |h| format!(", header: {h}"));
            let route = format!(
                "{{host: api.test.example, auth: {{scheme: {}{header}, token_ref: K}}}}",
                quoted(scheme)
            );
            assert_eq!(accepts(&route), want, "scheme {scheme:?}{header}");
        }
    }
}
