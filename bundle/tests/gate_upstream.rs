//! The gate against an upstream that is down, presents the wrong host key, is not pinned, or
//! refuses the push: the agent's fetch or push fails with a clear message, the gate never
//! serves stale data, and the gate's refs never run ahead of the upstream.

#[path = "support/gate_env.rs"]
mod gate_env;
#[path = "support/sshd.rs"]
mod sshd;

use gate_env::{GateEnv, Options, Pin, commit_file, git, git_ok, refs_snapshot, stderr};

#[test]
fn fetch_fails_while_the_upstream_is_down_and_works_again_after() {
    let mut env = GateEnv::start(Options::default());
    let work = env.clone_work("work");

    env.sshd.stop();
    let out = git(&work, &["fetch", "origin"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "fetch succeeded with the upstream down:\n{err}"
    );
    assert!(
        err.contains("remote error: bottle gate: cannot refresh app from its upstream: the upstream is unreachable"),
        "{err}"
    );
    let out = git(env.tmp.path(), &["ls-remote", &env.url()]);
    assert!(
        !out.status.success(),
        "ls-remote served stale refs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = git(env.tmp.path(), &["clone", &env.url(), "second"]);
    assert!(!out.status.success(), "clone served stale data");

    env.sshd.resume();
    // A commit that reached the upstream meanwhile is served after the refresh.
    let direct = env.tmp.path().join("direct");
    let out = env.direct_git(
        env.tmp.path(),
        &["clone", "--quiet", &env.direct_url(), &gate_env::s(&direct)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let head = commit_file(&direct, "new.txt", "new\n", "direct");
    let out = env.direct_git(&direct, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = git(&work, &["fetch", "origin"]);
    assert!(
        out.status.success(),
        "fetch after restart: {}\n{}",
        stderr(&out),
        env.gate_log()
    );
    assert_eq!(git_ok(&work, &["rev-parse", "origin/main"]), head);
}

#[test]
fn a_wrong_host_key_pin_refuses_fetch_and_push_and_leaves_the_upstream_unchanged() {
    let env = GateEnv::start(Options {
        pin: Pin::Wrong,
        ..Options::default()
    });
    let out = git(env.tmp.path(), &["clone", &env.url(), "work"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("does not match the pinned `KnownHostKey`"),
        "{err}"
    );

    // Push from a clone of the upstream made directly: the gate must refuse to forward it.
    let work = env.tmp.path().join("work");
    let out = env.direct_git(
        env.tmp.path(),
        &["clone", "--quiet", &env.direct_url(), &gate_env::s(&work)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    commit_file(&work, "x.txt", "x\n", "x");
    let upstream = refs_snapshot(&env.upstream);
    let auths = env.sshd.log().matches("Accepted publickey").count();
    let out = git(&work, &["push", &env.url(), "main"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "push forwarded despite a wrong pin:\n{err}"
    );
    assert!(
        err.contains("does not match the pinned `KnownHostKey`"),
        "{err}"
    );
    assert_eq!(refs_snapshot(&env.upstream), upstream);
    assert_eq!(
        env.sshd.log().matches("Accepted publickey").count(),
        auths,
        "the gate authenticated to a host with the wrong key"
    );
    // The operator's logs have ssh's own words (the refresh in the gate's stderr, the
    // forward in the hook log).
    let log = env.gate_log();
    assert_eq!(
        log.matches("Host key verification failed").count(),
        2,
        "{log}"
    );
    // The gate's mirror did not take the refs either.
    let mirror = git(
        &env.mirror(),
        &["rev-parse", "--verify", "--quiet", "refs/heads/main"],
    );
    assert!(!mirror.status.success(), "the gate's refs moved");
}

#[test]
fn a_missing_pin_refuses_with_a_clear_message_and_no_connection() {
    let env = GateEnv::start(Options {
        pin: Pin::Missing,
        ..Options::default()
    });
    let out = git(env.tmp.path(), &["clone", &env.url(), "work"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("no host key is pinned for this remote"),
        "{err}"
    );
    assert!(err.contains("KnownHostKey"), "{err}");
    assert!(
        err.contains("`ssh-keyscan -p PORT -t ed25519 HOST`"),
        "{err}"
    );

    let work = env.tmp.path().join("work");
    let out = env.direct_git(
        env.tmp.path(),
        &["clone", "--quiet", &env.direct_url(), &gate_env::s(&work)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    commit_file(&work, "x.txt", "x\n", "x");
    let before = env.sshd.connections();
    let upstream = refs_snapshot(&env.upstream);
    let out = git(&work, &["push", &env.url(), "main"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no host key is pinned for this remote"),
        "{err}"
    );
    assert_eq!(refs_snapshot(&env.upstream), upstream);
    assert_eq!(
        env.sshd.connections(),
        before,
        "the upstream was contacted without a pin"
    );
}

#[test]
fn an_upstream_that_moved_ahead_rejects_and_the_gate_refs_stay() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");

    // Someone pushes to the upstream directly.
    let direct = env.tmp.path().join("direct");
    let out = env.direct_git(
        env.tmp.path(),
        &["clone", "--quiet", &env.direct_url(), &gate_env::s(&direct)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    commit_file(&direct, "theirs.txt", "theirs\n", "theirs");
    let out = env.direct_git(&direct, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The agent pushes on top of what it fetched earlier.
    commit_file(&work, "ours.txt", "ours\n", "ours");
    let upstream = refs_snapshot(&env.upstream);
    let mirror = refs_snapshot(&env.mirror());
    let out = git(&work, &["push", "origin", "main"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "push over a moved upstream succeeded:\n{err}"
    );
    assert!(err.contains("the upstream rejected the push"), "{err}");
    assert!(err.contains("refs/heads/main: [rejected]"), "{err}");
    assert_eq!(refs_snapshot(&env.upstream), upstream);
    assert_eq!(
        refs_snapshot(&env.mirror()),
        mirror,
        "the gate's refs moved"
    );
}

#[test]
fn an_upstream_hook_rejection_fails_the_push_with_its_message() {
    let env = GateEnv::start(Options::default());
    let hook = env.upstream.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/protected ]; then\n    echo \"protected branch: $ref may not be pushed\" >&2\n    exit 1\n  fi\ndone\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let work = env.clone_work("work");
    git_ok(&work, &["checkout", "--quiet", "-b", "protected"]);
    commit_file(&work, "p.txt", "p\n", "p");
    let upstream = refs_snapshot(&env.upstream);
    let mirror = refs_snapshot(&env.mirror());
    // Atomic: the allowed branch in the same push does not land either.
    git_ok(&work, &["branch", "other"]);
    let out = git(&work, &["push", "origin", "protected", "other"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("upstream: protected branch: refs/heads/protected may not be pushed"),
        "{err}"
    );
    assert_eq!(refs_snapshot(&env.upstream), upstream);
    assert_eq!(
        refs_snapshot(&env.mirror()),
        mirror,
        "the gate's refs moved"
    );

    // The unprotected branch alone goes through.
    let out = git(&work, &["push", "origin", "other"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A fetch that arrives while a push is being forwarded waits for it, then sees the pushed
/// commit: refresh and receive never interleave (an interleaved refresh would move the ref
/// under receive-pack and fail a push the upstream already took).
#[test]
fn a_fetch_during_a_push_waits_for_it_and_sees_its_result() {
    let env = GateEnv::start(Options::default());
    let hook = env.upstream.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncat >/dev/null\ntouch hook-running\nsleep 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pusher = env.clone_work("pusher");
    let fetcher = env.clone_work("fetcher");
    let head = commit_file(&pusher, "p.txt", "p\n", "pushed");

    let push = std::thread::spawn(move || git(&pusher, &["push", "origin", "main"]));
    // Wait until the upstream's hook is running, i.e. the push is being forwarded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !env.upstream.join("hook-running").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "push never reached the upstream"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = git(&fetcher, &["fetch", "origin"]);
    assert!(out.status.success(), "fetch: {}", stderr(&out));
    let pushed = push.join().unwrap();
    assert!(
        pushed.status.success(),
        "push: {}\n{}",
        stderr(&pushed),
        env.gate_log()
    );
    assert_eq!(git_ok(&fetcher, &["rev-parse", "origin/main"]), head);
}

/// The upstream's name resolves nowhere here: only the `extra_hosts` entry makes it reachable
/// (every other test relies on it), and without it the fetch is refused, not served stale.
#[test]
fn extra_hosts_is_what_reaches_the_upstream() {
    let env = GateEnv::start(Options {
        extra_hosts: false,
        ..Options::default()
    });
    let before = env.sshd.connections();
    let out = git(env.tmp.path(), &["clone", &env.url(), "work"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the upstream is unreachable"), "{err}");
    assert_eq!(env.sshd.connections(), before);
}

/// The upstream takes the push but answers after the gate's time limit (its post-receive hook
/// is slow): the gate asks the upstream, finds every ref where the push put it, and reports
/// the push as the success it is, instead of "nothing was pushed".
#[test]
fn a_push_the_upstream_took_after_the_time_limit_is_reported_as_landed() {
    let env = GateEnv::start(Options {
        push_timeout_secs: 4,
        ..Options::default()
    });
    env.upstream_hook(
        "post-receive",
        &format!("#!/bin/sh\ncat >/dev/null\n{}\n", env.wait_for_release()),
    );
    let work = env.clone_work("work");
    let head = commit_file(&work, "a.txt", "a\n", "a");
    git_ok(&work, &["tag", "-a", "-m", "release", "v1"]);
    let out = git(&work, &["push", "origin", "main", "v1"]);
    env.release();
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "push failed:\n{err}\n{}",
        env.gate_log()
    );
    assert!(err.contains("the upstream did not answer in time"), "{err}");
    assert!(
        err.contains("the upstream accepted refs/heads/main although the gate lost the reply"),
        "{err}"
    );
    assert!(
        err.contains("the upstream accepted refs/tags/v1 although the gate lost the reply"),
        "{err}"
    );
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/heads/main"]),
        head
    );
    assert_eq!(
        git_ok(&env.mirror(), &["rev-parse", "refs/heads/main"]),
        head
    );
    assert_eq!(
        git_ok(&env.mirror(), &["rev-parse", "refs/tags/v1"]),
        git_ok(&env.upstream, &["rev-parse", "refs/tags/v1"])
    );
}

/// The forward hangs and the upstream then refuses the gate's key for the check: the gate
/// says it could not tell, rather than claiming nothing was pushed.
#[test]
fn an_unclear_forward_the_gate_cannot_check_says_so() {
    let env = GateEnv::start(Options {
        push_timeout_secs: 3,
        ..Options::default()
    });
    let authorized_keys = env.tmp.path().join("sshd/authorized_keys");
    env.upstream_hook(
        "pre-receive",
        &format!(
            "#!/bin/sh\ncat >/dev/null\n: > '{}'\n{}\nexit 1\n",
            gate_env::s(&authorized_keys),
            env.wait_for_release()
        ),
    );
    let work = env.clone_work("work");
    commit_file(&work, "a.txt", "a\n", "a");
    let upstream = refs_snapshot(&env.upstream);
    let out = git(&work, &["push", "origin", "main"]);
    env.release();
    let err = stderr(&out);
    assert!(!out.status.success(), "push accepted:\n{err}");
    assert!(
        err.contains("refs/heads/main: could not be determined"),
        "{err}\n{}",
        env.gate_log()
    );
    assert!(
        err.contains("its copy could not be refreshed from the upstream"),
        "{err}"
    );
    assert!(!err.contains("nothing was pushed"), "{err}");
    assert_eq!(refs_snapshot(&env.upstream), upstream);
}

/// The upstream takes the push, then the gate's own ref update fails (as on a full disk; here
/// a stale lock file): the pusher was told the upstream accepted it, and the next fetch
/// brings the gate back in line with the upstream.
#[test]
fn a_failed_gate_ref_update_after_the_upstream_took_the_push_is_reported() {
    let env = GateEnv::start(Options::default());
    let lock = env.mirror().join("refs/heads/main.lock");
    env.upstream_hook(
        "post-receive",
        &format!("#!/bin/sh\ncat >/dev/null\n: > '{}'\n", gate_env::s(&lock)),
    );
    let work = env.clone_work("work");
    let head = commit_file(&work, "a.txt", "a\n", "a");
    let out = git(&work, &["push", "origin", "main"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "push accepted:\n{err}");
    assert!(
        err.contains("the upstream accepted refs/heads/main"),
        "{err}\n{}",
        env.gate_log()
    );
    assert_eq!(
        git_ok(&env.upstream, &["rev-parse", "refs/heads/main"]),
        head
    );

    std::fs::remove_file(&lock).unwrap();
    std::fs::remove_file(env.upstream.join("hooks/post-receive")).unwrap();
    let out = git(&work, &["fetch", "origin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(git_ok(&work, &["rev-parse", "origin/main"]), head);
    assert_eq!(
        git_ok(&env.mirror(), &["rev-parse", "refs/heads/main"]),
        head
    );
}

/// `git fetch` writes each new ref as a file of its own, and every push scan lists all refs
/// (`git rev-list --not --glob=refs/*`): the gate packs its mirror's refs after each refresh,
/// so a repository with many tags does not slow every push.
#[test]
fn the_mirror_keeps_its_refs_packed_after_a_refresh() {
    let env = GateEnv::start(Options::default());
    let refs: String = (0..300)
        .map(|i| format!("create refs/tags/t{i} refs/heads/main\n"))
        .collect();
    let mut update = std::process::Command::new("git")
        .args(["-C", &gate_env::s(&env.upstream), "update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    update
        .stdin
        .take()
        .unwrap()
        .write_all(refs.as_bytes())
        .unwrap();
    assert!(update.wait().unwrap().success());

    let work = env.clone_work("work");
    let tags = git_ok(&work, &["tag", "--list"]);
    assert_eq!(tags.lines().count(), 300, "the clone has every tag");
    let loose: Vec<_> = std::fs::read_dir(env.mirror().join("refs/tags"))
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        loose.is_empty(),
        "{} loose refs left in the mirror, e.g. {:?}",
        loose.len(),
        loose.first()
    );
    let packed = std::fs::read_to_string(env.mirror().join("packed-refs")).unwrap();
    assert_eq!(packed.matches(" refs/tags/t").count(), 300);
}
