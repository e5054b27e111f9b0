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
