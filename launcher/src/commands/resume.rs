//! `claude-bottle resume <id>`: continue a bottle that an approved `capability-block`
//! suspended. Reads the agent's manifests again (from the project directory recorded at
//! start), resolves secrets like `start`, shows the plan, rebuilds the agent image from the
//! approved Dockerfile, and starts the bottle under the same identity with its work tree
//! restored and its approved routes re-applied. A failure keeps the saved state.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use bottle_contract::bundle_config::RouteConfig;

use super::start::{self, Ctx, Origin, Prepared};
use crate::backend::Backend;
use crate::backend::docker::DockerBackend;
use crate::cli::ResumeArgs;
use crate::facts;
use crate::manifest::{self, Dirs};
use crate::plan;
use crate::render::plan_text::plan_text;
use crate::secrets::HostEnv;
use crate::state;

/// `dirs.cwd` is replaced by the project directory the bottle was started from.
pub(crate) fn run(args: &ResumeArgs, dirs: &Dirs, host: &dyn HostEnv) -> anyhow::Result<u8> {
    let id = &args.id;
    let root = &dirs.root;
    let meta = state::load(root, id).with_context(|| {
        format!(
            "no saved state for bottle `{id}` in {}; only a bottle suspended by an approved capability request can be resumed (`claude-bottle list` shows the bottles)",
            state::dir(root, id).display()
        )
    })?;
    anyhow::ensure!(
        meta.suspended,
        "bottle `{id}` is not suspended (it is running or starting); `claude-bottle attach {id}` connects to it, `claude-bottle stop {id}` removes it"
    );
    let state_dir = state::dir(root, id);
    let dockerfile_path = state_dir.join(state::DOCKERFILE);
    let dockerfile = std::fs::read_to_string(&dockerfile_path).with_context(|| {
        format!(
            "bottle `{id}` has no saved agent Dockerfile ({}); `claude-bottle stop {id}` removes what is left",
            dockerfile_path.display()
        )
    })?;
    let work_path = state_dir.join(state::WORK_TAR);
    let work_tar = std::fs::read(&work_path).with_context(|| {
        format!(
            "bottle `{id}` has no saved work tree ({}); `claude-bottle stop {id}` removes what is left",
            work_path.display()
        )
    })?;
    let project = meta.project.clone().with_context(|| {
        format!("bottle `{id}` was started by an older launcher that did not record its project directory")
    })?;
    let dirs = Dirs {
        home: dirs.home.clone(),
        root: root.clone(),
        cwd: project,
    };
    let live_routes = approved_routes(&state_dir.join(state::ROUTES))?;

    let loaded = manifest::load(&dirs, &meta.agent)?;
    let facts = facts::gather(&loaded, host)?;
    let mut plan = plan::build(&loaded, &facts);
    plan.identity = meta.identity.clone();
    let approved_vars: BTreeSet<String> = live_routes
        .iter()
        .filter_map(|r| r.auth.as_ref().map(|a| a.token_ref.to_string()))
        .filter(|v| host.var(v).is_some_and(|value| !value.is_empty()))
        .collect();
    let plan = plan::with_approved_routes(plan, &live_routes, &approved_vars);
    let approved = plan
        .routes
        .iter()
        .filter(|r| r.origin == plan::RouteOrigin::Approved)
        .count();

    print!("{}", plan_text(&plan));
    println!(
        "  resume     agent image from {}; work tree {:.1} MB from {}; {} approved routes",
        dockerfile_path.display(),
        work_tar.len() as f64 / 1e6,
        work_path.display(),
        approved
    );
    start::refusals(&plan, &facts)?;
    if !args.yes && !start::confirm_with(host, "Resume this bottle?")? {
        println!("not resumed; the saved state is kept");
        return Ok(0);
    }
    let prepared = Prepared::new(&loaded, &plan, &facts, host, None)?;
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let left = backend.list_objects(Some(id)).await?;
        anyhow::ensure!(
            left.is_empty(),
            "bottle `{id}` still has {} Docker objects from before it was suspended; `claude-bottle cleanup` removes them (the saved state is kept), then resume again",
            left.len()
        );
        let ctx = Ctx {
            backend: &backend,
            dirs: &dirs,
            loaded: &loaded,
            plan: &plan,
        };
        let origin = Origin::Resume {
            dockerfile,
            dockerfile_path,
            work_tar,
        };
        start::start_bottle(&ctx, prepared, origin, args.detach)
            .await
            .with_context(|| {
                format!(
                    "bottle {id} was not resumed; its saved state is kept in {} (fix the cause and run `claude-bottle resume {id}` again, or `claude-bottle stop {id}` to discard it)",
                    state::dir(root, id).display()
                )
            })
    })
}

/// The routes the bottle had live when it was suspended (`state/<id>/routes.json`, written by
/// each approval: `{"identity", "updated", "routes": [...]}`, or a bare list of routes); none
/// when the file does not exist.
fn approved_routes(path: &Path) -> anyhow::Result<Vec<RouteConfig>> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Saved {
        List(Vec<RouteConfig>),
        State { routes: Vec<RouteConfig> },
    }
    let text = match std::fs::read_to_string(path) {
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

    #[test]
    fn approved_routes_are_read_when_present_and_clear_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(state::ROUTES);
        assert!(approved_routes(&path).unwrap().is_empty());
        std::fs::write(
            &path,
            r#"[{"host":"docs.rs","path_allowlist":["/x/"],"auth":null},
                {"host":"api.test","auth":{"scheme":"bearer","token_slot":"E2E_TOKEN"}}]"#,
        )
        .unwrap();
        let routes = approved_routes(&path).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].auth.as_ref().unwrap().token_ref, "E2E_TOKEN");
        // The approvals' form: the routes with who and when.
        std::fs::write(
            &path,
            r#"{"identity":"dev-abcde","updated":1,"routes":[{"host":"docs.rs","auth":null}]}"#,
        )
        .unwrap();
        assert_eq!(approved_routes(&path).unwrap()[0].host, "docs.rs");
        std::fs::write(&path, "{").unwrap();
        let err = format!("{:#}", approved_routes(&path).unwrap_err());
        assert!(
            err.contains("routes.json") && err.contains("does not hold"),
            "{err}"
        );
    }
}
