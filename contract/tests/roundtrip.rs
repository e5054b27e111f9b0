//! Golden round trip of the wire format: a change here is a contract change.
#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use bottle_contract::SCHEMA_VERSION;
use bottle_contract::bundle_config::*;
use bottle_contract::route::{AuthScheme, RouteAuth};

fn full_config() -> BundleConfig {
    BundleConfig {
        schema_version: SCHEMA_VERSION,
        identity: "dev-ab12c".into(),
        roles: vec![Role::Proxy, Role::Gate, Role::Mcp],
        proxy: ProxyConfig {
            listen: Listen {
                tcp: Some("0.0.0.0:9099".into()),
                unix: Some("/run/bottle/sock/proxy.sock".into()),
            },
            ca_cert: "/etc/bottle/ca.pem".into(),
            ca_key: "/etc/bottle/ca-key.pem".into(),
            routes: vec![
                RouteConfig {
                    host: "api.github.com".parse().unwrap(),
                    port: None,
                    path_allowlist: vec!["/repos/alice/".parse().unwrap()],
                    auth: Some(RouteAuth {
                        scheme: AuthScheme::Bearer,
                        token_ref: "GH_PAT".parse().unwrap(),
                    }),
                },
                RouteConfig {
                    host: "api.anthropic.com".parse().unwrap(),
                    port: None,
                    path_allowlist: vec![],
                    auth: Some(RouteAuth {
                        scheme: AuthScheme::Header {
                            name: "x-api-key".parse().unwrap(),
                        },
                        token_ref: "CLAUDE_BOTTLE_OAUTH_TOKEN".parse().unwrap(),
                    }),
                },
                RouteConfig {
                    host: "*.linear.app".parse().unwrap(),
                    port: None,
                    path_allowlist: vec![],
                    auth: None,
                },
            ],
            outbound: Outbound::Upstream {
                proxy_url: "http://127.0.0.1:8888".into(),
                extra_ca: Some("/etc/bottle/pipelock-ca.pem".into()),
                intercepts: true,
            },
            dlp: DlpMode::Log,
        },
        gate: GateConfig {
            listen: Listen {
                tcp: Some("0.0.0.0:9418".into()),
                unix: Some("/run/bottle/sock/gate.sock".into()),
            },
            mirrors_dir: "/var/lib/bottle/mirrors".into(),
            remotes: vec![GitRemoteConfig {
                max_push_bytes: Some(1 << 20),
                name: "app".into(),
                upstream: "ssh://git@gitea.example.com:30009/alice/app.git".into(),
                identity_file: "/etc/bottle/keys/app".into(),
                known_host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample".into()),
                extra_hosts: vec![ExtraHost {
                    host: "gitea.example.com".into(),
                    address: "100.64.0.7".into(),
                }],
                allow_delete: false,
                allow_force_push: true,
            }],
            scanner_rules: None,
            max_push_bytes: 104_857_600,
            push_timeout_secs: 120,
        },
        supervise: Some(SuperviseConfig {
            listen: Listen {
                tcp: Some("0.0.0.0:9100".into()),
                unix: Some("/run/bottle/sock/supervise.sock".into()),
            },
            queue_dir: "/var/lib/bottle/queue".into(),
        }),
        pipelock: Some(PipelockConfig {
            binary: "/usr/local/bin/pipelock".into(),
            config: "/etc/bottle/pipelock.yaml".into(),
            listen: "127.0.0.1:8888".into(),
            ca_dir: Some("/etc/bottle/pipelock-roots".into()),
        }),
        audit_log: "/var/log/bottle/audit.jsonl".into(),
    }
}

#[test]
fn golden_full_config() {
    let config = full_config();
    let json = config.to_json();
    expect_test::expect_file!["fixtures/bundle_config_full.json"].assert_eq(&json);
    let back = BundleConfig::from_json(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn direct_outbound_roundtrip() {
    let mut config = full_config();
    config.proxy.outbound = Outbound::Direct {
        allow_private: vec!["10.0.0.0/8".into()],
        extra_ca: Some("/etc/bottle/internal-ca.pem".into()),
    };
    let json = config.to_json();
    assert!(json.contains(r#""mode": "direct""#), "{json}");
    assert_eq!(BundleConfig::from_json(&json).unwrap(), config);
}

#[test]
fn unknown_fields_are_refused() {
    let json =
        full_config()
            .to_json()
            .replacen(r#""identity""#, r#""token": "ghp_x", "identity""#, 1);
    let err = BundleConfig::from_json(&json).unwrap_err().to_string();
    assert!(err.contains("unknown field `token`"), "{err}");
}

#[test]
fn other_schema_versions_are_refused() {
    let mut config = full_config();
    config.schema_version = SCHEMA_VERSION + 1;
    let err = BundleConfig::from_json(&config.to_json())
        .unwrap_err()
        .to_string();
    let want = format!("schema_version {} is not supported", SCHEMA_VERSION + 1);
    assert!(err.contains(&want), "{err}");
}

/// A remote that does not mention deletes or force pushes refuses both.
#[test]
fn push_policy_defaults_to_refusing_deletes_and_force_pushes() {
    let mut value: serde_json::Value = serde_json::from_str(&full_config().to_json()).unwrap();
    let remote = value["gate"]["remotes"][0].as_object_mut().unwrap();
    remote.remove("allow_delete");
    remote.remove("allow_force_push");
    let json = value.to_string();
    let config = BundleConfig::from_json(&json).unwrap();
    let remote = &config.gate.remotes[0];
    assert!(!remote.allow_delete && !remote.allow_force_push);
}
