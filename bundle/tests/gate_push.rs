//! Pushes through the gate against a real OpenSSH upstream: clean pushes land, secret-bearing
//! pushes are refused before any upstream contact, and the refs policy and fsck hold.

#[path = "support/gate_env.rs"]
mod gate_env;
#[path = "support/sshd.rs"]
mod sshd;

use gate_env::{GateEnv, Options, commit_file, git, git_ok, refs_snapshot, stderr, token};

#[test]
fn clone_through_the_gate_and_a_clean_push_lands_upstream() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "hello\n"
    );

    let head = commit_file(&work, "src/lib.rs", "pub fn f() {}\n", "add lib");
    let before = env.sshd.connections();
    let out = git(&work, &["push", "origin", "main"]);
    assert!(
        out.status.success(),
        "push failed: {}\n{}",
        stderr(&out),
        env.gate_log()
    );
    assert!(
        env.sshd.connections() > before,
        "the push never reached the upstream"
    );
    let upstream_main = git_ok(&env.upstream, &["rev-parse", "refs/heads/main"]);
    assert_eq!(upstream_main, head);
    let mirror_main = git_ok(&env.mirror(), &["rev-parse", "refs/heads/main"]);
    assert_eq!(mirror_main, head);

    // A new branch and a tag land too.
    git_ok(&work, &["checkout", "--quiet", "-b", "feature"]);
    let feature = commit_file(&work, "src/more.rs", "pub fn g() {}\n", "more");
    git_ok(&work, &["tag", "-a", "-m", "release", "v1"]);
    let out = git(&work, &["push", "origin", "feature", "v1"]);
    assert!(
        out.status.success(),
        "push failed: {}\n{}",
        stderr(&out),
        env.gate_log()
    );
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/heads/feature"]),
        feature
    );
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/tags/v1^{commit}"]),
        feature
    );

    // Deleting a branch is forwarded too.
    let out = git(&work, &["push", "origin", ":feature"]);
    assert!(out.status.success(), "delete failed: {}", stderr(&out));
    let gone = git(
        &env.upstream,
        &["rev-parse", "--verify", "--quiet", "refs/heads/feature"],
    );
    assert!(!gone.status.success(), "the branch is still upstream");
}

/// Pushes with `args` from `work`, expecting the gate to refuse with `expect` in the message,
/// and checks that neither the upstream's nor the gate's refs moved and that no SSH connection
/// reached the upstream.
fn assert_refused_before_upstream(
    env: &GateEnv,
    work: &std::path::Path,
    args: &[&str],
    expect: &str,
) -> String {
    let upstream = refs_snapshot(&env.upstream);
    let mirror = refs_snapshot(&env.mirror());
    let connections = env.sshd.connections();
    let out = git(work, args);
    let err = stderr(&out);
    assert!(!out.status.success(), "push {args:?} was accepted:\n{err}");
    assert!(
        err.contains(expect),
        "push {args:?}: message lacks {expect:?}:\n{err}"
    );
    assert_eq!(
        refs_snapshot(&env.upstream),
        upstream,
        "upstream refs changed"
    );
    assert_eq!(refs_snapshot(&env.mirror()), mirror, "gate refs changed");
    assert_eq!(
        env.sshd.connections(),
        connections,
        "the upstream was contacted:\n{}",
        env.sshd.log()
    );
    err
}

/// Resets `work` to a fresh `branch` at the upstream's main.
fn reset_to_main(work: &std::path::Path, branch: &str) {
    git_ok(work, &["fetch", "--quiet", "origin"]);
    git_ok(work, &["checkout", "--quiet", "-B", branch, "origin/main"]);
}

#[test]
fn a_push_carrying_a_secret_is_rejected_before_any_upstream_contact() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    let secret_line = format!("GITHUB_TOKEN = \"{}\"\n", token());
    let check = |err: &str, case: &str| {
        assert!(
            err.contains("rule github-pat"),
            "{case}: rule not named:\n{err}"
        );
        assert!(
            err.contains("gitleaks:allow"),
            "{case}: no false-positive advice:\n{err}"
        );
        assert!(
            !err.contains(&token()),
            "{case}: the secret was echoed:\n{err}"
        );
    };

    // In a file.
    reset_to_main(&work, "main");
    commit_file(&work, "config.py", &secret_line, "add config");
    let err =
        assert_refused_before_upstream(&env, &work, &["push", "origin", "main"], "secret scanner");
    check(&err, "file");
    assert!(
        err.contains("config.py:1"),
        "file and line not named:\n{err}"
    );

    // In a commit message.
    reset_to_main(&work, "main");
    commit_file(
        &work,
        "notes.txt",
        "clean\n",
        &format!("use token {}", token()),
    );
    let err =
        assert_refused_before_upstream(&env, &work, &["push", "origin", "main"], "secret scanner");
    check(&err, "message");

    // On a new branch.
    reset_to_main(&work, "leak");
    commit_file(&work, "deploy/env.sh", &secret_line, "deploy");
    let err =
        assert_refused_before_upstream(&env, &work, &["push", "origin", "leak"], "secret scanner");
    check(&err, "new branch");

    // In a force push that rewrites the tip.
    reset_to_main(&work, "main");
    std::fs::write(work.join("README.md"), format!("hello\n{secret_line}")).unwrap();
    git_ok(&work, &["commit", "--quiet", "--amend", "-a", "--no-edit"]);
    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "--force", "origin", "main"],
        "secret scanner",
    );
    check(&err, "force push");

    // In the 2nd of 5 commits, removed again by the 3rd.
    reset_to_main(&work, "main");
    commit_file(&work, "a.txt", "one\n", "1");
    commit_file(&work, "b.txt", &secret_line, "2");
    commit_file(&work, "b.txt", "removed\n", "3");
    commit_file(&work, "c.txt", "four\n", "4");
    commit_file(&work, "d.txt", "five\n", "5");
    let err =
        assert_refused_before_upstream(&env, &work, &["push", "origin", "main"], "secret scanner");
    check(&err, "2nd of 5");
    assert!(err.contains("b.txt:1"), "file and line not named:\n{err}");

    // In an annotated tag's message, on a commit the upstream already has.
    reset_to_main(&work, "main");
    git_ok(
        &work,
        &[
            "tag",
            "-a",
            "-m",
            &format!("release with {}", token()),
            "v-leak",
        ],
    );
    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "origin", "v-leak"],
        "secret scanner",
    );
    check(&err, "tag message");

    // Marked as a false positive, the same line goes through.
    reset_to_main(&work, "main");
    commit_file(
        &work,
        "fixture.py",
        &format!("FAKE = \"{}\"  # gitleaks:allow\n", token()),
        "fixture",
    );
    let out = git(&work, &["push", "origin", "main"]);
    assert!(
        out.status.success(),
        "allowed line refused: {}",
        stderr(&out)
    );
}

#[test]
fn only_branches_and_tags_and_well_formed_objects_are_accepted() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    commit_file(&work, "x.txt", "x\n", "x");
    for target in [
        "HEAD:refs/notes/commits",
        "HEAD:refs/meta/config",
        "HEAD:refs/pull/1/head",
    ] {
        assert_refused_before_upstream(
            &env,
            &work,
            &["push", "origin", target],
            "only refs/heads/* and refs/tags/*",
        );
    }

    // A commit with a malformed committer date: receive.fsckObjects refuses the pack.
    let tree = git_ok(&work, &["rev-parse", "HEAD^{tree}"]);
    let parent = git_ok(&work, &["rev-parse", "HEAD"]);
    let body = format!(
        "tree {tree}\nparent {parent}\nauthor Agent <agent@example.invalid> 1700000000 +0000\ncommitter Agent <agent@example.invalid> notadate +0000\n\nbad\n"
    );
    let path = work.join("bad-commit");
    std::fs::write(&path, body).unwrap();
    let bad = git_ok(
        &work,
        &[
            "hash-object",
            "-t",
            "commit",
            "--literally",
            "-w",
            &gate_env::s(&path),
        ],
    );
    git_ok(&work, &["update-ref", "refs/heads/bad", &bad]);
    assert_refused_before_upstream(&env, &work, &["push", "origin", "bad"], "fsck");
}

/// The agent's path in a bottle: its loopback relay forwards to the gate's Unix socket.
#[test]
fn clone_and_push_over_the_unix_socket_through_the_relay() {
    use std::io::BufRead;
    let env = GateEnv::start(Options {
        unix_socket: true,
        ..Options::default()
    });
    let socket = env.tmp.path().join("gate.sock");
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args(["relay", "--map"])
        .arg(format!("127.0.0.1:0={}", socket.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // `listening <addr> <socket>`
    let addr = line.split_whitespace().nth(1).unwrap().to_owned();
    let url = format!("git://{addr}/{}.git", gate_env::REPO);
    let out = git(env.tmp.path(), &["clone", "--quiet", &url, "via-socket"]);
    assert!(
        out.status.success(),
        "clone: {}\n{}",
        stderr(&out),
        env.gate_log()
    );
    let work = env.tmp.path().join("via-socket");
    let head = commit_file(&work, "s.txt", "over the socket\n", "socket");
    let out = git(&work, &["push", "origin", "main"]);
    assert!(
        out.status.success(),
        "push: {}\n{}",
        stderr(&out),
        env.gate_log()
    );
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/heads/main"]),
        head
    );
    let _ = relay.kill();
    let _ = relay.wait();
}

#[test]
fn sigterm_stops_the_gate_promptly() {
    let mut env = GateEnv::start(Options::default());
    let _work = env.clone_work("work");
    let status = env.terminate(std::time::Duration::from_secs(5));
    assert!(
        status.success(),
        "gate exited with {status}: {}",
        env.gate_log()
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err());
}
