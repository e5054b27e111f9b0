//! `claude-bottle resume <id>`: continue a bottle that an approved `capability-block`
//! suspended. Reads the agent's manifests again (from the project directory recorded at
//! start), resolves secrets like `start`, shows the plan, rebuilds the agent image from the
//! approved Dockerfile, and starts the bottle under the same identity with its work tree
//! restored and its approved routes re-applied. A failure keeps the saved state.

use std::collections::BTreeSet;

use anyhow::Context;

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
    let live_routes = crate::supervise::routes::load_state(root, &meta.identity)?;

    let loaded = manifest::load(&dirs, &meta.agent)?;
    let facts = facts::gather(&loaded, host)?;
    let mut plan = plan::build(&loaded, &facts);
    plan.identity = meta.identity.clone();
    let approved_vars: BTreeSet<String> = live_routes
        .iter()
        .filter_map(|r| r.auth.as_ref().map(|a| a.token_ref.to_string()))
        .filter(|v| host.var(v).is_some_and(|value| !value.is_empty()))
        .collect();
    let mut plan = plan::with_approved_routes(plan, &live_routes, &approved_vars);
    plan.pipelock_changes = crate::state::pipelock_changes(root, &meta.identity)?;
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
    match (plan.pipelock_changes.len(), &plan.egress) {
        (0, _) => {}
        (n, plan::EgressPlan::Pipelock { .. }) => {
            println!("             {n} approved pipelock changes are applied again")
        }
        (n, _) => eprintln!(
            "warning: {n} approved pipelock changes are not applied: the bottle resumes without pipelock ({} is not set)",
            crate::bottle::pipelock_bin::PIPELOCK_BIN_ENV
        ),
    }
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
