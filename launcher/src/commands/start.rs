//! `claude-bottle start <agent>`: load, plan, confirm, resolve secrets, render the bundle's
//! files, build images, run the bottle, and (unless `-d`) connect the terminal to the agent
//! and tear everything down when it exits.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use bottle_contract::bundle_config::DlpMode;
use bottle_contract::secrets::MIN_SECRET_LEN;

use crate::backend::docker::DockerBackend;
use crate::backend::{Attached, Backend};
use crate::bottle::timing::StepClock;
use crate::bottle::{self, Launch, ca, claude_bin, images, pipelock_bin, provision, worktree};
use crate::cli::StartArgs;
use crate::facts;
use crate::hostfile::{self, Contents};
use crate::manifest::values::{Layout, escape_controls};
use crate::manifest::{self, Dirs, Loaded};
use crate::plan::{self, Plan, Runtime};
use crate::render::bottle_files;
use crate::render::bundle_config::token_routes;
use crate::render::plan_text::plan_text;
use crate::secrets::{self, HostEnv, Secret};
use crate::state;

pub(crate) fn run(args: &StartArgs, dirs: &Dirs, host: &dyn HostEnv) -> anyhow::Result<u8> {
    let mut clock = StepClock::new("read the manifest");
    let loaded = manifest::load(dirs, &args.agent)?;
    clock.next("gather host facts, plan");
    let facts = facts::gather(&loaded, host)?;
    let plan = plan::build(&loaded, &facts);
    if args.json {
        // Warnings are part of the JSON; stderr stays quiet so the output can be piped.
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(0);
    }
    print!("{}", plan_text(&plan));
    if args.dry_run {
        return Ok(0);
    }
    refusals(&plan, &facts)?;
    if !args.yes && !confirm(host)? {
        println!("not started");
        return Ok(0);
    }
    clock.next("resolve secrets, read host files");
    let prepared = Prepared::new(&loaded, &plan, &facts, host, args.cwd.as_deref())?;
    clock.next("connect to Docker");
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        clock.finish();
        let ctx = Ctx {
            backend: &backend,
            dirs,
            loaded: &loaded,
            plan: &plan,
        };
        start_bottle(&ctx, prepared, Origin::Fresh, args.detach).await
    })
}

/// What a bottle is started with: the manifest, its plan, and where the launcher looks.
pub(crate) struct Ctx<'a, B: Backend> {
    pub(crate) backend: &'a B,
    pub(crate) dirs: &'a Dirs,
    pub(crate) loaded: &'a Loaded,
    pub(crate) plan: &'a Plan,
}

/// Where the bottle's agent image and work tree come from.
pub(crate) enum Origin {
    /// `start`: the shipped agent Dockerfile; the `--cwd` work tree (in [`HostInputs`]).
    Fresh,
    /// `resume`: a suspended bottle's approved Dockerfile and saved work tree.
    Resume {
        dockerfile: String,
        /// Where it was saved, for messages.
        dockerfile_path: std::path::PathBuf,
        work_tar: Vec<u8>,
    },
}

/// What makes a start fail whatever the operator answers, known from the plan alone: host files
/// that do not exist, route tokens (the Claude credential among them) whose variable is unset.
/// Checked before the operator is asked to confirm, and again by [`Prepared::new`].
pub(crate) fn refusals(plan: &Plan, facts: &plan::HostFacts) -> anyhow::Result<()> {
    if !facts.missing_paths.is_empty() {
        let list: Vec<&str> = facts.missing_paths.iter().map(String::as_str).collect();
        anyhow::bail!(
            "the bottle needs host files that do not exist: {} (skills are copied from ~/.claude/skills/<name>; git IdentityFile keys and egress.extra_ca are copied into the bundle)",
            list.join(", ")
        );
    }
    if let plan::EgressPlan::Unusable { why } = &plan.egress {
        anyhow::bail!(
            "{why}; fix it, or unset {} to run the bottle without pipelock",
            crate::bottle::pipelock_bin::PIPELOCK_BIN_ENV
        );
    }
    for route in &plan.routes {
        if let Some(auth) = route.auth.as_ref().filter(|a| !a.token_set) {
            return Err(secrets::SecretError::TokenUnset {
                host: route.host.to_string(),
                var: auth.token.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// Everything read and resolved before any object is created: secrets, the bundle's files,
/// host files to copy in. A failure here leaves nothing to clean up.
pub(crate) struct Prepared {
    files: crate::render::BottleFiles,
    env: Vec<(String, Secret)>,
    inputs: HostInputs,
    bundle_bin: std::path::PathBuf,
    runtime: Option<String>,
}

impl Prepared {
    /// Resolves the bottle's env and route tokens (prompting on the terminal when the manifest
    /// says so), renders the bundle's files and reads the host files; `work_tree` is `--cwd`.
    pub(crate) fn new(
        loaded: &Loaded,
        plan: &Plan,
        facts: &plan::HostFacts,
        host: &dyn HostEnv,
        work_tree: Option<&Path>,
    ) -> anyhow::Result<Prepared> {
        refusals(plan, facts)?;
        // Host files first: a bad one fails before the operator is asked for any secret.
        let inputs = HostInputs::read(loaded, &facts.home, work_tree)?;
        let env = secrets::resolve_env(&loaded.bottle, host)?;
        let tokens = secrets::resolve_tokens(&token_routes(plan), host)?;
        eprintln!(
            "resolved {} and {}",
            super::count(env.vars.len(), "env value"),
            super::count(tokens.len(), "route token")
        );
        let bundle_bin = images::find_bundle_bin()?;
        let secret_env = env.secret_values();
        for (name, value) in secret_env.iter().chain(&tokens) {
            if plan.dlp != DlpMode::Off && value.expose().len() < MIN_SECRET_LEN {
                eprintln!(
                    "warning: {name} is shorter than {MIN_SECRET_LEN} characters: the egress proxy does not look for it in requests (too short to tell from other data)"
                );
            }
        }
        let files = bottle_files(plan, &tokens, &secret_env)?;
        let runtime = match facts.runtime {
            Runtime::Gvisor => Some("runsc".to_owned()),
            Runtime::Runc | Runtime::Unknown(_) => None,
        };
        Ok(Prepared {
            files,
            env: env.vars,
            inputs,
            bundle_bin,
            runtime,
        })
    }
}
/// Host files the bottle copies in, read before anything is created.
struct HostInputs {
    extra_ca: Option<Vec<u8>>,
    git_keys: Vec<(String, Secret)>,
    skills: Vec<(String, Vec<crate::backend::ContextFile>)>,
    work_tree: Vec<crate::backend::ContextFile>,
}

impl HostInputs {
    fn read(loaded: &Loaded, home: &Path, work_tree: Option<&Path>) -> anyhow::Result<HostInputs> {
        // Bounded, regular files only, contents checked: see `hostfile`.
        let mut extra_ca = None;
        let mut git_keys = Vec::new();
        for named in hostfile::named_files(loaded, home) {
            match named.read()? {
                Contents::CaBundle(pem) => extra_ca = Some(pem),
                Contents::Key(remote, key) => {
                    let name = loaded.bottle.git.get(remote).map(|g| g.name.clone());
                    git_keys.push((name.unwrap_or_default(), key));
                }
            }
        }
        let mut skills = Vec::new();
        for skill in &loaded.agent.skills {
            let dir = home.join(plan::SKILLS_DIR).join(skill);
            let tree = worktree::read(&dir).with_context(|| format!("skill `{skill}`"))?;
            skills.push((skill.clone(), tree.files));
        }
        let work_tree = match work_tree {
            Some(dir) => {
                let tree = worktree::read(dir)?;
                println!(
                    "copying the work tree {}: {} entries, {:.1} MB{}",
                    dir.display(),
                    tree.files.len(),
                    tree.bytes as f64 / 1e6,
                    match tree.skipped_links {
                        0 => String::new(),
                        n => format!(" ({n} symbolic links skipped)"),
                    }
                );
                tree.files
            }
            None => Vec::new(),
        };
        Ok(HostInputs {
            extra_ca,
            git_keys,
            skills,
            work_tree,
        })
    }
}

/// Builds the images, runs the bottle and, unless `detach`, connects the terminal to the agent
/// until it ends. The one path for `start` and `resume`: they differ only in [`Origin`].
pub(crate) async fn start_bottle<B: Backend>(
    ctx: &Ctx<'_, B>,
    prepared: Prepared,
    origin: Origin,
    detach: bool,
) -> anyhow::Result<u8> {
    let backend = ctx.backend;
    let root = &ctx.dirs.root;
    let identity = ctx.plan.identity.clone();
    let mut clock = StepClock::new("choose Claude Code and the base image");
    let resuming = matches!(origin, Origin::Resume { .. });
    // Build output runs the agent's Dockerfile on a resume: escaped, so a `RUN printf` of an
    // escape sequence cannot drive the operator's terminal.
    let mut progress = |line: &str| eprintln!("  {}", escape_controls(line, Layout::Line));

    let command = &ctx.loaded.agent.command;
    let claude = claude_bin::choose(claude_bin::needed(command))?;
    let (agent_dockerfile, agent_dockerfile_source, work_tar) = match origin {
        Origin::Fresh => (
            images::AGENT_DOCKERFILE.to_owned(),
            "the shipped Dockerfile.agent".to_owned(),
            None,
        ),
        Origin::Resume {
            dockerfile,
            dockerfile_path,
            work_tar,
        } => (
            dockerfile,
            dockerfile_path.display().to_string(),
            Some(work_tar),
        ),
    };
    // Checked again: the file may have changed since the plan was made.
    let pipelock = match &ctx.plan.egress {
        plan::EgressPlan::Pipelock { binary, .. } => Some(pipelock_bin::check(Path::new(binary))?),
        plan::EgressPlan::Direct | plan::EgressPlan::Unusable { .. } => None,
    };
    let image_inputs = images::ImageInputs {
        base_image: images::choose_base_image(backend).await?,
        bundle_bin: prepared.bundle_bin.clone(),
        pipelock: pipelock.clone(),
        claude,
        agent_dockerfile: agent_dockerfile.clone(),
        agent_dockerfile_source,
    };
    eprintln!("images (base {}):", image_inputs.base_image);
    eprintln!("  {}", image_inputs.claude.describe());
    if let Some(bin) = &pipelock {
        eprintln!("  pipelock: {} from {}", bin.version, bin.path.display());
    }
    clock.next("image tags (building what is missing)");
    let built = images::ensure(backend, &image_inputs, &mut progress).await?;

    clock.next("mint the CA, save the state");
    let ca = ca::mint(&identity).context("cannot mint the bottle's CA")?;
    let pipelock_ca = match pipelock {
        Some(_) => Some(ca::mint_pipelock(&identity).context("cannot mint pipelock's CA")?),
        None => None,
    };
    let files = &prepared.files;
    let inputs = &prepared.inputs;
    let provision_inputs = provision::Inputs {
        ca_cert_pem: &ca.cert_pem,
        ca_key_pem: &ca.key_pem,
        config_json: &files.config_json,
        secrets_json: &files.secrets_json,
        pipelock_yaml: files.pipelock_yaml.as_deref(),
        pipelock_ca: pipelock_ca.as_ref(),
        extra_ca_pem: inputs.extra_ca.as_deref(),
        git_keys: inputs.git_keys.clone(),
        git_remotes: ctx
            .loaded
            .bottle
            .git
            .iter()
            .map(|g| (g.name.clone(), g.upstream.clone()))
            .collect(),
        env: prepared.env,
        prompt: &ctx.loaded.agent.prompt,
        supervise: ctx.plan.supervise,
        permission_mode: &ctx.loaded.agent.permission_mode,
        agent_dockerfile: &agent_dockerfile,
        skills: inputs.skills.clone(),
        work_tree: inputs.work_tree.clone(),
    };
    let meta = state::Metadata {
        identity: identity.clone(),
        agent: ctx.loaded.agent.name.clone(),
        bottle: ctx.loaded.bottle.name.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        agent_container: bottle::object_name(&identity, "agent"),
        bundle_container: bottle::object_name(&identity, "bundle"),
        agent_image: built.agent.clone(),
        bundle_image: built.bundle.clone(),
        detached: detach,
        launcher_pid: std::process::id(),
        project: Some(ctx.dirs.cwd.clone()),
        // A resume stays suspended until it has succeeded: a failure keeps the saved state.
        suspended: resuming,
        // Until the agent's command is released; `cleanup` removes a bottle whose launcher
        // died before that.
        ready: false,
    };
    state::save(root, &meta)?;
    let bundle_binds = if ctx.plan.supervise {
        provision::bundle_binds(&state::create_queue(root, &identity)?)
    } else {
        Vec::new()
    };
    let launch = Launch {
        identity: identity.clone(),
        home: root.display().to_string(),
        agent_image: built.agent.clone(),
        bundle_image: built.bundle.clone(),
        bundle_files: provision::bundle_files(&provision_inputs),
        bundle_binds,
        agent_files: provision::agent_files(&provision_inputs),
        work_tar,
        agent_cmd: provision::agent_cmd(command),
        runtime: prepared.runtime,
        tty: true,
        agent_limits: ctx.plan.limits.agent.to_backend(),
        bundle_limits: ctx.plan.limits.bundle.to_backend(),
    };

    clock.finish();
    eprintln!(
        "{} bottle {identity}:",
        if resuming { "resuming" } else { "starting" }
    );
    let launched =
        bottle::unless_interrupted(bottle::launch(backend, &launch, &mut progress)).await;
    let running = match launched {
        Ok(Some(Ok(running))) => running,
        Ok(Some(Err(e))) => {
            // `launch` removed what it created.
            if resuming {
                eprintln!("the saved state is kept: `claude-bottle resume {identity}` retries");
            } else {
                state::remove(root, &identity)?;
            }
            return Err(e);
        }
        Ok(None) | Err(_) => {
            eprintln!("interrupted: removing bottle {identity}");
            if resuming {
                remove_objects(backend, &identity).await?;
                anyhow::bail!(
                    "resume was interrupted; the saved state of {identity} is kept (`claude-bottle resume {identity}` retries)"
                );
            }
            remove_bottle(backend, root, &identity).await?;
            anyhow::bail!("start was interrupted; nothing of bottle {identity} is left");
        }
    };
    // The agent runs its command now: the start is finished (and a resume no longer
    // suspended). Recorded before anything says the bottle is running.
    state::mark_ready(root, &meta, resuming)?;
    if resuming {
        // The live work tree is in the agent now; a stale copy could only mislead.
        let _ = std::fs::remove_file(state::dir(root, &identity).join(state::WORK_TAR));
    }

    if detach {
        println!("bottle {identity} is running");
        println!("  claude-bottle attach {identity}      connect to the agent");
        println!("  claude-bottle exec {identity} -- CMD run a command in the agent");
        println!("  claude-bottle stop {identity}        remove it");
        return Ok(0);
    }

    eprintln!(
        "attached to {identity} (the bottle is removed when the agent exits; {} detaches)",
        crate::tty::DETACH_KEYS
    );
    let code = {
        let _raw = crate::tty::RawMode::enable()?;
        let attached =
            bottle::unless_interrupted(backend.attach(&running.agent, crate::tty::attach_io()))
                .await;
        match attached {
            Ok(Some(Ok(Attached::Exited(code)))) => code,
            Ok(Some(Ok(Attached::Detached))) => {
                drop(_raw);
                // No launcher watches it now: like a bottle started with -d.
                state::mark_detached(root, &identity)?;
                eprintln!("\r\n{}", super::attach::detached_hint(&identity));
                return Ok(0);
            }
            Ok(Some(Err(e))) => {
                if !state::is_suspended(root, &identity) {
                    eprintln!("lost the agent's terminal: {e}");
                }
                1
            }
            Ok(None) | Err(_) => {
                eprintln!("\r\nstopping bottle {identity}");
                130
            }
        }
    };
    // An approved capability-block suspended the bottle under us: its state is for `resume`.
    if state::is_suspended(root, &identity) {
        eprintln!("{}", suspended_hint(&identity));
        return Ok(0);
    }
    remove_bottle(backend, root, &identity).await?;
    eprintln!("bottle {identity} removed (agent exit code {code})");
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// What an attached launcher prints when its bottle was suspended.
pub(crate) fn suspended_hint(identity: &str) -> String {
    format!(
        "bottle {identity} was suspended by an approved capability request; its work tree and new Dockerfile are saved.\n  claude-bottle resume {identity}      rebuild the agent image and continue"
    )
}

/// Removes every object of a bottle (not its state); an error lists what is left.
async fn remove_objects<B: Backend>(backend: &B, identity: &str) -> anyhow::Result<()> {
    let left = bottle::teardown(backend, identity).await?;
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "could not remove every object of {identity}: {}; run `claude-bottle cleanup`",
            list.join("; ")
        );
    }
    Ok(())
}

/// Removes every object of a bottle, its state and its queue; an error lists what is left.
pub(crate) async fn remove_bottle<B: Backend>(
    backend: &B,
    root: &Path,
    identity: &str,
) -> anyhow::Result<()> {
    remove_objects(backend, identity).await?;
    state::remove(root, identity)
}

/// Asks y/N on the terminal. Without a terminal there is no one to ask: that is an error
/// pointing at `-y`.
pub(crate) fn confirm(host: &dyn HostEnv) -> anyhow::Result<bool> {
    confirm_with(host, "Start this bottle?")
}

/// Asks `question [y/N]` on the terminal.
pub(crate) fn confirm_with(host: &dyn HostEnv, question: &str) -> anyhow::Result<bool> {
    if !host.is_tty() {
        anyhow::bail!(
            "stdin is not a terminal, so this cannot be confirmed; pass -y to go ahead without asking"
        );
    }
    print!("{question} [y/N] ");
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
