//! Plan building, the renderers' golden outputs, and the no-secret-leak guarantee.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use expect_test::{expect, expect_file};

use super::*;
use crate::manifest::validate::{parse_agent, parse_bottle};
use crate::render::bundle_config::{bundle_config, secrets_file, token_routes};
use crate::render::pipelock::pipelock_yaml;
use crate::render::plan_text::plan_text;
use crate::secrets::fake::FakeHost;
use crate::secrets::{resolve_env, resolve_tokens};

/// Secret values used in these tests; none may appear in any plan, config or message.
const SECRETS: &[(&str, &str)] = &[
    ("GH_PAT", "ghp_SECRET_github_0001"),
    ("LINEAR_KEY", "lin_SECRET_linear_0002"),
    (
        "CLAUDE_BOTTLE_OAUTH_TOKEN",
        "sk-ant-oat01-SECRET_claude_0003",
    ),
];
const LITERAL_SECRET: &str = "literal_SECRET_0004";
const PROMPT_ANSWER: &str = "typed_SECRET_0005";

pub(super) const FULL_BOTTLE: &str = "---
env:
  GIT_AUTHOR_NAME: alice
  PASTED: literal_SECRET_0004
  GITEA_TOKEN: \"?paste your Gitea token\"
  GITHUB_TOKEN: \"${GH_PAT}\"
git:
  - Name: app
    Upstream: ssh://git@gitea.example.com:30009/alice/app.git
    IdentityFile: ~/.ssh/id_ed25519_gitea
    KnownHostKey: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey\"
    ExtraHosts: {gitea.example.com: 100.64.0.7}
    AllowForcePush: true
  - Name: docs
    Upstream: ssh://git@gitea.example.com/alice/docs.git
    IdentityFile: /keys/docs
egress:
  routes:
    - host: api.github.com
      path_allowlist: [\"/repos/alice/\"]
      auth: {scheme: Bearer, token_ref: GH_PAT}
    - host: api.linear.app
      auth: {scheme: header, header: Authorization, token_ref: LINEAR_KEY}
    - host: \"*.npmjs.org\"
    - host: sentry.io
      path_allowlist: [\"/api/\"]
supervise: true
limits: {memory: 2g, pids: 512}
---
Team bottle.
";

const FULL_AGENT: &str = "---
bottle: dev
skills: [review]
model: opus
---
You are careful.
Line two.
";

fn loaded(agent_text: &str) -> Loaded {
    Loaded {
        agent: parse_agent(
            Path::new("/home/u/.claude-bottle/agents/coder.md"),
            "coder",
            agent_text,
        )
        .unwrap(),
        bottle: parse_bottle(
            Path::new("/home/u/.claude-bottle/bottles/dev.md"),
            "dev",
            FULL_BOTTLE,
        )
        .unwrap(),
        warnings: vec![],
    }
}

fn facts(vars: &[&str]) -> HostFacts {
    HostFacts {
        vars_set: vars
            .iter()
            .map(|v| (*v).to_owned())
            .collect::<BTreeSet<_>>(),
        runtime: Runtime::Runc,
        identity_suffix: "ab12c".into(),
        home: PathBuf::from("/home/u"),
        missing_paths: BTreeSet::new(),
        unusable_files: Vec::new(),
        claude: Ok(ClaudeSource::Native {
            path: PathBuf::from("/home/u/.cache/claude-bottle/claude/2.1.332/claude"),
            version: "2.1.332".into(),
        }),
        pipelock: Ok(None),
        engine_cpus: Some(8),
        bridge_gateways: Vec::new(),
    }
}

pub(crate) fn full_plan() -> Plan {
    build(
        &loaded(FULL_AGENT),
        &facts(&["GH_PAT", "LINEAR_KEY", "CLAUDE_BOTTLE_OAUTH_TOKEN"]),
    )
}

#[test]
fn plan_text_golden() {
    expect_file!["../tests/golden/plan.txt"].assert_eq(&plan_text(&full_plan()));
}

#[test]
fn plan_json_golden() {
    let json = serde_json::to_string_pretty(&full_plan()).unwrap();
    expect_file!["../tests/golden/plan.json"].assert_eq(&json);
}

#[test]
fn bundle_config_golden_direct() {
    let config = bundle_config(&full_plan());
    expect_file!["../tests/golden/bundle_config_direct.json"].assert_eq(&config.to_json());
    // What the launcher writes, the bundle reads: the contract's own parser accepts it.
    let back = bottle_contract::bundle_config::BundleConfig::from_json(&config.to_json()).unwrap();
    assert_eq!(back, config);
}

#[test]
fn bundle_config_golden_pipelock() {
    let config = bundle_config(&pipelock_plan());
    expect_file!["../tests/golden/bundle_config_pipelock.json"].assert_eq(&config.to_json());
    let back = bottle_contract::bundle_config::BundleConfig::from_json(&config.to_json()).unwrap();
    assert_eq!(back, config);
}

#[test]
fn pipelock_golden() {
    let yaml = pipelock_yaml(&full_plan()).unwrap();
    expect_file!["../tests/golden/pipelock.yaml"].assert_eq(&yaml);
}

#[test]
fn pipelock_yaml_is_valid_yaml_with_the_required_settings() {
    let yaml = pipelock_yaml(&full_plan()).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(doc["mode"], "strict");
    assert_eq!(doc["sentry"]["enabled"], false);
    assert_eq!(doc["forward_proxy"]["enabled"], true);
    assert_eq!(doc["fetch_proxy"]["listen"], "127.0.0.1:8888");
    let plan = full_plan();
    let hosts: Vec<&str> = plan.routes.iter().map(|r| r.host.as_str()).collect();
    let allow: Vec<&str> = doc["api_allowlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(allow, hosts);
    // Every host is intercepted (no passthrough); `egress.allow_private` is pipelock's SSRF
    // allowance.
    assert_eq!(
        doc["tls_interception"]["passthrough_domains"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["ssrf"]["ip_allowlist"],
        serde_json::json!(plan.allow_private)
    );
}

/// The full plan with pipelock found (`CLAUDE_BOTTLE_PIPELOCK_BIN`).
pub(crate) fn pipelock_plan() -> Plan {
    let mut plan = full_plan();
    plan.egress = EgressPlan::Pipelock {
        version: "2.4.1".into(),
        binary: "/home/u/bin/pipelock".into(),
    };
    plan
}

/// Without pipelock the plan says how to add it; with it, which one runs; an unusable one is
/// a warning and renders nothing (start refuses).
#[test]
fn the_plan_says_how_egress_leaves() {
    let line = |plan: &Plan| {
        plan_text(plan)
            .lines()
            .find(|l| l.starts_with("  egress "))
            .unwrap()
            .to_owned()
    };
    expect![[r#"  egress     direct (no pipelock; to add its allowlist and DLP behind the bundle, set CLAUDE_BOTTLE_PIPELOCK_BIN to a Linux pipelock executable: README "Pipelock")"#]]
        .assert_eq(&line(&full_plan()));
    expect!["  egress     via pipelock 2.4.1 (/home/u/bin/pipelock; its allowlist and DLP run behind the bundle)"]
        .assert_eq(&line(&pipelock_plan()));
    let l = loaded(FULL_AGENT);
    let mut f = facts(&[]);
    f.pipelock = Err("CLAUDE_BOTTLE_PIPELOCK_BIN: /x does not exist".into());
    let plan = build(&l, &f);
    assert!(line(&plan).contains("UNUSABLE (CLAUDE_BOTTLE_PIPELOCK_BIN: /x does not exist)"));
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.starts_with("pipelock cannot be used"))
    );
    let err = crate::render::bottle_files(&plan, &Default::default(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unset CLAUDE_BOTTLE_PIPELOCK_BIN to run without pipelock"),
        "{err}"
    );
    assert!(bundle_config(&full_plan()).pipelock.is_none());
}

#[test]
fn defaults_are_merged_and_the_manifest_wins() {
    let plan = full_plan();
    let hosts: Vec<(&str, RouteOrigin)> = plan
        .routes
        .iter()
        .map(|r| (r.host.as_str(), r.origin))
        .collect();
    expect![[r#"
        [
            (
                "api.github.com",
                Manifest,
            ),
            (
                "api.linear.app",
                Manifest,
            ),
            (
                "*.npmjs.org",
                Manifest,
            ),
            (
                "sentry.io",
                Manifest,
            ),
            (
                "api.anthropic.com",
                ClaudeCredential,
            ),
        ]
    "#]]
    .assert_debug_eq(&hosts);
    // sentry.io came from the manifest: its path rule holds, it is listed once.
    let sentry: Vec<_> = plan
        .routes
        .iter()
        .filter(|r| r.host == "sentry.io")
        .collect();
    assert_eq!(sentry.len(), 1);
    assert_eq!(sentry[0].path_allowlist, ["/api/"]);
    // Every default host is present exactly once.
    for host in DEFAULT_ROUTES {
        assert_eq!(
            plan.routes.iter().filter(|r| r.host == *host).count(),
            1,
            "{host}"
        );
    }
}

#[test]
fn manifest_route_for_the_claude_host_replaces_the_credential_route() {
    let mut l = loaded(FULL_AGENT);
    l.bottle.routes.push(crate::manifest::Route {
        host: "api.anthropic.com".parse().unwrap(),
        path_allowlist: vec!["/v1/messages".parse().unwrap()],
        auth: None,
    });
    let plan = build(&l, &facts(&["CLAUDE_BOTTLE_OAUTH_TOKEN"]));
    let r: Vec<_> = plan
        .routes
        .iter()
        .filter(|r| r.host == CLAUDE_API_HOST)
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].origin, RouteOrigin::Manifest);
    assert!(r[0].auth.is_none());
}

#[test]
fn claude_credential_unset_for_claude_is_kept_and_warned() {
    let plan = build(&loaded(FULL_AGENT), &facts(&["GH_PAT", "LINEAR_KEY"]));
    let r = plan
        .routes
        .iter()
        .find(|r| r.host == CLAUDE_API_HOST)
        .unwrap();
    let auth = r.auth.as_ref().unwrap();
    assert_eq!(auth.token, "CLAUDE_BOTTLE_OAUTH_TOKEN");
    assert!(!auth.token_set);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("`CLAUDE_BOTTLE_OAUTH_TOKEN` is not set")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn claude_credential_unset_with_own_command_passes_through() {
    let agent = "---\nbottle: dev\ncommand: [python3, client.py]\n---\n";
    let plan = build(&loaded(agent), &facts(&["GH_PAT", "LINEAR_KEY"]));
    let r = plan
        .routes
        .iter()
        .find(|r| r.host == CLAUDE_API_HOST)
        .unwrap();
    assert!(r.auth.is_none());
    assert_eq!(r.origin, RouteOrigin::BuiltIn);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("passes through without the Claude credential"))
    );
    // With the variable set, a custom command still gets the credential.
    let plan = build(&loaded(agent), &facts(&["CLAUDE_BOTTLE_OAUTH_TOKEN"]));
    let r = plan
        .routes
        .iter()
        .find(|r| r.host == CLAUDE_API_HOST)
        .unwrap();
    assert_eq!(r.origin, RouteOrigin::ClaudeCredential);
}

#[test]
fn unset_tokens_and_vars_are_warned_by_name() {
    let plan = build(&loaded(FULL_AGENT), &facts(&[]));
    let text = plan.warnings.join("\n");
    assert!(
        text.contains("route `api.github.com`: its token variable `GH_PAT` is not set"),
        "{text}"
    );
    assert!(
        text.contains("env `GITHUB_TOKEN`: host variable `GH_PAT` is not set"),
        "{text}"
    );
}

#[test]
fn identity_is_agent_dash_five_base36() {
    let plan = full_plan();
    assert_eq!(plan.identity, "coder-ab12c");
    let s = identity_suffix([0, 35, 36, 255, 100]);
    assert_eq!(s, "0z03s");
    assert_eq!(s.len(), IDENTITY_SUFFIX_LEN);
    assert!(
        s.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
}

#[test]
fn git_without_host_key_refuses_push_and_keys_are_expanded() {
    let plan = full_plan();
    assert_eq!(plan.git[0].identity_file, "/home/u/.ssh/id_ed25519_gitea");
    assert!(plan.git[0].push.starts_with("scanned"));
    assert!(
        plan.git[1].push.starts_with("refused"),
        "{}",
        plan.git[1].push
    );
    let config = bundle_config(&plan);
    assert_eq!(config.gate.remotes[1].known_host_key, None);
    assert_eq!(config.gate.remotes[0].identity_file, "/etc/bottle/keys/app");
}

#[test]
fn roles_follow_the_bottle() {
    let mut l = loaded(FULL_AGENT);
    l.bottle.git.clear();
    l.bottle.supervise = false;
    let config = bundle_config(&build(&l, &facts(&[])));
    assert_eq!(
        config.roles,
        vec![bottle_contract::bundle_config::Role::Proxy]
    );
    assert!(config.supervise.is_none());
}

/// The guarantee: resolve everything with real values, then render every output the launcher
/// produces and every error it can raise; no value appears anywhere.
#[test]
fn no_secret_value_in_plan_json_config_or_errors() {
    let l = loaded(FULL_AGENT);
    let host = FakeHost::new(SECRETS, true);
    host.answers.borrow_mut().push(PROMPT_ANSWER.into());
    let plan = build(
        &l,
        &facts(&["GH_PAT", "LINEAR_KEY", "CLAUDE_BOTTLE_OAUTH_TOKEN"]),
    );
    let env = resolve_env(&l.bottle, &host).unwrap();
    let tokens = resolve_tokens(&token_routes(&plan), &host).unwrap();
    let secrets = secrets_file(&tokens, &env.secret_values());

    // The values did resolve (so the checks below are not vacuous).
    assert_eq!(tokens["GH_PAT"].expose(), "ghp_SECRET_github_0001");
    assert_eq!(secrets.tokens.len(), 3);
    // The prompted and host-read env values reach the secrets file (for the proxy to keep
    // them in); the manifest's literal does not.
    let env_values: Vec<&str> = secrets.env.values().map(|v| v.expose()).collect();
    assert!(
        env_values.contains(&PROMPT_ANSWER),
        "{:?}",
        secrets.env.keys()
    );
    assert!(!env_values.contains(&LITERAL_SECRET));
    assert!(env.vars.iter().any(|(_, v)| v.expose() == PROMPT_ANSWER));
    assert!(env.vars.iter().any(|(_, v)| v.expose() == LITERAL_SECRET));

    let mut outputs = vec![
        plan_text(&plan),
        serde_json::to_string(&plan).unwrap(),
        format!("{plan:?}"),
        bundle_config(&plan).to_json(),
        bundle_config(&{
            let mut p = plan.clone();
            p.egress = pipelock_plan().egress;
            p
        })
        .to_json(),
        pipelock_yaml(&plan).unwrap(),
        format!("{l:?}"),
        format!("{env:?}"),
        format!("{tokens:?}"),
        format!("{secrets:?}"),
    ];
    // Errors raised while other secrets are present.
    let missing = FakeHost::new(&SECRETS[..1], false);
    outputs.push(resolve_env(&l.bottle, &missing).unwrap_err().to_string());
    outputs.push(
        resolve_tokens(&token_routes(&plan), &missing)
            .unwrap_err()
            .to_string(),
    );
    let bad = FULL_BOTTLE.replace("supervise: true", "supervise: literal_SECRET_0004");
    outputs.push(
        parse_bottle(Path::new("/b.md"), "b", &bad)
            .unwrap_err()
            .to_string(),
    );
    let bad = FULL_BOTTLE.replace(
        "GIT_AUTHOR_NAME: alice",
        "GIT_AUTHOR_NAME: [literal_SECRET_0004",
    );
    outputs.push(
        parse_bottle(Path::new("/b.md"), "b", &bad)
            .unwrap_err()
            .to_string(),
    );

    let values: Vec<&str> = SECRETS
        .iter()
        .map(|(_, v)| *v)
        .chain([LITERAL_SECRET, PROMPT_ANSWER])
        .collect();
    for out in &outputs {
        for v in &values {
            assert!(!out.contains(v), "secret {v} leaked into:\n{out}");
        }
        assert!(!out.contains("SECRET_"), "a secret leaked into:\n{out}");
    }
}

#[test]
fn env_copy_of_a_route_token_is_warned() {
    let plan = full_plan();
    let text = plan.warnings.join("\n");
    assert!(
        text.contains("env `GITHUB_TOKEN` copies `GH_PAT`, the token of route `api.github.com`: the agent will hold that credential itself"),
        "{text}"
    );
    // The other warning is the unpinned `docs` remote's.
    assert_eq!(plan.warnings.len(), 2, "{text}");
}

#[test]
fn an_unpinned_remote_is_warned_with_the_command_that_prints_its_key() {
    let text = full_plan().warnings.join("\n");
    assert!(
        text.contains("git remote `docs` has no KnownHostKey, so the gate will neither fetch nor push it; pin the upstream's key, e.g. the output of `ssh-keyscan -t ed25519 gitea.example.com`"),
        "{text}"
    );
    assert!(!text.contains("remote `app`"), "{text}");
    assert_eq!(
        crate::manifest::keyscan_command("ssh://git@h.example:2222/a.git"),
        "ssh-keyscan -p 2222 -t ed25519 h.example"
    );
}

#[test]
fn missing_skills_and_keys_are_warned() {
    let mut f = facts(&["GH_PAT", "LINEAR_KEY", "CLAUDE_BOTTLE_OAUTH_TOKEN"]);
    f.missing_paths = host_paths(&loaded(FULL_AGENT), &f.home);
    assert_eq!(
        f.missing_paths.iter().collect::<Vec<_>>(),
        [
            "/home/u/.claude/skills/review",
            "/home/u/.ssh/id_ed25519_gitea",
            "/keys/docs"
        ]
    );
    let plan = build(&loaded(FULL_AGENT), &f);
    let text = plan.warnings.join("\n");
    assert!(
        text.contains("skill `review`: /home/u/.claude/skills/review does not exist"),
        "{text}"
    );
    assert!(
        text.contains("git remote `docs`: IdentityFile /keys/docs does not exist"),
        "{text}"
    );
}

#[test]
fn unusable_host_files_are_warned_so_a_dry_run_shows_them() {
    let mut f = facts(&["GH_PAT", "LINEAR_KEY", "CLAUDE_BOTTLE_OAUTH_TOKEN"]);
    f.unusable_files = vec!["b.md:9: `egress.extra_ca`: /dev/zero is a character device".into()];
    let plan = build(&loaded(FULL_AGENT), &f);
    assert!(
        plan.warnings.contains(
            &"b.md:9: `egress.extra_ca`: /dev/zero is a character device; start will refuse until it is fixed"
                .to_owned()
        ),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn approved_routes_are_added_replace_the_same_host_and_render_with_their_slot() {
    use bottle_contract::bundle_config::RouteConfig;
    use bottle_contract::route::{AuthScheme as Wire, RouteAuth};
    let approved = [
        RouteConfig {
            host: "docs.rs".parse().unwrap(),
            port: None,
            path_allowlist: vec!["/crate/".parse().unwrap()],
            auth: None,
        },
        RouteConfig {
            host: "api.github.com".parse().unwrap(),
            port: None,
            path_allowlist: vec![],
            auth: Some(RouteAuth {
                scheme: Wire::Header {
                    name: "x-api-key".parse().unwrap(),
                },
                token_ref: "DOCS_KEY".parse().unwrap(),
            }),
        },
    ];
    let before = full_plan().routes.len();
    // The live routes hold every route: those the plan already has change nothing.
    let unchanged = bundle_config(&full_plan()).proxy.routes;
    let same = with_approved_routes(full_plan(), &unchanged, &BTreeSet::new());
    assert_eq!(plan_text(&same), plan_text(&full_plan()));
    let plan = with_approved_routes(full_plan(), &approved, &BTreeSet::from(["DOCS_KEY".into()]));
    assert_eq!(
        plan.routes.len(),
        before + 1,
        "api.github.com replaced, docs.rs added"
    );
    let github: Vec<_> = plan
        .routes
        .iter()
        .filter(|r| r.host == "api.github.com")
        .collect();
    assert_eq!(github.len(), 1);
    assert_eq!(github[0].origin, RouteOrigin::Approved);
    let auth = github[0].auth.as_ref().unwrap();
    assert_eq!((auth.token.as_str(), auth.token_set), ("DOCS_KEY", true));
    assert!(plan_text(&plan).contains("docs.rs"));
    assert!(plan_text(&plan).contains("[approved through supervise]"));
    let config = bundle_config(&plan);
    let docs = config
        .proxy
        .routes
        .iter()
        .find(|r| r.host == "docs.rs")
        .unwrap();
    assert_eq!(docs.path_allowlist, ["/crate/"]);
    assert!(token_routes(&plan).contains(&("api.github.com".into(), "DOCS_KEY".into())));
}

fn plan_with_limits(limits_yaml: &str, engine_cpus: Option<u32>) -> Plan {
    let mut loaded = loaded(FULL_AGENT);
    loaded.bottle = parse_bottle(
        Path::new("/home/u/.claude-bottle/bottles/dev.md"),
        "dev",
        &format!("---\n{limits_yaml}---\n"),
    )
    .unwrap();
    let mut facts = facts(&["CLAUDE_BOTTLE_OAUTH_TOKEN"]);
    facts.engine_cpus = engine_cpus;
    build(&loaded, &facts)
}

#[test]
fn limits_default_for_the_agent_and_are_fixed_for_the_bundle() {
    let plan = plan_with_limits("", Some(8));
    assert_eq!(plan.limits.agent, AGENT_DEFAULT_LIMITS);
    assert_eq!(plan.limits.bundle, BUNDLE_LIMITS);
    assert_eq!(plan.limits.agent_defaults, ["memory", "pids", "cpus"]);
    // Every container is capped: no limit is zero (Docker's "unlimited").
    for limits in [plan.limits.agent, plan.limits.bundle] {
        assert!(limits.memory_bytes > 0 && limits.pids > 0 && limits.nano_cpus > 0);
    }
    let set = plan_with_limits("limits: {memory: 128m, pids: 64, cpus: 0.5}\n", Some(8));
    assert_eq!(
        set.limits.agent,
        ContainerLimits {
            memory_bytes: 128 << 20,
            pids: 64,
            nano_cpus: 500_000_000,
        }
    );
    assert!(set.limits.agent_defaults.is_empty());
    assert_eq!(
        set.limits.bundle, BUNDLE_LIMITS,
        "the bottle cannot move the bundle's"
    );
}

#[test]
fn cpus_above_the_engines_are_lowered_with_a_warning_only_when_asked_for() {
    let asked = plan_with_limits("limits: {cpus: 4}\n", Some(2));
    assert_eq!(asked.limits.agent.nano_cpus, 2_000_000_000);
    assert!(
        asked
            .warnings
            .iter()
            .any(|w| w == "limits.cpus 4 is more than the engine's 2 CPUs; the agent gets 2"),
        "{:?}",
        asked.warnings
    );
    // The default on a one-CPU engine is lowered quietly.
    let default = plan_with_limits("", Some(1));
    assert_eq!(default.limits.agent.nano_cpus, 1_000_000_000);
    assert!(!default.warnings.iter().any(|w| w.contains("limits")));
    // An engine that could not be asked: the value as written (start needs the engine anyway).
    let unknown = plan_with_limits("limits: {cpus: 4}\n", None);
    assert_eq!(unknown.limits.agent.nano_cpus, 4_000_000_000);
}

#[test]
fn cpus_are_shown_as_written() {
    assert_eq!(cpus_text(2_000_000_000), "2");
    assert_eq!(cpus_text(500_000_000), "0.5");
    assert_eq!(cpus_text(1_250_000_000), "1.25");
    assert_eq!(cpus_text(100_000_000), "0.1");
}

#[test]
fn allow_private_over_a_bridge_gateway_is_warned() {
    let mut loaded = loaded(FULL_AGENT);
    let block = "172.16.0.0/12".to_owned();
    loaded.bottle.allow_private = vec!["10.20.0.0/16".into(), block.clone()];
    let mut facts = facts(&[]);
    let inside: std::net::IpAddr = "172.18.0.1".parse().unwrap();
    facts.bridge_gateways = vec!["192.168.5.1".parse().unwrap(), "fd00::1".parse().unwrap()];
    let plan = build(&loaded, &facts);
    assert!(
        !plan.warnings.iter().any(|w| w.contains("Docker bridge")),
        "{:?}",
        plan.warnings
    );
    facts.bridge_gateways = vec!["192.168.5.1".parse().unwrap(), inside];
    let plan = build(&loaded, &facts);
    let warned: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("Docker bridge"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", plan.warnings);
    assert!(warned[0].contains(&block) && warned[0].contains(&inside.to_string()));
}
