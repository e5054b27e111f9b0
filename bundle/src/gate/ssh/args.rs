//! What git hands its SSH transport, parsed strictly: only what git itself sends with
//! `GIT_SSH_VARIANT=ssh` (`[-o SendEnv=GIT_PROTOCOL] [-4|-6] [-p PORT] [user@]host command`),
//! and only the two git services, on the remote's own host, port and path.

/// Which address family git asked for (`-4`, `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Any,
    V4,
    V6,
}

/// One invocation by git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// The login name from `user@host`, if git gave one.
    pub user: Option<String>,
    pub host: String,
    /// From `-p`; `None` means git named no port (22).
    pub port: Option<u16>,
    pub family: Family,
    /// `-o SendEnv=GIT_PROTOCOL`: pass git's protocol version on.
    pub send_git_protocol: bool,
    /// The remote command, one argument as git passes it.
    pub command: String,
}

/// The git service a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    UploadPack,
    ReceivePack,
}

/// A remote command that is exactly `git-upload-pack '<path>'` or `git-receive-pack '<path>'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitCommand {
    pub service: Service,
    /// The repository path, unquoted.
    pub path: String,
}

/// Where an upstream URL points, as git would hand it to its SSH transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses git's arguments to its SSH transport.
pub(crate) fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut port = None;
    let mut family = Family::Any;
    let mut send_git_protocol = false;
    let mut rest = args.iter();
    let destination = loop {
        let Some(arg) = rest.next() else {
            return Err("no host given".into());
        };
        match arg.as_str() {
            "-p" => {
                let value = rest.next().ok_or("-p needs a port")?;
                let parsed = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("-p {value:?} is not a port"))?;
                port = Some(parsed);
            }
            "-4" => family = Family::V4,
            "-6" => family = Family::V6,
            "-o" => match rest.next().map(String::as_str) {
                Some("SendEnv=GIT_PROTOCOL") => send_git_protocol = true,
                other => {
                    return Err(format!(
                        "unsupported option -o {:?} (only SendEnv=GIT_PROTOCOL, which git sends)",
                        other.unwrap_or_default()
                    ));
                }
            },
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unsupported argument {flag:?} (git sends only -p, -4, -6 and -o SendEnv=GIT_PROTOCOL)"
                ));
            }
            destination => break destination,
        }
    };
    let (user, host) = match destination.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_owned()), host),
        None => (None, destination),
    };
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(format!("{destination:?} is not [user@]host"));
    }
    let command = match (rest.next(), rest.next()) {
        (Some(command), None) => command.clone(),
        (None, _) => return Err("no remote command given".into()),
        (Some(_), Some(_)) => {
            return Err("the remote command must be one argument, as git passes it".into());
        }
    };
    Ok(Invocation {
        user,
        host: host.to_owned(),
        port,
        family,
        send_git_protocol,
        command,
    })
}

/// Parses the remote command; anything but the two git services is refused.
pub(crate) fn parse_command(command: &str) -> Result<GitCommand, String> {
    let refuse = || {
        format!(
            "refusing to run {command:?} on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"
        )
    };
    let (service, quoted) = if let Some(q) = command.strip_prefix("git-upload-pack ") {
        (Service::UploadPack, q)
    } else if let Some(q) = command.strip_prefix("git-receive-pack ") {
        (Service::ReceivePack, q)
    } else {
        return Err(refuse());
    };
    let path = sq_dequote(quoted).ok_or_else(refuse)?;
    if path.is_empty() {
        return Err(refuse());
    }
    Ok(GitCommand { service, path })
}

/// Undoes git's `sq_quote_buf`: `'…'` pieces, with `'` and `!` written as `'\''` and `'\!'`.
/// `None` unless the whole text is one quoted word.
fn sq_dequote(text: &str) -> Option<String> {
    let mut chars = text.chars();
    if chars.next()? != '\'' {
        return None;
    }
    let mut out = String::new();
    loop {
        match chars.next()? {
            '\'' => match chars.next() {
                None => return Some(out),
                Some('\\') => {
                    let c = chars.next()?;
                    if !matches!(c, '\'' | '!') || chars.next()? != '\'' {
                        return None;
                    }
                    out.push(c);
                }
                Some(_) => return None,
            },
            c => out.push(c),
        }
    }
}

/// Where `url` (`ssh://[user@]host[:port]/path` or `[user@]host:path`, already validated by
/// the settings) points, with the path as git passes it: `ssh://host/~x` becomes `~x`.
pub(crate) fn target(url: &str) -> Option<Target> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let slash = rest.find('/')?;
        let (authority, path) = rest.split_at(slash);
        let host_port = authority.rsplit('@').next()?;
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => 22,
        };
        let path = path
            .strip_prefix("/~")
            .map_or(path.to_owned(), |p| format!("~{p}"));
        Some(Target {
            host: host.to_owned(),
            port,
            path,
        })
    } else {
        let (left, path) = url.split_once(':')?;
        let host = left.rsplit('@').next()?;
        Some(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: 22,
            path: path.to_owned(),
        })
    }
}

impl Invocation {
    /// Checks that git asks for `target` (the remote's upstream) and nothing else.
    pub(crate) fn check_target(&self, command: &GitCommand, target: &Target) -> Result<(), String> {
        let port = self.port.unwrap_or(22);
        if !self.host.eq_ignore_ascii_case(&target.host) || port != target.port {
            return Err(format!(
                "git asked for {} port {port}, but the remote's upstream is {} port {}",
                self.host, target.host, target.port
            ));
        }
        if command.path != target.path {
            return Err(format!(
                "git asked for the repository {:?}, but the remote's upstream is {:?}",
                command.path, target.path
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(args: &[&str], expect: Expect) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let got = match parse(&args) {
            Ok(inv) => {
                let command = match parse_command(&inv.command) {
                    Ok(c) => format!("{:?} {:?}", c.service, c.path),
                    Err(e) => e,
                };
                format!(
                    "user={:?} host={} port={:?} {:?} sendenv={} | {command}",
                    inv.user, inv.host, inv.port, inv.family, inv.send_git_protocol
                )
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn what_git_sends() {
        check(
            &[
                "-p",
                "2222",
                "root@upstream.test",
                "git-upload-pack '/srv/app.git'",
            ],
            expect![[
                r#"user=Some("root") host=upstream.test port=Some(2222) Any sendenv=false | UploadPack "/srv/app.git""#
            ]],
        );
        check(
            &[
                "-o",
                "SendEnv=GIT_PROTOCOL",
                "-4",
                "-p",
                "22",
                "git@github.com",
                "git-receive-pack 'o/r.git'",
            ],
            expect![[
                r#"user=Some("git") host=github.com port=Some(22) V4 sendenv=true | ReceivePack "o/r.git""#
            ]],
        );
        check(
            &["-6", "::1", "git-upload-pack '/it'\\''s here\\!'"],
            expect![[
                r#"user=None host=::1 port=None V6 sendenv=false | UploadPack "/it's here\\!""#
            ]],
        );
        check(
            &["h", "git-upload-pack '/it'\\''s here'\\!''"],
            expect![[r#"user=None host=h port=None Any sendenv=false | UploadPack "/it's here!""#]],
        );
    }

    #[test]
    fn anything_else_is_refused() {
        check(
            &["h", "ls"],
            expect![[
                r#"user=None host=h port=None Any sendenv=false | refusing to run "ls" on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"#
            ]],
        );
        check(
            &["h", "git-upload-pack '/r'; rm -rf /"],
            expect![[
                r#"user=None host=h port=None Any sendenv=false | refusing to run "git-upload-pack '/r'; rm -rf /" on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"#
            ]],
        );
        check(
            &["h", "git-upload-pack /r"],
            expect![[
                r#"user=None host=h port=None Any sendenv=false | refusing to run "git-upload-pack /r" on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"#
            ]],
        );
        check(
            &["h", "git-upload-archive '/r'"],
            expect![[
                r#"user=None host=h port=None Any sendenv=false | refusing to run "git-upload-archive '/r'" on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"#
            ]],
        );
        check(
            &["-o", "ProxyCommand=sh", "h", "git-upload-pack '/r'"],
            expect![[
                r#"error: unsupported option -o "ProxyCommand=sh" (only SendEnv=GIT_PROTOCOL, which git sends)"#
            ]],
        );
        check(
            &["-i", "key", "h", "git-upload-pack '/r'"],
            expect![[
                r#"error: unsupported argument "-i" (git sends only -p, -4, -6 and -o SendEnv=GIT_PROTOCOL)"#
            ]],
        );
        check(
            &["-p", "0", "h", "x"],
            expect![[r#"error: -p "0" is not a port"#]],
        );
        check(&["-p"], expect!["error: -p needs a port"]);
        check(&[], expect!["error: no host given"]);
        check(&["h"], expect!["error: no remote command given"]);
        check(
            &["h", "git-upload-pack", "'/r'"],
            expect!["error: the remote command must be one argument, as git passes it"],
        );
        check(&["@h", "x"], expect![[r#"error: "@h" is not [user@]host"#]]);
    }

    #[test]
    fn targets() {
        let t = |url: &str| target(url).map(|t| format!("{} {} {}", t.host, t.port, t.path));
        assert_eq!(
            t("ssh://root@upstream.test:2222/srv/app.git").as_deref(),
            Some("upstream.test 2222 /srv/app.git")
        );
        assert_eq!(
            t("ssh://git@github.com/o/r.git").as_deref(),
            Some("github.com 22 /o/r.git")
        );
        assert_eq!(t("ssh://h/~/r.git").as_deref(), Some("h 22 ~/r.git"));
        assert_eq!(t("ssh://[::1]:2200/r").as_deref(), Some("::1 2200 /r"));
        assert_eq!(
            t("git@github.com:o/r.git").as_deref(),
            Some("github.com 22 o/r.git")
        );
    }

    #[test]
    fn the_target_must_be_the_remotes_upstream() {
        let upstream = target("ssh://root@upstream.test:2222/srv/app.git").unwrap();
        let inv = |args: &[&str]| {
            parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()).unwrap()
        };
        let ok = inv(&[
            "-p",
            "2222",
            "root@Upstream.Test",
            "git-upload-pack '/srv/app.git'",
        ]);
        let cmd = parse_command(&ok.command).unwrap();
        assert_eq!(ok.check_target(&cmd, &upstream), Ok(()));

        let other_port = inv(&["root@upstream.test", "git-upload-pack '/srv/app.git'"]);
        expect!["git asked for upstream.test port 22, but the remote's upstream is upstream.test port 2222"]
            .assert_eq(&other_port.check_target(&cmd, &upstream).unwrap_err());
        let other_host = inv(&["-p", "2222", "evil.test", "git-upload-pack '/srv/app.git'"]);
        assert!(other_host.check_target(&cmd, &upstream).is_err());
        let other_repo = parse_command("git-receive-pack '/srv/other.git'").unwrap();
        expect![[r#"git asked for the repository "/srv/other.git", but the remote's upstream is "/srv/app.git""#]]
            .assert_eq(&ok.check_target(&other_repo, &upstream).unwrap_err());
    }
}
