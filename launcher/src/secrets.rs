//! Secret values: the [`Secret`] newtype, the host seam ([`HostEnv`]) and env/token resolution.
//!
//! A bottle's `env` values are literal, `${VAR}` (copied from the host environment) or `?prompt`
//! (asked on the tty, never echoed). Route tokens (`auth.token_ref`) are read from the host
//! environment when the bottle starts; the Claude credential comes from
//! `CLAUDE_BOTTLE_OAUTH_TOKEN`. Every value is wrapped in [`Secret`] as soon as it is read.
//!
//! Unset variables are errors that name the variable and what needs it: a bottle must not start
//! with a credential silently missing. The one exception is the built-in Claude credential when
//! the agent runs its own `command` (not `claude`): the route then passes through without auth
//! and the plan says so.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use crate::manifest::{Bottle, EnvSource};

/// The contract's one secret type (redacted `Debug`, no `Display`).
pub(crate) use bottle_contract::secret::Secret;

/// What the launcher may ask of the host: environment variables and the terminal. Passed in so
/// unit tests never touch the real environment or tty.
pub(crate) trait HostEnv {
    /// The value of a host environment variable, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// Whether a person can be asked (stdin is a terminal).
    fn is_tty(&self) -> bool;
    /// Asks on the terminal without echo.
    fn prompt_hidden(&self, prompt: &str) -> std::io::Result<String>;
}

/// The real process environment and terminal.
pub(crate) struct ProcessHost;

impl HostEnv for ProcessHost {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn is_tty(&self) -> bool {
        std::io::stdin().is_terminal()
    }
    fn prompt_hidden(&self, prompt: &str) -> std::io::Result<String> {
        prompt_without_echo(prompt)
    }
}

/// Asks on `/dev/tty` with echo turned off *before* the prompt is shown, so nothing typed
/// ahead of the prompt is echoed either (rpassword prompts first, then turns echo off).
/// The terminal's settings are restored on every path.
fn prompt_without_echo(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::{BufRead, Write};

    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let answer = (|| -> std::io::Result<String> {
        let mut out = &tty;
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    })();
    let restored = tcsetattr(&tty, SetArg::TCSADRAIN, &saved).map_err(std::io::Error::from);
    let answer = answer?;
    restored?;
    Ok(answer)
}

/// Why a value could not be resolved. Messages name keys and variables, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SecretError {
    #[error(
        "{file}:{line}: `env.{key}`: host variable `{var}` is not set (or empty); export it before starting (or change the value in the bottle)"
    )]
    EnvVarUnset {
        file: String,
        line: u32,
        key: String,
        var: String,
    },
    #[error(
        "{file}:{line}: `env.{key}` asks for a value on the terminal, but stdin is not a terminal; run from a terminal, or set it from the host with `{key}: \"${{{key}}}\"` and export {key}"
    )]
    NoTty {
        file: String,
        line: u32,
        key: String,
    },
    #[error("{file}:{line}: `env.{key}`: reading the value from the terminal failed: {reason}")]
    PromptFailed {
        file: String,
        line: u32,
        key: String,
        reason: String,
    },
    #[error(
        "route `{host}`: its token comes from the host variable `{var}`, which is not set (or empty); export {var} before starting"
    )]
    TokenUnset { host: String, var: String },
}

/// A bottle's env values, resolved, in manifest order.
#[derive(Debug)]
pub(crate) struct ResolvedEnv {
    pub(crate) vars: Vec<(String, Secret)>,
    /// The names of the values that are secrets: read from the host (`${VAR}`) or asked at
    /// start (`?prompt`). A literal written in the manifest is not one.
    pub(crate) secret_names: Vec<String>,
}

impl ResolvedEnv {
    /// The secret values by name, for the bundle's secrets file (the proxy keeps them from
    /// leaving the bottle).
    pub(crate) fn secret_values(&self) -> BTreeMap<String, Secret> {
        self.vars
            .iter()
            .filter(|(name, _)| self.secret_names.contains(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

/// Resolves every `env` entry of `bottle`, prompting on the tty for `?prompt` values.
pub(crate) fn resolve_env(bottle: &Bottle, host: &dyn HostEnv) -> Result<ResolvedEnv, SecretError> {
    let file = bottle.file.display().to_string();
    let mut vars = Vec::new();
    for entry in &bottle.env {
        let value = match &entry.source {
            EnvSource::Literal(value) => value.clone(),
            // Empty counts as unset: an empty credential is a mistake, not a value.
            EnvSource::HostVar(var) => match host.var(var).filter(|v| !v.is_empty()) {
                Some(v) => Secret::new(v),
                None => {
                    return Err(SecretError::EnvVarUnset {
                        file,
                        line: entry.line,
                        key: entry.name.clone(),
                        var: var.clone(),
                    });
                }
            },
            EnvSource::Prompt(text) => {
                if !host.is_tty() {
                    return Err(SecretError::NoTty {
                        file,
                        line: entry.line,
                        key: entry.name.clone(),
                    });
                }
                let prompt = if text.is_empty() {
                    format!("Value for {}: ", entry.name)
                } else {
                    format!("{text} ({}): ", entry.name)
                };
                match host.prompt_hidden(&prompt) {
                    Ok(v) => Secret::new(v),
                    Err(e) => {
                        return Err(SecretError::PromptFailed {
                            file,
                            line: entry.line,
                            key: entry.name.clone(),
                            reason: e.kind().to_string(),
                        });
                    }
                }
            }
        };
        vars.push((entry.name.clone(), value));
    }
    let secret_names = bottle
        .env
        .iter()
        .filter(|e| !matches!(e.source, EnvSource::Literal(_)))
        .map(|e| e.name.clone())
        .collect();
    Ok(ResolvedEnv { vars, secret_names })
}

/// Reads the token of every credentialed route from the host. `routes` pairs a route host with
/// its token variable. The result is keyed by variable name (the secrets-file slot).
pub(crate) fn resolve_tokens(
    routes: &[(String, String)],
    host: &dyn HostEnv,
) -> Result<BTreeMap<String, Secret>, SecretError> {
    let mut tokens = BTreeMap::new();
    for (route_host, var) in routes {
        match host.var(var) {
            Some(v) if !v.is_empty() => {
                tokens.insert(var.clone(), Secret::new(v));
            }
            _ => {
                return Err(SecretError::TokenUnset {
                    host: route_host.clone(),
                    var: var.clone(),
                });
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted host for unit tests.
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::HostEnv;

    pub(crate) struct FakeHost {
        pub(crate) vars: BTreeMap<String, String>,
        pub(crate) tty: bool,
        pub(crate) answers: RefCell<Vec<String>>,
        pub(crate) prompts: RefCell<Vec<String>>,
    }

    impl FakeHost {
        pub(crate) fn new(vars: &[(&str, &str)], tty: bool) -> FakeHost {
            FakeHost {
                vars: vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                tty,
                answers: RefCell::new(Vec::new()),
                prompts: RefCell::new(Vec::new()),
            }
        }
    }

    impl HostEnv for FakeHost {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn is_tty(&self) -> bool {
            self.tty
        }
        fn prompt_hidden(&self, prompt: &str) -> std::io::Result<String> {
            self.prompts.borrow_mut().push(prompt.to_owned());
            self.answers
                .borrow_mut()
                .pop()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;
    use crate::manifest::validate::parse_bottle;

    fn bottle(yaml: &str) -> Bottle {
        parse_bottle(
            std::path::Path::new("/h/.claude-bottle/bottles/b.md"),
            "b",
            &format!("---\n{yaml}---\n"),
        )
        .unwrap()
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("ghp_topsecret".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn literal_hostvar_and_prompt_resolve() {
        let b = bottle("env:\n  A: lit\n  B: \"${HOST_B}\"\n  C: \"?paste C\"\n");
        let host = FakeHost::new(&[("HOST_B", "from-host")], true);
        host.answers.borrow_mut().push("typed".into());
        let env = resolve_env(&b, &host).unwrap();
        let got: Vec<_> = env
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(got, vec![("A", "lit"), ("B", "from-host"), ("C", "typed")]);
        assert_eq!(*host.prompts.borrow(), vec!["paste C (C): ".to_owned()]);
    }

    #[test]
    fn bare_question_mark_prompts_with_a_default_text() {
        let b = bottle("env:\n  C: \"?\"\n");
        let host = FakeHost::new(&[], true);
        host.answers.borrow_mut().push("typed".into());
        resolve_env(&b, &host).unwrap();
        assert_eq!(*host.prompts.borrow(), vec!["Value for C: ".to_owned()]);
    }

    #[test]
    fn unset_host_var_names_file_line_key_and_var() {
        let b = bottle("env:\n  A: x\n  GITHUB_TOKEN: \"${GH_PAT}\"\n");
        let err = resolve_env(&b, &FakeHost::new(&[], false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/h/.claude-bottle/bottles/b.md:4: `env.GITHUB_TOKEN`: host variable `GH_PAT` is not set (or empty); export it before starting (or change the value in the bottle)"
        );
    }

    #[test]
    fn prompt_without_tty_is_a_clear_error_and_never_asks() {
        let b = bottle("env:\n  TOKEN: \"?paste it\"\n");
        let host = FakeHost::new(&[], false);
        let err = resolve_env(&b, &host).unwrap_err().to_string();
        assert!(err.contains("b.md:3: `env.TOKEN`"), "{err}");
        assert!(err.contains("not a terminal"), "{err}");
        assert!(err.contains("TOKEN: \"${TOKEN}\""), "{err}");
        assert!(host.prompts.borrow().is_empty());
    }

    #[test]
    fn unset_or_empty_token_names_route_and_variable() {
        let routes = vec![("api.github.com".to_owned(), "GH_PAT".to_owned())];
        for vars in [&[][..], &[("GH_PAT", "")][..]] {
            let err = resolve_tokens(&routes, &FakeHost::new(vars, false)).unwrap_err();
            assert_eq!(
                err,
                SecretError::TokenUnset {
                    host: "api.github.com".into(),
                    var: "GH_PAT".into()
                }
            );
            assert!(err.to_string().contains("route `api.github.com`"));
        }
        let ok = resolve_tokens(&routes, &FakeHost::new(&[("GH_PAT", "v")], false)).unwrap();
        assert_eq!(ok["GH_PAT"].expose(), "v");
    }
}
