//! `bottle-bundle ssh`, the gate's SSH transport (russh), against a real OpenSSH server: it
//! runs git's services and passes their output and exit status through, refuses a server with
//! another host key before it authenticates, reports a refused key, and refuses other
//! commands and encrypted keys without contacting the upstream.
#![allow(clippy::unwrap_used)]

#[path = "support/gate_env.rs"]
mod gate_env;
#[path = "support/sshd.rs"]
mod sshd;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use gate_env::{GateEnv, Options, Pin, UPSTREAM_HOST, git, s, stderr};

/// Runs `bottle-bundle ssh args…` as the gate runs it for `env`'s remote, with `input` on stdin.
fn bundle_ssh(env: &GateEnv, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .arg("ssh")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BOTTLE_GATE_CONFIG", &env.config_path)
        .env("BOTTLE_GATE_REMOTE", "app")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal may end the process before it reads its input: a broken pipe here is that,
    // and the exit status and stderr below say what happened.
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

/// The arguments git passes to fetch from `env`'s upstream.
fn upload_pack_args(env: &GateEnv) -> (String, String, String) {
    (
        env.sshd.port.to_string(),
        format!("root@{UPSTREAM_HOST}"),
        format!("git-upload-pack '{}'", s(&env.upstream)),
    )
}

/// `SHA256:…` of a public key line, as `ssh-keygen -l` prints it.
fn fingerprint(dir: &Path, key_line: &str) -> String {
    let path = dir.join("fingerprint.pub");
    std::fs::write(&path, format!("{key_line}\n")).unwrap();
    let out = sshd::run("ssh-keygen", &["-l", "-f", &s(&path)]);
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// The sshd log lines written after `before` bytes.
fn log_since(env: &GateEnv, before: usize) -> String {
    env.sshd.log().get(before..).unwrap_or_default().to_owned()
}

#[test]
fn upload_pack_runs_and_its_output_and_exit_status_pass_through() {
    let env = GateEnv::start(Options::default());
    let (port, dest, command) = upload_pack_args(&env);
    // A flush packet: upload-pack advertises its refs, then sees that nothing is wanted.
    let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"0000");
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refs/heads/main"), "{stdout}");

    // The remote command's own failure: its stderr and status come back unchanged.
    std::fs::rename(&env.upstream, env.tmp.path().join("moved.git")).unwrap();
    let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"");
    assert_eq!(out.status.code(), Some(128), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not appear to be a git repository"),
        "{}",
        stderr(&out)
    );
}

/// ECDSA and RSA keys work as well as ed25519; RSA signs with SHA-2 (this OpenSSH accepts no
/// SHA-1 `ssh-rsa` signatures).
#[test]
fn ecdsa_and_rsa_identities_authenticate() {
    let env = GateEnv::start(Options::default());
    let (port, dest, command) = upload_pack_args(&env);
    // Every format the launcher accepts: OpenSSH's own, PEM (PKCS#1, SEC1) and PKCS#8.
    let keys = [
        ("ecdsa", "256", "RFC4716"),
        ("ecdsa", "384", "PEM"),
        ("ecdsa", "256", "PKCS8"),
        ("rsa", "3072", "RFC4716"),
        ("rsa", "2048", "PEM"),
        ("rsa", "2048", "PKCS8"),
    ];
    for (key_type, bits, format) in keys {
        let key = env
            .tmp
            .path()
            .join(format!("id_{key_type}_{bits}_{format}"));
        let args = [
            "-q", "-t", key_type, "-b", bits, "-m", format, "-N", "", "-f",
        ];
        let mut args: Vec<&str> = args.to_vec();
        let path = s(&key);
        args.push(&path);
        sshd::run("ssh-keygen", &args);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut authorized = std::fs::OpenOptions::new()
            .append(true)
            .open(env.tmp.path().join("sshd/authorized_keys"))
            .unwrap();
        authorized.write_all(public.as_bytes()).unwrap();
        std::fs::copy(&key, &env.identity).unwrap();
        let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"0000");
        assert!(
            out.status.success(),
            "{key_type} {bits} {format}: {}",
            stderr(&out)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("refs/heads/main"));
    }
    let log = env.sshd.log();
    assert!(
        log.contains("Accepted publickey for root from 127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("ssh2: ECDSA SHA256:"), "{log}");
    assert!(log.contains("ssh2: RSA SHA256:"), "{log}");
}

#[test]
fn a_server_with_another_host_key_is_refused_before_authentication() {
    let env = GateEnv::start(Options {
        pin: Pin::Wrong,
        ..Options::default()
    });
    let before_log = env.sshd.log().len();
    let connections = env.sshd.connections();
    let (port, dest, command) = upload_pack_args(&env);
    let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"0000");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");

    let presented = fingerprint(env.tmp.path(), &env.sshd.host_key_pub);
    let pinned_line = std::fs::read_to_string(env.tmp.path().join("other_host_key.pub")).unwrap();
    let pinned = fingerprint(env.tmp.path(), pinned_line.trim());
    assert!(
        err.starts_with("bottle-bundle ssh: remote \"app\": Host key verification failed"),
        "{err}"
    );
    assert!(
        err.contains(&format!("presented ssh-ed25519 {presented}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("the pinned KnownHostKey is ssh-ed25519 {pinned}")),
        "{err}"
    );
    // Fingerprints only: no key material.
    let host_key_b64 = env.sshd.host_key_pub.split_whitespace().nth(1).unwrap();
    assert!(!err.contains(host_key_b64), "{err}");

    // The server was reached, and saw no authentication attempt.
    assert!(
        env.sshd.connections() > connections,
        "sshd was not contacted"
    );
    let log = log_since(&env, before_log);
    assert!(log.contains("Connection from 127.0.0.1"), "{log}");
    for auth in ["publickey", "for root", "authenticating user"] {
        assert!(
            !log.contains(auth),
            "sshd logged an authentication attempt ({auth}):\n{log}"
        );
    }
}

#[test]
fn a_key_the_upstream_does_not_accept_is_refused_with_the_remotes_message() {
    let env = GateEnv::start(Options::default());
    // Replace the gate's key with one the server does not know (the gate checked only that
    // the file is readable when it started).
    let stranger = env.tmp.path().join("stranger");
    sshd::keygen(&stranger);
    std::fs::copy(&stranger, &env.identity).unwrap();

    let (port, dest, command) = upload_pack_args(&env);
    let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"0000");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("bottle-bundle ssh: remote \"app\": Permission denied (publickey)"),
        "{err}"
    );
    assert!(err.contains("user \"root\""), "{err}");
    assert!(
        !err.contains(&s(&env.identity)),
        "the message names the key file: {err}"
    );

    // Through the gate, the agent gets the gate's words for it.
    let out = git(env.tmp.path(), &["clone", &env.url(), "work"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the upstream refused the gate's SSH key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn only_the_remotes_git_services_run() {
    let env = GateEnv::start(Options::default());
    let connections = env.sshd.connections();
    let (port, dest, _) = upload_pack_args(&env);
    let upstream = s(&env.upstream);
    let refused = [
        vec!["-p", &port, &dest, "ls"],
        vec!["-p", &port, &dest, "git-upload-pack '/etc'"],
        vec!["-p", &port, &dest, "git-upload-archive '/srv/app.git'"],
        vec![
            "-o",
            "ProxyCommand=sh -c id",
            "-p",
            &port,
            &dest,
            "git-upload-pack '/r'",
        ],
        vec!["-p", &port, "root@elsewhere.test", "git-upload-pack '/r'"],
    ];
    for args in &refused {
        let out = bundle_ssh(&env, args, b"");
        assert_eq!(out.status.code(), Some(255), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("bottle-bundle ssh: remote \"app\": "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = bundle_ssh(&env, &["-p", &port, &dest, "ls"], b"");
    assert!(
        stderr(&out).contains(
            "refusing to run \"ls\" on the upstream: only `git-upload-pack '<path>'` and `git-receive-pack '<path>'` are allowed"
        ),
        "{}",
        stderr(&out)
    );
    let receive_elsewhere = format!("git-receive-pack '{upstream}/../other.git'");
    let out = bundle_ssh(&env, &["-p", &port, &dest, &receive_elsewhere], b"");
    assert!(
        stderr(&out).contains("but the remote's upstream is"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.sshd.connections(),
        connections,
        "a refused command contacted the upstream"
    );

    // Outside the gate (no config named) nothing runs either.
    let out = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args([
            "ssh",
            "-p",
            &port,
            &dest,
            &format!("git-upload-pack '{upstream}'"),
        ])
        .env_remove("BOTTLE_GATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("BOTTLE_GATE_CONFIG is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_encrypted_identity_is_refused_with_a_clear_message_and_no_connection() {
    let env = GateEnv::start(Options::default());
    let locked = env.tmp.path().join("locked");
    sshd::run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "a passphrase",
            "-C",
            "locked",
            "-f",
            &s(&locked),
        ],
    );
    std::fs::copy(&locked, &env.identity).unwrap();
    let connections = env.sshd.connections();

    let (port, dest, command) = upload_pack_args(&env);
    let out = bundle_ssh(&env, &["-p", &port, &dest, &command], b"0000");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("bottle-bundle ssh: remote \"app\": the identity file is encrypted (it has a passphrase)"),
        "{err}"
    );
    assert!(
        !err.contains(&s(&env.identity)),
        "the message names the key file: {err}"
    );
    assert_eq!(
        env.sshd.connections(),
        connections,
        "the upstream was contacted"
    );
}
