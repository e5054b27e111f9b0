//! Merging an approved egress route into a bottle's routes, and remembering the result.
//!
//! A route for a host that already has one is widened, never narrowed: the path prefixes are
//! the union of both, and an empty list (every path) on either side stays every path. The
//! proposal's `auth` replaces the route's; a proposal without `auth` keeps the route's, so an
//! agent asking for more paths cannot strip a credential the manifest granted. The token slot
//! is the `token_ref` (as the launcher names slots at start).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bottle_contract::bundle_config::RouteConfig;
use bottle_contract::route::PathPrefix;
use bottle_contract::supervise::EgressRequest;
use serde::{Deserialize, Serialize};

/// Merges `request` into `routes` (see the module comment for the rules).
pub(crate) fn merge(routes: &mut Vec<RouteConfig>, request: &EgressRequest) {
    let auth = request.auth.clone();
    match routes.iter_mut().find(|r| r.host == request.host) {
        Some(route) => {
            route.path_allowlist = union(&route.path_allowlist, &request.path_allowlist);
            if auth.is_some() {
                route.auth = auth;
            }
        }
        None => routes.push(RouteConfig {
            host: request.host.clone(),
            port: None,
            path_allowlist: request.path_allowlist.clone(),
            auth,
        }),
    }
}

/// Path prefixes allowed by either list; empty (every path) wins.
fn union(a: &[PathPrefix], b: &[PathPrefix]) -> Vec<PathPrefix> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out = a.to_vec();
    for p in b {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The routes as people read them in a diff: one line per route, never a token value (the
/// config holds slot names only).
pub(crate) fn describe(routes: &[RouteConfig]) -> String {
    let mut out = String::new();
    for r in routes {
        let paths = if r.path_allowlist.is_empty() {
            "*".to_owned()
        } else {
            r.path_allowlist.join(",")
        };
        let auth = r.auth.as_ref().map_or_else(
            || "no auth".to_owned(),
            |a| {
                format!(
                    "{} from {}",
                    super::request::scheme_name(&a.scheme),
                    a.token_ref
                )
            },
        );
        out.push_str(&format!("{} paths={paths} {auth}\n", r.host));
    }
    out
}

/// `state/<identity>/routes.json`: the bottle's live routes after the last approval.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RoutesState {
    pub(crate) identity: String,
    /// Seconds since the Unix epoch.
    pub(crate) updated: u64,
    pub(crate) routes: Vec<RouteConfig>,
}

/// Where [`RoutesState`] lives.
pub(crate) fn state_path(root: &Path, identity: &str) -> PathBuf {
    crate::state::dir(root, identity).join(crate::state::ROUTES)
}

/// Records the bottle's routes after an approval, written as the rest of the bottle's state
/// is (0600, synced, renamed into place).
pub(crate) fn save_state(
    root: &Path,
    identity: &str,
    routes: &[RouteConfig],
) -> anyhow::Result<()> {
    let state = RoutesState {
        identity: identity.to_owned(),
        updated: super::now(),
        routes: routes.to_vec(),
    };
    let text = serde_json::to_string_pretty(&state)?;
    crate::state::write_file(root, identity, crate::state::ROUTES, text.as_bytes())?;
    Ok(())
}

/// The routes a bottle had live when it was suspended (none if it never had an approval), for
/// `resume`. Also reads the plain list an earlier version wrote.
pub(crate) fn load_state(root: &Path, identity: &str) -> anyhow::Result<Vec<RouteConfig>> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Saved {
        List(Vec<RouteConfig>),
        State { routes: Vec<RouteConfig> },
    }
    let path = state_path(root, identity);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let saved: Saved = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} does not hold the bottle's routes (host, path_allowlist, auth); fix or remove it to resume without the approved routes",
            path.display()
        )
    })?;
    Ok(match saved {
        Saved::List(routes) | Saved::State { routes } => routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::route::{AuthScheme, RouteAuth};

    fn route(host: &str, paths: &[&str], slot: Option<&str>) -> RouteConfig {
        RouteConfig {
            host: host.parse().unwrap(),
            port: None,
            path_allowlist: paths.iter().map(|p| p.parse().unwrap()).collect(),
            auth: slot.map(|s| RouteAuth {
                scheme: AuthScheme::Bearer,
                token_ref: s.parse().unwrap(),
            }),
        }
    }

    fn ask(host: &str, paths: &[&str], token_ref: Option<&str>) -> EgressRequest {
        EgressRequest {
            host: host.parse().unwrap(),
            path_allowlist: paths.iter().map(|p| p.parse().unwrap()).collect(),
            auth: token_ref.map(|t| RouteAuth {
                scheme: AuthScheme::Token,
                token_ref: t.parse().unwrap(),
            }),
        }
    }

    #[test]
    fn a_new_host_is_appended() {
        let mut routes = vec![route("api.github.com", &[], Some("GH"))];
        merge(&mut routes, &ask("docs.rs", &["/crate/"], None));
        assert_eq!(
            routes,
            [
                route("api.github.com", &[], Some("GH")),
                route("docs.rs", &["/crate/"], None)
            ]
        );
    }

    #[test]
    fn the_same_host_unions_paths_and_empty_means_all() {
        let mut routes = vec![route("docs.rs", &["/a/", "/b/"], None)];
        merge(&mut routes, &ask("docs.rs", &["/b/", "/c/"], None));
        assert_eq!(routes, [route("docs.rs", &["/a/", "/b/", "/c/"], None)]);
        merge(&mut routes, &ask("docs.rs", &[], None));
        assert_eq!(routes, [route("docs.rs", &[], None)]);
        merge(&mut routes, &ask("docs.rs", &["/d/"], None));
        assert_eq!(routes, [route("docs.rs", &[], None)], "all stays all");
    }

    #[test]
    fn auth_comes_from_the_proposal_and_is_never_stripped() {
        let mut routes = vec![route("docs.rs", &["/a/"], Some("OLD"))];
        merge(&mut routes, &ask("docs.rs", &["/b/"], None));
        assert_eq!(routes[0].auth, route("x.test", &[], Some("OLD")).auth);
        merge(&mut routes, &ask("docs.rs", &[], Some("NEW_TOKEN")));
        let auth = routes[0].auth.clone().unwrap();
        assert_eq!(auth.token_ref, "NEW_TOKEN");
        assert_eq!(auth.scheme, AuthScheme::Token);
    }

    #[test]
    fn routes_state_is_written_under_the_bottles_state() {
        let root = tempfile::tempdir().unwrap();
        let routes = vec![route("docs.rs", &[], Some("SLOT"))];
        save_state(root.path(), "dev-abcde", &routes).unwrap();
        let text = std::fs::read_to_string(state_path(root.path(), "dev-abcde")).unwrap();
        let state: RoutesState = serde_json::from_str(&text).unwrap();
        assert_eq!(state.routes, routes);
        assert_eq!(describe(&routes), "docs.rs paths=* Bearer from SLOT\n");
        // It reads back, and is private to the operator like the rest of the state.
        assert_eq!(load_state(root.path(), "dev-abcde").unwrap(), routes);
        use std::os::unix::fs::PermissionsExt;
        let path = state_path(root.path(), "dev-abcde");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn approved_routes_are_read_when_present_and_clear_when_broken() {
        let root = tempfile::tempdir().unwrap();
        let (root, id) = (root.path(), "dev-abcde");
        assert!(load_state(root, id).unwrap().is_empty());
        let path = state_path(root, id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"[{"host":"docs.rs","path_allowlist":["/x/"],"auth":null},
                {"host":"api.test","auth":{"scheme":"bearer","token_slot":"E2E_TOKEN"}}]"#,
        )
        .unwrap();
        let routes = load_state(root, id).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].auth.as_ref().unwrap().token_ref, "E2E_TOKEN");
        // The approvals' form: the routes with who and when.
        std::fs::write(
            &path,
            r#"{"identity":"dev-abcde","updated":1,"routes":[{"host":"docs.rs","auth":null}]}"#,
        )
        .unwrap();
        assert_eq!(load_state(root, id).unwrap()[0].host, "docs.rs");
        std::fs::write(&path, "{").unwrap();
        let err = format!("{:#}", load_state(root, id).unwrap_err());
        assert!(
            err.contains("routes.json") && err.contains("does not hold"),
            "{err}"
        );
    }
}
