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
}

/// Pushes a `feature` branch and an annotated tag `v1` from a fresh clone, then rewrites both
/// locally (amended commit, re-made tag): the starting point for the push-policy tests.
fn branch_and_tag_then_rewrite(env: &GateEnv) -> std::path::PathBuf {
    let work = env.clone_work("work");
    git_ok(&work, &["checkout", "--quiet", "-b", "feature"]);
    commit_file(&work, "f.txt", "f\n", "feature");
    git_ok(&work, &["tag", "-a", "-m", "release", "v1"]);
    let out = git(&work, &["push", "origin", "feature", "v1"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), env.gate_log());
    git_ok(
        &work,
        &["commit", "--quiet", "--amend", "-m", "feature, rewritten"],
    );
    git_ok(&work, &["tag", "-f", "-a", "-m", "release, moved", "v1"]);
    work
}

#[test]
fn deletes_and_force_pushes_are_refused_by_default_before_any_upstream_contact() {
    let env = GateEnv::start(Options::default());
    let work = branch_and_tag_then_rewrite(&env);
    let key = |k: &str| {
        format!("to allow it, set `{k}: true` on the `git:` entry `app` of the bottle manifest")
    };

    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "origin", ":feature"],
        "refs/heads/feature: deleting the branch refs/heads/feature is refused",
    );
    assert!(err.contains(&key("AllowDelete")), "{err}");
    assert!(err.contains("nothing was sent upstream"), "{err}");
    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "origin", ":refs/tags/v1"],
        "deleting the tag refs/tags/v1 is refused",
    );
    assert!(err.contains(&key("AllowDelete")), "{err}");
    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "--force", "origin", "feature"],
        "force-pushing refs/heads/feature (",
    );
    assert!(err.contains("is not an ancestor of the pushed"), "{err}");
    assert!(err.contains(&key("AllowForcePush")), "{err}");
    let err = assert_refused_before_upstream(
        &env,
        &work,
        &["push", "--force", "origin", "v1"],
        "moving the existing tag refs/tags/v1 (from ",
    );
    assert!(err.contains(&key("AllowForcePush")), "{err}");
    // Refused together with an allowed update: nothing of the push goes (the forward is atomic).
    git_ok(&work, &["branch", "fresh"]);
    assert_refused_before_upstream(
        &env,
        &work,
        &["push", "--force", "origin", "fresh", "feature"],
        "force-pushing refs/heads/feature",
    );

    // A fast-forward on top of what the upstream holds still goes.
    git_ok(&work, &["reset", "--quiet", "--hard", "origin/feature"]);
    let head = commit_file(&work, "g.txt", "g\n", "fast-forward");
    let out = git(&work, &["push", "origin", "feature"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), env.gate_log());
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/heads/feature"]),
        head
    );
}

#[test]
fn deletes_and_force_pushes_go_through_where_the_remote_allows_them() {
    let env = GateEnv::start(Options {
        allow_delete: true,
        allow_force_push: true,
        ..Options::default()
    });
    let work = branch_and_tag_then_rewrite(&env);
    let push = |args: &[&str]| {
        let out = git(&work, args);
        assert!(
            out.status.success(),
            "push {args:?}: {}\n{}",
            stderr(&out),
            env.gate_log()
        );
    };
    let rev = |r: &str| git_ok(&env.upstream, &["rev-parse", r]);

    push(&["push", "--force", "origin", "feature", "v1"]);
    assert_eq!(
        rev("refs/heads/feature"),
        git_ok(&work, &["rev-parse", "feature"])
    );
    assert_eq!(rev("refs/tags/v1"), git_ok(&work, &["rev-parse", "v1"]));

    push(&["push", "origin", ":feature", ":refs/tags/v1"]);
    for gone in ["refs/heads/feature", "refs/tags/v1"] {
        let out = git(&env.upstream, &["rev-parse", "--verify", "--quiet", gone]);
        assert!(!out.status.success(), "{gone} is still upstream");
        let out = git(&env.mirror(), &["rev-parse", "--verify", "--quiet", gone]);
        assert!(!out.status.success(), "{gone} is still in the gate");
    }
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
    // Force pushes allowed, so that the force push below reaches the scanner.
    let env = GateEnv::start(Options {
        allow_force_push: true,
        ..Options::default()
    });
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
        err.contains("git commit --amend"),
        "no commit advice:\n{err}"
    );
    assert!(
        !err.contains("annotated tag"),
        "tag advice for a file:\n{err}"
    );
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
    // The advice is about the tag, not commits, and following it word for word works.
    assert!(
        err.contains("To fix the annotated tag v-leak: recreate it without the secret, `git tag -f -a v-leak -m '<new message>' v-leak^{}`"),
        "no tag advice:\n{err}"
    );
    assert!(
        !err.contains("git commit --amend"),
        "commit advice for a tag:\n{err}"
    );
    git_ok(
        &work,
        &["tag", "-f", "-a", "v-leak", "-m", "release", "v-leak^{}"],
    );
    let out = git(&work, &["push", "origin", "v-leak"]);
    assert!(out.status.success(), "the recreated tag: {}", stderr(&out));

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
fn a_blobless_clone_through_the_gate_is_partial_and_fetches_blobs_on_demand() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    let big = "a line of the large file\n".repeat(4096);
    commit_file(&work, "data/large.txt", &big, "large file");
    let out = git(&work, &["push", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let partial = env.tmp.path().join("partial");
    let out = git(
        env.tmp.path(),
        &[
            "clone",
            "--filter=blob:none",
            "--no-checkout",
            &env.url(),
            &gate_env::s(&partial),
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}\n{}", env.gate_log());
    assert!(!err.contains("filtering not recognized"), "{err}");
    assert_eq!(
        git_ok(&partial, &["config", "remote.origin.partialclonefilter"]),
        "blob:none"
    );
    // Every blob is missing until something needs it.
    let missing = git_ok(
        &partial,
        &["rev-list", "--objects", "--missing=print", "--all"],
    );
    let missing: Vec<&str> = missing.lines().filter(|l| l.starts_with('?')).collect();
    assert_eq!(
        missing.len(),
        2,
        "README.md and data/large.txt: {missing:?}"
    );

    // Checking out fetches them on demand, through the gate, which refreshes first.
    let before = env.sshd.connections();
    git_ok(&partial, &["checkout", "--quiet", "main"]);
    assert_eq!(
        std::fs::read_to_string(partial.join("data/large.txt")).unwrap(),
        big
    );
    assert!(
        env.sshd.connections() > before,
        "the on-demand fetch did not refresh the mirror from the upstream"
    );
    let missing = git_ok(
        &partial,
        &["rev-list", "--objects", "--missing=print", "--all"],
    );
    assert!(!missing.lines().any(|l| l.starts_with('?')), "{missing}");
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

/// Every object a push carries is scanned, whatever points at it: tags of trees and blobs,
/// binary files, commit and tag headers, file and directory names. After all the refused
/// pushes, no object of the upstream holds the token.
#[test]
fn every_object_a_push_carries_is_scanned() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    let secret_line = format!("token = \"{}\"\n", token());
    let refuse = |args: &[&str], case: &str| {
        eprintln!("case: {case}");
        let err = assert_refused_before_upstream(&env, &work, args, "secret scanner");
        assert!(err.contains("github-pat"), "{case}: rule not named:\n{err}");
        assert!(
            !err.contains(&token()),
            "{case}: the secret was echoed:\n{err}"
        );
    };
    let stage = |path: &str, content: &str| {
        let full = work.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        git_ok(&work, &["add", path]);
    };

    // A lightweight tag pointing at a tree.
    reset_to_main(&work, "main");
    stage("tree-only/config.py", &secret_line);
    let tree = git_ok(&work, &["write-tree"]);
    git_ok(&work, &["tag", "tree-tag", &tree]);
    refuse(&["push", "origin", "refs/tags/tree-tag"], "tag of a tree");
    // An annotated tag of the same tree.
    git_ok(&work, &["tag", "-a", "-m", "a tree", "tree-tag-a", &tree]);
    refuse(
        &["push", "origin", "refs/tags/tree-tag-a"],
        "annotated tag of a tree",
    );
    // A tag of a binary blob inside it.
    let blob = git_ok(
        &work,
        &["rev-parse", &format!("{tree}:tree-only/config.py")],
    );
    git_ok(&work, &["tag", "blob-tag", &blob]);
    refuse(&["push", "origin", "refs/tags/blob-tag"], "tag of a blob");
    git_ok(&work, &["reset", "--quiet", "--hard"]);

    // A file with a NUL byte before the token (git calls it binary).
    reset_to_main(&work, "main");
    commit_file(&work, "data.bin", &format!("\0\n{secret_line}"), "binary");
    refuse(&["push", "origin", "main"], "binary file");

    // The token as a file name, and as a directory name.
    reset_to_main(&work, "main");
    commit_file(&work, &format!("{}.txt", token()), "clean\n", "name");
    refuse(&["push", "origin", "main"], "file name");
    reset_to_main(&work, "main");
    commit_file(&work, &format!("keys/{}/x.txt", token()), "clean\n", "dir");
    refuse(&["push", "origin", "main"], "directory name");

    // The token as the author's name, the committer's email.
    reset_to_main(&work, "main");
    std::fs::write(work.join("a.txt"), "a\n").unwrap();
    git_ok(&work, &["add", "a.txt"]);
    git_ok(
        &work,
        &[
            "-c",
            &format!("user.name={}", token()),
            "commit",
            "--quiet",
            "--author",
            &format!("{} <a@example.invalid>", token()),
            "-m",
            "author",
        ],
    );
    refuse(&["push", "origin", "main"], "author name");
    // The token as the committer's email, and in a gpgsig header, of hand-made commits (the
    // test's git environment fixes the committer).
    let hand_made = |committer: &str, extra_header: &str, case: &str| {
        reset_to_main(&work, "main");
        let tree = git_ok(&work, &["rev-parse", "HEAD^{tree}"]);
        let parent = git_ok(&work, &["rev-parse", "HEAD"]);
        let body = format!(
            "tree {tree}\nparent {parent}\nauthor Agent <agent@example.invalid> 1700000000 +0000\n\
             committer {committer} 1700000000 +0000\n{extra_header}\n{case}\n"
        );
        let body_file = env.tmp.path().join("hand-made-commit");
        std::fs::write(&body_file, body).unwrap();
        let commit = git_ok(
            &work,
            &[
                "hash-object",
                "-t",
                "commit",
                "-w",
                body_file.to_str().unwrap(),
            ],
        );
        refuse(
            &["push", "origin", &format!("{commit}:refs/heads/main")],
            case,
        );
    };
    hand_made(
        &format!("Agent <{}@example.invalid>", token()),
        "",
        "committer email",
    );
    hand_made(
        "Agent <agent@example.invalid>",
        &format!(
            "gpgsig -----BEGIN PGP SIGNATURE-----\n \n token = \"{}\"\n -----END PGP SIGNATURE-----\n",
            token()
        ),
        "gpgsig header",
    );

    // The token as an annotated tag's tagger (hand-made for the same reason).
    reset_to_main(&work, "main");
    let head = git_ok(&work, &["rev-parse", "HEAD"]);
    let tag_file = env.tmp.path().join("hand-made-tag");
    std::fs::write(
        &tag_file,
        format!(
            "object {head}\ntype commit\ntag tagger-tag\ntagger {} <a@example.invalid> 1700000000 +0000\n\nrelease\n",
            token()
        ),
    )
    .unwrap();
    let tag = git_ok(
        &work,
        &["hash-object", "-t", "tag", "-w", tag_file.to_str().unwrap()],
    );
    git_ok(&work, &["update-ref", "refs/tags/tagger-tag", &tag]);
    refuse(&["push", "origin", "refs/tags/tagger-tag"], "tagger");

    // None of it reached the upstream.
    let all = std::process::Command::new("git")
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .current_dir(&env.upstream)
        .output()
        .unwrap();
    assert!(all.status.success());
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(!all.is_empty());
    assert!(
        !all.contains(&token()),
        "an upstream object holds the token"
    );
}
