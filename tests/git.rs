//! Real git clients in a real bottle, through the gate to a real sshd container: a partial
//! clone stays partial and fetches its blobs on demand, and a push over the remote's
//! `MaxPushMB` is refused with the limit and the key that raises it. The bundle image holds no
//! SSH client: the gate reaches the upstream with its own (russh).

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use e2e::{Home, SshKeys, container_sh, docker, start_git_upstream};

const GIT: &str = "git -c user.name=a -c user.email=a@a.test";

#[tokio::test(flavor = "multi_thread")]
async fn partial_clone_and_an_over_the_limit_push_through_the_gate() {
    let home = Home::new();
    let keys = SshKeys::new();
    home.write(
        "bottles",
        "coder",
        &format!(
            "---\ngit:\n  - Name: app\n    Upstream: ssh://root@gitup.test/srv/app.git\n    \
             IdentityFile: {key}\n    KnownHostKey: \"{pin}\"\n    MaxPushMB: 1\n\
             egress:\n  routes: []\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n---\n",
            key = keys.client_key.display(),
            pin = keys.host_pub,
        ),
    );
    home.write(
        "agents",
        "coder",
        "---\nbottle: coder\ncommand: \"sleep 100000\"\n---\n",
    );
    let plan = home.run(&["start", "coder", "--dry-run"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("up to 1 MiB (MaxPushMB)"), "{plan}");

    let bottle = home.start_detached("coder");
    let docker = docker().await;
    // The bundle image has no SSH client: the gate's upstream leg is `bottle-bundle ssh`.
    let bundle = format!("claude-bottle-{}-bundle", bottle.id);
    let ssh = container_sh(&docker, &bundle, "command -v ssh scp sftp || echo none").await;
    assert_eq!(
        ssh.trim(),
        "none",
        "the bundle image has an SSH client: {ssh}"
    );
    let upstream =
        start_git_upstream(&docker, &bottle.id, &bottle.network(), "gitup.test", &keys).await;
    let logins = || async {
        container_sh(
            &docker,
            &upstream,
            "grep -c 'Accepted publickey' /var/log/sshd.log || true",
        )
        .await
        .trim()
        .parse::<u32>()
        .unwrap_or(0)
    };

    // A second file upstream, so the partial clone has more than one blob to leave out.
    let clone = bottle.sh_ok(&format!(
        "cd /tmp && for i in $(seq 30); do git clone -q ssh://root@gitup.test/srv/app.git full 2>/tmp/clone.err && break; sleep 1; done; \
         cd full && seq 1 20000 > numbers.txt && git add numbers.txt && {GIT} commit -qm numbers && git push -q origin main && echo pushed"
    ));
    assert!(clone.contains("pushed"), "{clone}");

    // --- git clone --filter=blob:none: partial, blobs on demand, the gate refreshing first. ---
    let out = bottle.sh(
        "cd /tmp && git clone --filter=blob:none --no-checkout ssh://root@gitup.test/srv/app.git partial && \
         git -C partial config remote.origin.partialclonefilter && \
         git -C partial rev-list --objects --missing=print --all | grep -c '^?'",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("filtering not recognized"), "{stderr}");
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["blob:none", "2"],
        "{stderr}"
    );
    let before = logins().await;
    let numbers = bottle.sh_ok("cd /tmp/partial && git checkout -q main && wc -l < numbers.txt");
    assert_eq!(numbers.trim(), "20000");
    assert!(
        logins().await > before,
        "the on-demand blob fetch did not refresh from the upstream"
    );

    // --- A push over MaxPushMB: git's message, then the gate's limit and key. ---
    let upstream_main =
        || async { container_sh(&docker, &upstream, "git -C /srv/app.git rev-parse main").await };
    let head = upstream_main().await;
    let push = bottle.sh(&format!(
        "cd /tmp/full && head -c 3000000 /dev/urandom > big.bin && git add big.bin && \
         {GIT} commit -qm big && git push origin main"
    ));
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(
        !push.status.success(),
        "an over-the-limit push was accepted:\n{err}"
    );
    assert!(err.contains("pack exceeds maximum allowed size"), "{err}");
    assert!(
        err.contains("bottle gate: pushes to `app` may be at most 1 MiB")
            && err.contains("`MaxPushMB` on the `app` git entry"),
        "the refusal does not name the limit and its key:\n{err}"
    );
    assert_eq!(upstream_main().await, head, "the upstream moved");
}
