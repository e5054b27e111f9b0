//! Every manifest key, and every way to get one wrong: the shared `check` helpers and the
//! valid manifests here, bad bottles in `bad_bottle.rs`, bad agents in `bad_agent.rs`.

use std::path::Path;

use expect_test::{Expect, expect};

use super::*;

mod bad_agent;
mod bad_bottle;
mod route_vocabulary;

pub(super) const BOTTLE_FILE: &str = "/h/.claude-bottle/bottles/b.md";
pub(super) const AGENT_FILE: &str = "/h/.claude-bottle/agents/a.md";

/// Parses `yaml` as a bottle's frontmatter and checks the error (or `ok`).
pub(super) fn check_bottle(yaml: &str, expect: Expect) {
    let text = format!("---\n{yaml}---\nbody\n");
    let got = match parse_bottle(Path::new(BOTTLE_FILE), "b", &text) {
        Ok(_) => "ok".to_owned(),
        Err(e) => {
            let msg = e.to_string();
            assert_names_file_line_key(&msg, BOTTLE_FILE);
            msg
        }
    };
    expect.assert_eq(&got);
}

pub(super) fn check_agent(yaml: &str, expect: Expect) {
    let text = format!("---\n{yaml}---\nYou are a test agent.\n");
    let got = match parse_agent(Path::new(AGENT_FILE), "a", &text) {
        Ok(_) => "ok".to_owned(),
        Err(e) => {
            let msg = e.to_string();
            assert_names_file_line_key(&msg, AGENT_FILE);
            msg
        }
    };
    expect.assert_eq(&got);
}

/// Every error reads `FILE:LINE: `KEY`: …`.
fn assert_names_file_line_key(msg: &str, file: &str) {
    let rest = msg
        .strip_prefix(file)
        .unwrap_or_else(|| panic!("does not start with the file: {msg}"));
    let mut parts = rest.splitn(3, ": ");
    let line = parts.next().unwrap().trim_start_matches(':');
    assert!(line.parse::<u32>().unwrap() > 0, "no line: {msg}");
    let key = parts.next().unwrap();
    assert!(
        key.starts_with('`') && key.ends_with('`') && key.len() > 2,
        "no key: {msg}"
    );
}

#[test]
fn full_bottle_parses_every_key() {
    let text = "---
env:
  GIT_AUTHOR_NAME: alice
  RETRIES: 3
  GITEA_TOKEN: \"?paste your Gitea token\"
  GITHUB_TOKEN: \"${GH_PAT}\"
git:
  - Name: app
    Upstream: ssh://git@gitea.example.com:30009/alice/app.git
    IdentityFile: ~/.ssh/id_ed25519_gitea
    KnownHostKey: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\"
    ExtraHosts: {gitea.example.com: 100.64.0.7}
    AllowDelete: true
    MaxPushMB: 500
egress:
  routes:
    - host: api.github.com
      path_allowlist: [\"/repos/alice/\"]
      auth: {scheme: Bearer, token_ref: GH_PAT}
    - host: \"*.linear.app\"
    - host: api.example.com
      auth: {scheme: header, header: X-Api-Key, token_ref: EX_KEY}
  allow_private: [\"10.20.0.0/16\", \"fd12:3456:789a::/48\"]
  extra_ca: ~/certs/internal-ca.pem
  dlp: log
supervise: true
limits: {memory: 4g, pids: 2048, cpus: 1.5}
---
Docs.
";
    let b = parse_bottle(Path::new(BOTTLE_FILE), "b", text).unwrap();
    expect![[r#"
        Bottle {
            name: "b",
            file: "/h/.claude-bottle/bottles/b.md",
            env: [
                EnvVar {
                    name: "GIT_AUTHOR_NAME",
                    source: Literal(
                        Secret(<redacted>),
                    ),
                    line: 3,
                },
                EnvVar {
                    name: "RETRIES",
                    source: Literal(
                        Secret(<redacted>),
                    ),
                    line: 4,
                },
                EnvVar {
                    name: "GITEA_TOKEN",
                    source: Prompt(
                        "paste your Gitea token",
                    ),
                    line: 5,
                },
                EnvVar {
                    name: "GITHUB_TOKEN",
                    source: HostVar(
                        "GH_PAT",
                    ),
                    line: 6,
                },
            ],
            git: [
                GitRemote {
                    name: "app",
                    upstream: "ssh://git@gitea.example.com:30009/alice/app.git",
                    identity_file: "~/.ssh/id_ed25519_gitea",
                    identity_file_line: 10,
                    known_host_key: Some(
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
                    ),
                    extra_hosts: [
                        (
                            "gitea.example.com",
                            100.64.0.7,
                        ),
                    ],
                    allow_delete: true,
                    allow_force_push: false,
                    max_push_mb: Some(
                        500,
                    ),
                },
            ],
            routes: [
                Route {
                    host: RouteHost(
                        "api.github.com",
                    ),
                    path_allowlist: [
                        PathPrefix(
                            "/repos/alice/",
                        ),
                    ],
                    auth: Some(
                        RouteAuth {
                            scheme: Bearer,
                            token_ref: TokenRef(
                                "GH_PAT",
                            ),
                        },
                    ),
                },
                Route {
                    host: RouteHost(
                        "*.linear.app",
                    ),
                    path_allowlist: [],
                    auth: None,
                },
                Route {
                    host: RouteHost(
                        "api.example.com",
                    ),
                    path_allowlist: [],
                    auth: Some(
                        RouteAuth {
                            scheme: Header {
                                name: HeaderName(
                                    "x-api-key",
                                ),
                            },
                            token_ref: TokenRef(
                                "EX_KEY",
                            ),
                        },
                    ),
                },
            ],
            allow_private: [
                "10.20.0.0/16",
                "fd12:3456:789a::/48",
            ],
            extra_ca: Some(
                "~/certs/internal-ca.pem",
            ),
            extra_ca_line: 24,
            dlp: Log,
            supervise: true,
            limits: Limits {
                memory_bytes: Some(
                    4294967296,
                ),
                pids: Some(
                    2048,
                ),
                nano_cpus: Some(
                    1500000000,
                ),
            },
        }
    "#]]
    .assert_debug_eq(&b);
}

#[test]
fn literal_values_keep_their_text() {
    let b = parse_bottle(
        Path::new(BOTTLE_FILE),
        "b",
        "---\nenv:\n  A: alice\n  N: 3\n  T: true\n---\n",
    )
    .unwrap();
    let values: Vec<_> = b
        .env
        .iter()
        .map(|e| match &e.source {
            EnvSource::Literal(s) => s.expose().to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(values, ["alice", "3", "true"]);
}

#[test]
fn empty_bottle_is_valid_and_supervise_defaults_off() {
    let b = parse_bottle(Path::new(BOTTLE_FILE), "b", "---\n---\n").unwrap();
    assert!(!b.supervise);
    assert!(b.routes.is_empty() && b.env.is_empty() && b.git.is_empty());
}

#[test]
fn limits_parse_every_form() {
    let limits = |yaml: &str| {
        parse_bottle(Path::new(BOTTLE_FILE), "b", &format!("---\n{yaml}---\n"))
            .unwrap()
            .limits
    };
    assert_eq!(limits(""), Limits::default());
    assert_eq!(limits("limits: {}\n"), Limits::default());
    assert_eq!(
        limits("limits: {memory: 4g, pids: 2048, cpus: 2}\n"),
        Limits {
            memory_bytes: Some(4 << 30),
            pids: Some(2048),
            nano_cpus: Some(2_000_000_000),
        }
    );
    let mem = |text: &str| limits(&format!("limits: {{memory: {text}}}\n")).memory_bytes;
    assert_eq!(mem("65536k"), Some(64 << 20));
    assert_eq!(mem("512m"), Some(512 << 20));
    assert_eq!(mem("512M"), Some(512 << 20));
    assert_eq!(mem("\"1G\""), Some(1 << 30));
    let cpus = |text: &str| limits(&format!("limits: {{cpus: {text}}}\n")).nano_cpus;
    assert_eq!(cpus("0.5"), Some(500_000_000));
    assert_eq!(cpus("1.25"), Some(1_250_000_000));
    assert_eq!(cpus("0.1"), Some(100_000_000));
    assert_eq!(limits("limits: {pids: 32}\n").pids, Some(32));
}

#[test]
fn all_auth_schemes() {
    for (scheme, want) in [
        ("Bearer", AuthScheme::Bearer),
        ("token", AuthScheme::Token),
        ("Basic", AuthScheme::Basic),
    ] {
        let text = format!(
            "---\negress:\n  routes:\n    - host: a.test\n      auth: {{scheme: {scheme}, token_ref: T}}\n---\n"
        );
        let b = parse_bottle(Path::new(BOTTLE_FILE), "b", &text).unwrap();
        assert_eq!(b.routes[0].auth.as_ref().unwrap().scheme, want);
    }
}

#[test]
fn full_agent_parses_every_key() {
    let text = "---
bottle: example
skills: [review, rust-style]
command: [\"python3\", \"-m\", \"client\"]
name: reviewer
description: Reviews code
model: opus
tools: [Read, Grep]
color: blue
---
You review code.
";
    let a = parse_agent(Path::new(AGENT_FILE), "a", text).unwrap();
    expect![[r#"
        Agent {
            name: "a",
            file: "/h/.claude-bottle/agents/a.md",
            bottle: "example",
            bottle_line: 2,
            skills: [
                "review",
                "rust-style",
            ],
            command: Argv(
                [
                    "python3",
                    "-m",
                    "client",
                ],
            ),
            display_name: Some(
                "reviewer",
            ),
            description: Some(
                "Reviews code",
            ),
            model: Some(
                "opus",
            ),
            tools: [
                "Read",
                "Grep",
            ],
            color: Some(
                "blue",
            ),
            permission_mode: "bypassPermissions",
            prompt: "You review code.",
        }
    "#]]
    .assert_debug_eq(&a);
}

#[test]
fn agent_command_forms() {
    let parse = |yaml: &str| {
        parse_agent(Path::new(AGENT_FILE), "a", &format!("---\n{yaml}---\n"))
            .unwrap()
            .command
    };
    assert_eq!(parse("bottle: b\n"), AgentCommand::Claude);
    assert_eq!(
        parse("bottle: b\ncommand: curl -sS https://x.test\n"),
        AgentCommand::Shell("curl -sS https://x.test".into())
    );
    assert_eq!(
        parse("bottle: b\ntools: Read\n").clone(),
        AgentCommand::Claude
    );
}
