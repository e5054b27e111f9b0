//! `claude-bottle start <agent>`: load, plan, confirm, resolve secrets, render the bundle's
//! files, build images, run the bottle, and (unless `-d`) connect the terminal to the agent
//! and tear everything down when it exits.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;

use crate::backend::Backend;
use crate::backend::docker::DockerBackend;
use crate::bottle::{self, Launch, ca, images, provision, worktree};
use crate::cli::StartArgs;
use crate::facts;
use crate::manifest::{self, AgentCommand, Dirs, Loaded};
use crate::plan::{self, Plan, Runtime};
use crate::render::bottle_files;
use crate::render::bundle_config::{Egress, token_routes};
use crate::render::plan_text::plan_text;
use crate::secrets::{self, HostEnv, Secret};
use crate::state;

/// Overrides whether the agent image installs Claude Code (`0` or `1`).
pub(crate) const INSTALL_CLAUDE_ENV: &str = "CLAUDE_BOTTLE_INSTALL_CLAUDE";

pub(crate) fn run(args: &StartArgs, dirs: &Dirs, host: &dyn HostEnv) -> anyhow::Result<u8> {
    let loaded = manifest::load(dirs, &args.agent)?;
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
    if !args.yes && !confirm(host)? {
        println!("not started");
        return Ok(0);
    }
    if !facts.missing_paths.is_empty() {
        let list: Vec<&str> = facts.missing_paths.iter().map(String::as_str).collect();
        anyhow::bail!(
            "the bottle needs host files that do not exist: {} (skills are copied from ~/.claude/skills/<name>; git IdentityFile keys and egress.extra_ca are copied into the bundle)",
            list.join(", ")
        );
    }
    let env = secrets::resolve_env(&loaded.bottle, host)?;
    let tokens = secrets::resolve_tokens(&token_routes(&plan), host)?;
    eprintln!(
        "resolved {} env values and {} route tokens",
        env.vars.len(),
        tokens.len()
    );
    let bundle_bin = images::find_bundle_bin()?;
    let files = bottle_files(&plan, Egress::Direct, &tokens)?;
    let runtime = match facts.runtime {
        Runtime::Gvisor => Some("runsc".to_owned()),
        Runtime::Runc | Runtime::Unknown(_) => None,
    };
    let inputs = HostInputs::read(&loaded, &plan, &facts.home, args.cwd.as_deref())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let backend = DockerBackend::connect().await?;
        let ctx = Ctx {
            backend: &backend,
            dirs,
            loaded: &loaded,
            plan: &plan,
        };
        start_bottle(
            &ctx,
            &files,
            env.vars,
            &inputs,
            bundle_bin,
            runtime,
            args.detach,
        )
        .await
    });
    // Reading the terminal blocks a thread the runtime cannot join: do not wait for it.
    rt.shutdown_background();
    result
}

struct Ctx<'a> {
    backend: &'a DockerBackend,
    dirs: &'a Dirs,
    loaded: &'a Loaded,
    plan: &'a Plan,
}

/// Host files the bottle copies in, read before anything is created.
struct HostInputs {
    extra_ca: Option<Vec<u8>>,
    git_keys: Vec<(String, Secret)>,
    skills: Vec<(String, Vec<crate::backend::ContextFile>)>,
    work_tree: Vec<crate::backend::ContextFile>,
}

impl HostInputs {
    fn read(
        loaded: &Loaded,
        plan: &Plan,
        home: &Path,
        work_tree: Option<&Path>,
    ) -> anyhow::Result<HostInputs> {
        let extra_ca = match &plan.extra_ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("egress.extra_ca {path}"))?)
            }
            None => None,
        };
        let mut git_keys = Vec::new();
        for remote in &loaded.bottle.git {
            let path = plan::expand_home(&remote.identity_file, home);
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("git remote `{}`: IdentityFile {path}", remote.name))?;
            git_keys.push((remote.name.clone(), Secret::new(key)));
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

async fn start_bottle(
    ctx: &Ctx<'_>,
    files: &crate::render::BottleFiles,
    env: Vec<(String, Secret)>,
    inputs: &HostInputs,
    bundle_bin: std::path::PathBuf,
    runtime: Option<String>,
    detach: bool,
) -> anyhow::Result<u8> {
    let backend = ctx.backend;
    let identity = ctx.plan.identity.clone();
    let mut progress = |line: &str| eprintln!("  {line}");

    let command = &ctx.loaded.agent.command;
    let install_claude = match std::env::var(INSTALL_CLAUDE_ENV).as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => *command == AgentCommand::Claude,
    };
    let image_inputs = images::ImageInputs {
        base_image: images::choose_base_image(backend).await?,
        bundle_bin,
        install_claude,
        agent_dockerfile: images::AGENT_DOCKERFILE.to_owned(),
    };
    eprintln!("images (base {}):", image_inputs.base_image);
    let built = images::ensure(backend, &image_inputs, &mut progress).await?;

    let ca = ca::mint(&identity).context("cannot mint the bottle's CA")?;
    let provision_inputs = provision::Inputs {
        ca_cert_pem: &ca.cert_pem,
        ca_key_pem: &ca.key_pem,
        config_json: &files.config_json,
        secrets_json: &files.secrets_json,
        pipelock_yaml: files.pipelock_yaml.as_deref(),
        extra_ca_pem: inputs.extra_ca.as_deref(),
        git_keys: inputs.git_keys.clone(),
        git_remotes: ctx
            .loaded
            .bottle
            .git
            .iter()
            .map(|g| (g.name.clone(), g.upstream.clone()))
            .collect(),
        env,
        prompt: &ctx.loaded.agent.prompt,
        supervise: ctx.plan.supervise,
        relay_bin: &built.bundle_bin,
        skills: inputs.skills.clone(),
        work_tree: inputs.work_tree.clone(),
    };
    let launch = Launch {
        identity: identity.clone(),
        home: ctx.dirs.root.display().to_string(),
        agent_image: built.agent.clone(),
        bundle_image: built.bundle.clone(),
        bundle_files: provision::bundle_files(&provision_inputs),
        agent_files: provision::agent_files(&provision_inputs),
        agent_cmd: provision::agent_cmd(command),
        runtime,
        tty: true,
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
    };
    state::save(&ctx.dirs.root, &meta)?;

    eprintln!("starting bottle {identity}:");
    let launched =
        bottle::unless_interrupted(bottle::launch(backend, &launch, &mut progress)).await;
    let running = match launched {
        Ok(Some(Ok(running))) => running,
        Ok(Some(Err(e))) => {
            state::remove(&ctx.dirs.root, &identity)?;
            return Err(e);
        }
        Ok(None) | Err(_) => {
            eprintln!("interrupted: removing bottle {identity}");
            remove_bottle(backend, &ctx.dirs.root, &identity).await?;
            anyhow::bail!("start was interrupted; nothing of bottle {identity} is left");
        }
    };

    if detach {
        println!("bottle {identity} is running");
        println!("  claude-bottle attach {identity}      connect to the agent");
        println!("  claude-bottle exec {identity} -- CMD run a command in the agent");
        println!("  claude-bottle stop {identity}        remove it");
        return Ok(0);
    }

    eprintln!("attached to {identity} (the bottle is removed when the agent exits)");
    let code = {
        let _raw = crate::tty::RawMode::enable()?;
        let attached =
            bottle::unless_interrupted(backend.attach(&running.agent, crate::tty::attach_io()))
                .await;
        match attached {
            Ok(Some(Ok(code))) => code,
            Ok(Some(Err(e))) => {
                eprintln!("lost the agent's terminal: {e}");
                1
            }
            Ok(None) | Err(_) => {
                eprintln!("\r\nstopping bottle {identity}");
                130
            }
        }
    };
    remove_bottle(backend, &ctx.dirs.root, &identity).await?;
    eprintln!("bottle {identity} removed (agent exit code {code})");
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Removes every object of a bottle and its state; an error lists what is left.
pub(crate) async fn remove_bottle<B: Backend>(
    backend: &B,
    root: &Path,
    identity: &str,
) -> anyhow::Result<()> {
    let left = bottle::teardown(backend, identity).await?;
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "could not remove every object of {identity}: {}; run `claude-bottle cleanup`",
            list.join("; ")
        );
    }
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
