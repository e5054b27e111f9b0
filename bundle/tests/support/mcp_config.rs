//! A bundle config for tests that run the `mcp` role (alone or beside the gate): no proxy or
//! gate listeners unless a test adds them, supervise on an ephemeral TCP port and a Unix
//! socket, the queue under `dir`. Built from the contract's types, so a schema change breaks
//! it at compile time rather than at the bundle's config parser.

#![allow(dead_code)]

use std::path::Path;

use bottle_contract::bundle_config::*;

pub fn supervise_config(dir: &Path, identity: &str, roles: Vec<Role>) -> BundleConfig {
    let s = |p: &Path| p.display().to_string();
    let none = || Listen {
        tcp: None,
        unix: None,
    };
    BundleConfig {
        schema_version: bottle_contract::SCHEMA_VERSION,
        identity: identity.into(),
        roles,
        proxy: ProxyConfig {
            listen: none(),
            ca_cert: "/nonexistent/ca.pem".into(),
            ca_key: "/nonexistent/ca-key.pem".into(),
            routes: vec![],
            outbound: Outbound::Direct {
                allow_private: vec![],
                extra_ca: None,
            },
            dlp: Default::default(),
        },
        gate: GateConfig {
            listen: none(),
            mirrors_dir: s(&dir.join("mirrors")),
            remotes: vec![],
            scanner_rules: None,
            max_push_bytes: 1_000_000,
            push_timeout_secs: 30,
        },
        supervise: Some(SuperviseConfig {
            listen: Listen {
                tcp: Some("127.0.0.1:0".into()),
                unix: Some(s(&dir.join("supervise.sock"))),
            },
            queue_dir: s(&dir.join("queue")),
        }),
        pipelock: None,
        audit_log: String::new(),
    }
}
