//! The agent image as a user meets it: Python packages install with pip as the agent's user
//! through the example bottle's PyPI routes, and a base image that is not on the machine fails
//! with the command that builds it, before anything is created.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::net::{IpAddr, ToSocketAddrs};

use e2e::{Home, docker};

/// The example bottle's PyPI hosts.
const PYPI_HOSTS: &[&str] = &["pypi.org", "files.pythonhosted.org"];

/// Whether the bundle counts `ip` as private or special (and so needs `allow_private`).
fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
                || (a, b, c) == (192, 0, 2)
                || (a, b, c) == (198, 51, 100)
                || (a, b, c) == (203, 0, 113)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => !matches!(v6.segments()[0], 0x2000..=0x3fff),
    }
}

/// The `egress` additions this machine needs to reach PyPI the way its host does: on a
/// machine behind an intercepting proxy (this build machine's is one), the host's whole trust
/// store as `extra_ca` and the proxy's addresses in `allow_private`, as the README tells a
/// user behind a corporate proxy to write.
fn pypi_egress_lines() -> String {
    let mut private: Vec<String> = PYPI_HOSTS
        .iter()
        .flat_map(|h| (*h, 443).to_socket_addrs().unwrap())
        .map(|a| a.ip())
        .filter(|ip| special(*ip))
        .map(|ip| match ip {
            IpAddr::V4(_) => format!("\"{ip}/32\""),
            IpAddr::V6(_) => format!("\"{ip}/128\""),
        })
        .collect();
    private.sort();
    private.dedup();
    let mut lines = String::from("  extra_ca: /etc/ssl/certs/ca-certificates.crt\n");
    if !private.is_empty() {
        lines.push_str(&format!("  allow_private: [{}]\n", private.join(", ")));
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_installs_a_package_as_the_agents_user_through_the_example_routes() {
    let home = Home::new();
    let example = include_str!("../examples/bottles/example.md");
    // The example bottle as shipped, plus what this machine's network needs.
    let bottle = example.replacen(
        "supervise: true\n",
        &format!("{}supervise: false\n", pypi_egress_lines()),
        1,
    );
    assert!(bottle.contains("- host: pypi.org\n    - host: files.pythonhosted.org\n"));
    home.write("bottles", "example", &bottle);
    home.write(
        "agents",
        "py",
        "---\nbottle: example\ncommand: \"sleep 100000\"\n---\n",
    );
    let bottle = home.start_detached("py");
    let out = bottle.sh(
        "whoami && command -v pip && pip install --no-cache-dir --disable-pip-version-check -q iniconfig==2.0.0 \
         && python3 -c 'import iniconfig; print(iniconfig.__file__)'",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "agent", "{stdout}");
    assert_eq!(lines[1], "/home/agent/.venv/bin/pip", "{stdout}");
    assert!(
        lines[2].starts_with("/home/agent/.venv/lib/python3")
            && lines[2].ends_with("iniconfig/__init__.py"),
        "{stdout}"
    );
    // The system's packages stay importable beside the agent's own.
    bottle.sh_ok("python3 -c 'import requests'");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_base_image_names_the_script_that_builds_it_and_creates_nothing() {
    let mut home = Home::new();
    home.env.insert(
        "CLAUDE_BOTTLE_BASE_IMAGE".into(),
        "claude-bottle-test-absent:none".into(),
    );
    home.write("bottles", "b", "---\negress:\n  routes: []\n---\n");
    home.write("agents", "a", "---\nbottle: b\ncommand: \"true\"\n---\n");
    let out = home.run(&["start", "a", "-y", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "the base image claude-bottle-test-absent:none is not on this machine and the engine could not fetch it"
        ) && stderr.contains("run `scripts/base-image`")
            && stderr.contains("CLAUDE_BOTTLE_BASE_IMAGE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("\u{1b}["),
        "raw terminal escapes: {stderr:?}"
    );
    assert!(
        std::fs::read_dir(home.root().join("state"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "a bottle's state was left behind"
    );
    let docker = docker().await;
    let containers = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .build(),
        ))
        .await
        .unwrap();
    let home_label = home.dir.path().display().to_string();
    assert!(
        !containers.iter().any(|c| c
            .labels
            .as_ref()
            .is_some_and(|l| l.values().any(|v| v.contains(&home_label)))),
        "a container of this home was created"
    );
}
