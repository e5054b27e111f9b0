//! `claude-bottle exec [-i] [-t] <id> -- CMD…`: run a command in a bottle's agent container,
//! as the agent, with the bottle's env; its output and exit code are passed through. Like
//! `docker exec`: `-i` connects stdin, `-t` gives it a terminal (the same raw mode and
//! resizes as `attach`); both are the default when stdin and stdout are terminals. Without
//! either and without a terminal, the output is collected and printed when it ends.

use std::io::Write;

use crate::backend::docker::DockerBackend;
use crate::backend::{Attached, Backend, ExecSpec};
use crate::bottle::{self, provision};
use crate::cli::ExecArgs;

/// How the command is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Run to the end, then print what it wrote.
    Collect,
    /// Streamed to and from the terminal.
    Attached { stdin: bool, tty: bool },
}

fn mode(interactive: bool, tty: bool, terminal: bool) -> Mode {
    if !interactive && !tty && !terminal {
        return Mode::Collect;
    }
    if !interactive && !tty {
        return Mode::Attached {
            stdin: true,
            tty: true,
        };
    }
    Mode::Attached {
        stdin: interactive,
        tty,
    }
}

pub(crate) fn run(args: &ExecArgs) -> anyhow::Result<u8> {
    let identity = args.id.as_str();
    let cmd = &args.cmd;
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
        let spec = ExecSpec {
            cmd: argv,
            user: format!("{0}:{0}", provision::AGENT_UID),
            env: Vec::new(),
            working_dir: None,
        };
        let (stdin, tty) = match mode(args.interactive, args.tty, crate::tty::is_terminal()) {
            Mode::Collect => (false, false),
            Mode::Attached { stdin, tty } => (stdin, tty),
        };
        if stdin || tty {
            let _raw = if tty && stdin {
                Some(crate::tty::RawMode::enable()?)
            } else {
                None
            };
            let ended = backend
                .exec_attached(&agent, &spec, tty, crate::tty::io(stdin))
                .await?;
            drop(_raw);
            return Ok(match ended {
                Attached::Exited(code) => exit_code(code),
                Attached::Detached => {
                    eprintln!("\r\ndetached; the command keeps running in {identity}");
                    0
                }
            });
        }
        let out = backend.exec(&agent, &spec).await?;
        std::io::stdout().write_all(&out.stdout)?;
        std::io::stderr().write_all(&out.stderr)?;
        Ok(exit_code(out.exit_code))
    })
}

/// A process's exit code as the launcher's.
pub(crate) fn exit_code(code: i64) -> u8 {
    u8::try_from(code.clamp(0, 255)).unwrap_or(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_a_tty_and_stdin_by_default() {
        assert_eq!(
            mode(false, false, true),
            Mode::Attached {
                stdin: true,
                tty: true
            }
        );
    }

    #[test]
    fn without_a_terminal_or_flags_the_output_is_collected() {
        assert_eq!(mode(false, false, false), Mode::Collect);
    }

    #[test]
    fn flags_say_what_is_connected() {
        assert_eq!(
            mode(true, false, false),
            Mode::Attached {
                stdin: true,
                tty: false
            }
        );
        assert_eq!(
            mode(false, true, true),
            Mode::Attached {
                stdin: false,
                tty: true
            }
        );
        assert_eq!(
            mode(true, true, false),
            Mode::Attached {
                stdin: true,
                tty: true
            }
        );
    }
}
