//! `claude-bottle exec <id> -- CMD…`: run a command in a bottle's agent container, as the
//! agent, with the bottle's env; its output and exit code are passed through.

use std::io::Write;

use crate::backend::docker::DockerBackend;
use crate::backend::{Backend, ExecSpec};
use crate::bottle::{self, provision};

pub(crate) fn run(identity: &str, cmd: &[String]) -> anyhow::Result<u8> {
    anyhow::ensure!(
        !cmd.is_empty(),
        "give the command after `--`, e.g. `claude-bottle exec {identity} -- git status`"
    );
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let agent = agent_container(&backend, identity).await?;
        let mut argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                ". {} 2>/dev/null; cd {} 2>/dev/null || cd; exec \"$@\"",
                provision::ENV_FILE,
                provision::AGENT_WORKDIR
            ),
            "claude-bottle-exec".to_owned(),
        ];
        argv.extend(cmd.iter().cloned());
        let out = backend
            .exec(
                &agent,
                &ExecSpec {
                    cmd: argv,
                    user: format!("{0}:{0}", provision::AGENT_UID),
                    env: Vec::new(),
                    working_dir: None,
                },
            )
            .await?;
        std::io::stdout().write_all(&out.stdout)?;
        std::io::stderr().write_all(&out.stderr)?;
        Ok(u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1))
    })
}

/// The running agent container of `identity`, or an error saying what to do.
pub(crate) async fn agent_container<B: Backend>(
    backend: &B,
    identity: &str,
) -> anyhow::Result<String> {
    let name = bottle::object_name(identity, "agent");
    let objects = backend.list_objects(Some(identity)).await?;
    match objects.iter().find(|o| o.name == name) {
        Some(o) if o.running => Ok(o.id.clone()),
        Some(_) => anyhow::bail!(
            "bottle `{identity}`'s agent has stopped; `claude-bottle stop {identity}` removes it"
        ),
        None => {
            anyhow::bail!("no bottle `{identity}`; `claude-bottle list` shows the running ones")
        }
    }
}
