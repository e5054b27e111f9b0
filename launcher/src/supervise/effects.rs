//! What an approval does to a running bottle, through the backend.
//!
//! Egress: the live config (and the secrets file, for a credentialed route) is copied out of
//! the bundle, the route merged, both copied back with their modes and owners, the bundle's
//! PID 1 gets SIGHUP (it forwards it; the proxy reloads routes and secrets), and the route is
//! confirmed on the proxy's introspection page *from the agent's side* before returning, so
//! the decision written afterwards is true. If the route does not show up, the old files are
//! put back. Pipelock: its YAML is merged the same way and the bundle signalled.
//!
//! The token value goes from the host's environment straight into the secrets file: never
//! into an error, a log line, the audit log or `routes.json`.

use std::io::Read;
use std::time::Duration;

// tokio's clock, not std's: tests run the confirm wait with paused time, so it costs none.
use tokio::time::Instant;

use anyhow::Context;
use bottle_contract::bundle_config::{BundleConfig, RouteConfig};
use bottle_contract::secrets::SecretsFile;
use bottle_contract::supervise::EgressRequest;
use bottle_contract::wire;

use crate::backend::{Backend, ContextFile};
use crate::bottle::object_name;
use crate::secrets::Secret;

/// How long the route may take to show up on the proxy's introspection page.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(6);
const CONFIRM_POLL: Duration = Duration::from_millis(300);

/// A bottle whose bundle and agent containers both run.
#[derive(Debug, Clone)]
pub(crate) struct LiveBottle {
    pub(crate) identity: String,
    pub(crate) bundle: String,
}

/// The running containers of bottle `identity` of manifest home `root`, or an error saying
/// the bottle is not running.
pub(crate) async fn live_bottle<B: Backend>(
    backend: &B,
    root: &std::path::Path,
    identity: &str,
) -> anyhow::Result<LiveBottle> {
    let home = root.display().to_string();
    let objects = backend.list_objects(Some(identity)).await?;
    let running = |role: &str| {
        let name = object_name(identity, role);
        objects
            .iter()
            .find(|o| o.name == name && o.home == home && o.running)
            .map(|o| o.id.clone())
    };
    match (running("bundle"), running("agent")) {
        // The agent must run too: approving into a bottle whose agent is gone helps no one.
        (Some(bundle), Some(_)) => Ok(LiveBottle {
            identity: identity.to_owned(),
            bundle,
        }),
        _ => anyhow::bail!(
            "bottle `{identity}` is not running, so nothing can be applied to it; reject the proposal with a reason, or start the bottle again"
        ),
    }
}

/// One file copied out of a container, with what is needed to put it back the same way.
#[derive(Debug, Clone)]
struct Fetched {
    path: String,
    contents: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
}

impl Fetched {
    /// The same file with new contents.
    fn with(&self, contents: impl Into<Vec<u8>>) -> ContextFile {
        ContextFile::new(self.path.clone(), contents, self.mode).owned_by(self.uid, self.gid)
    }

    fn text(&self) -> anyhow::Result<&str> {
        std::str::from_utf8(&self.contents).with_context(|| format!("{} is not UTF-8", self.path))
    }
}

async fn fetch<B: Backend>(backend: &B, container: &str, path: &str) -> anyhow::Result<Fetched> {
    let archive = backend.copy_out(container, path).await?;
    let mut tar = tar::Archive::new(&archive[..]);
    let entries = tar
        .entries()
        .with_context(|| format!("reading {path} out of the bundle"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {path} out of the bundle"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let uid = header.uid()?;
        let gid = header.gid()?;
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents)?;
        return Ok(Fetched {
            path: path.to_owned(),
            contents,
            mode,
            uid,
            gid,
        });
    }
    anyhow::bail!("{path} is not a file in the bundle container")
}

/// Copies `files` back and signals the bundle to reload.
async fn put_and_reload<B: Backend>(
    backend: &B,
    bottle: &LiveBottle,
    files: &[ContextFile],
) -> anyhow::Result<()> {
    backend.copy_into(&bottle.bundle, "/", files).await?;
    backend.signal(&bottle.bundle, "SIGHUP").await?;
    Ok(())
}

/// The routes before and after an egress approval, and pipelock's YAML diff if it has one.
#[derive(Debug, Clone)]
pub(crate) struct EgressChange {
    pub(crate) before: Vec<RouteConfig>,
    pub(crate) after: Vec<RouteConfig>,
    pub(crate) pipelock_diff: String,
}

/// Merges `request` into the bottle's live routes and waits until the proxy serves it.
/// `token` is the value for `request.auth.token_ref`, read from the host already.
pub(crate) async fn apply_egress<B: Backend>(
    backend: &B,
    bottle: &LiveBottle,
    request: &EgressRequest,
    token: Option<&Secret>,
) -> anyhow::Result<EgressChange> {
    let config_file = fetch(backend, &bottle.bundle, wire::BUNDLE_CONFIG_PATH).await?;
    let mut config = BundleConfig::from_json(config_file.text()?)
        .map_err(|e| anyhow::anyhow!("bottle `{}`: {e}", bottle.identity))?;
    let before = config.proxy.routes.clone();
    super::routes::merge(&mut config.proxy.routes, request);
    let after = config.proxy.routes.clone();

    let mut originals = vec![config_file.with(config_file.contents.clone())];
    let mut updated = vec![config_file.with(config.to_json())];
    if let (Some(auth), Some(token)) = (&request.auth, token) {
        let secrets_file = fetch(backend, &bottle.bundle, wire::BUNDLE_SECRETS_PATH).await?;
        let mut secrets: SecretsFile =
            serde_json::from_slice(&secrets_file.contents).map_err(|_| {
                anyhow::anyhow!(
                    "the secrets file of bottle `{}` is not valid",
                    bottle.identity
                )
            })?;
        secrets
            .tokens
            .insert(auth.token_ref.to_string(), token.clone());
        let text = serde_json::to_string_pretty(&secrets)
            .map_err(|_| anyhow::anyhow!("cannot write the secrets file"))?;
        originals.push(secrets_file.with(secrets_file.contents.clone()));
        updated.push(secrets_file.with(text));
    }
    let mut pipelock_diff = String::new();
    if let Some(pipelock) = &config.pipelock {
        // Pipelock is a second allowlist behind the proxy: the host goes into it too, and a
        // custom header the route injects leaves its sensitive headers (render/pipelock.rs).
        let change = serde_json::json!({ "api_allowlist": [request.host] });
        let file = fetch(backend, &bottle.bundle, &pipelock.config).await?;
        let (text, diff) = merged_pipelock(file.text()?, &change, &injected_headers(&after))?;
        pipelock_diff = diff;
        originals.push(file.with(file.contents.clone()));
        updated.push(file.with(text));
    }

    put_and_reload(backend, bottle, &updated).await?;
    let wanted = after
        .iter()
        .find(|r| r.host == request.host)
        .cloned()
        .context("the merged route is missing")?;
    if let Err(e) = confirm_route(backend, bottle, &wanted).await {
        if let Err(restore) = put_and_reload(backend, bottle, &originals).await {
            tracing::warn!(error = %restore, "restoring the previous routes failed");
        }
        return Err(e.context(format!(
            "the route for {} did not go live in bottle `{}`; its previous routes were put back and nothing was approved",
            request.host, bottle.identity
        )));
    }
    Ok(EgressChange {
        before,
        after,
        pipelock_diff,
    })
}

/// Polls the proxy's route table (`bottle-bundle probe --routes`, inside the bundle, over the
/// proxy's own socket: not through the agent's loopback, where a process of the agent's could
/// answer if the relay were gone) until it lists `wanted` with the same paths.
async fn confirm_route<B: Backend>(
    backend: &B,
    bottle: &LiveBottle,
    wanted: &RouteConfig,
) -> anyhow::Result<()> {
    let exec = crate::bottle::bundle_probe(&["--routes"]);
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    loop {
        let out = backend.exec(&bottle.bundle, &exec).await?;
        let last = if out.exit_code == 0 {
            let body = String::from_utf8_lossy(&out.stdout);
            if lists_route(&body, wanted) {
                return Ok(());
            }
            format!("the proxy lists {}", body.trim())
        } else {
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        };
        if Instant::now() >= deadline {
            anyhow::bail!("after {} s {last}", CONFIRM_TIMEOUT.as_secs());
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
}

/// Whether the introspection page (the proxy's `bottle_contract::route::RouteTable`) lists `wanted`'s host with the
/// same path prefixes.
fn lists_route(body: &str, wanted: &RouteConfig) -> bool {
    serde_json::from_str::<bottle_contract::route::RouteTable>(body)
        .is_ok_and(|table| table.lists(&wanted.host, &wanted.path_allowlist))
}

/// Merges the YAML mapping `change` into the bottle's pipelock config and signals the bundle.
/// Returns the diff of the config.
pub(crate) async fn apply_pipelock<B: Backend>(
    backend: &B,
    bottle: &LiveBottle,
    change: &str,
) -> anyhow::Result<String> {
    let config_file = fetch(backend, &bottle.bundle, wire::BUNDLE_CONFIG_PATH).await?;
    let config = BundleConfig::from_json(config_file.text()?)
        .map_err(|e| anyhow::anyhow!("bottle `{}`: {e}", bottle.identity))?;
    let Some(pipelock) = &config.pipelock else {
        anyhow::bail!(
            "bottle `{}` runs without pipelock; reject this proposal with a reason",
            bottle.identity
        );
    };
    let change = super::request::pipelock_mapping(change).map_err(|m| anyhow::anyhow!(m))?;
    let file = fetch(backend, &bottle.bundle, &pipelock.config).await?;
    let injected = injected_headers(&config.proxy.routes);
    let (text, diff) = merged_pipelock(file.text()?, &change, &injected)?;
    put_and_reload(backend, bottle, &[file.with(text)]).await?;
    Ok(diff)
}

/// Every header the bundle injects on `routes` (render/pipelock.rs).
fn injected_headers(routes: &[RouteConfig]) -> Vec<String> {
    crate::render::pipelock::injected_headers(
        routes
            .iter()
            .filter_map(|r| Some(r.auth.as_ref()?.scheme.header()?.as_str())),
    )
}

/// Pipelock's YAML with `change` merged in (without any `injected` header among its
/// sensitive headers), and the diff.
fn merged_pipelock(
    yaml: &str,
    change: &serde_json::Value,
    injected: &[String],
) -> anyhow::Result<(String, String)> {
    let mut config: serde_json::Value =
        serde_saphyr::from_str(yaml).context("the bottle's pipelock config is not valid YAML")?;
    crate::render::pipelock::merge_change(&mut config, change, injected);
    let text = serde_saphyr::to_string(&config).context("cannot write pipelock's config")?;
    let diff = super::audit::diff("pipelock.yaml", yaml, &text);
    Ok((text, diff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::pipelock::deep_merge;

    #[test]
    fn deep_merge_adds_keys_unions_lists_replaces_scalars() {
        let mut base = serde_json::json!({
            "mode": "strict",
            "api_allowlist": ["a.example"],
            "tls_interception": {"enabled": true, "passthrough_domains": []}
        });
        let change = serde_json::json!({
            "mode": "balanced",
            "api_allowlist": ["a.example", "b.example"],
            "tls_interception": {"passthrough_domains": ["b.example"]},
            "new": 1
        });
        deep_merge(&mut base, &change);
        assert_eq!(
            base,
            serde_json::json!({
                "mode": "balanced",
                "api_allowlist": ["a.example", "b.example"],
                "tls_interception": {"enabled": true, "passthrough_domains": ["b.example"]},
                "new": 1
            })
        );
    }

    #[test]
    fn pipelock_yaml_merge_round_trips_and_diffs() {
        let yaml = "version: 1\nmode: strict\napi_allowlist:\n- a.example\nrequest_body_scanning:\n  sensitive_headers:\n  - Cookie\n  - X-Token\n";
        let change = serde_json::json!({"api_allowlist": ["b.example"]});
        let injected = crate::render::pipelock::injected_headers(["x-token"]);
        let (text, diff) = merged_pipelock(yaml, &change, &injected).unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            back["api_allowlist"],
            serde_json::json!(["a.example", "b.example"])
        );
        assert_eq!(back["mode"], "strict");
        // A route's custom header leaves the sensitive headers.
        assert_eq!(
            back["request_body_scanning"]["sensitive_headers"],
            serde_json::json!(["Cookie"])
        );
        assert!(diff.contains("+") && diff.contains("b.example"), "{diff}");
    }

    #[test]
    fn introspection_must_list_the_host_with_the_same_paths() {
        let wanted = RouteConfig {
            host: "docs.rs".parse().unwrap(),
            port: None,
            path_allowlist: vec!["/b/".parse().unwrap(), "/a/".parse().unwrap()],
            auth: None,
        };
        let page = |paths: &str| {
            format!(
                r#"{{"routes":[{{"host":"x.example","path_allowlist":[],"auth":null}},{{"host":"docs.rs","path_allowlist":{paths},"auth":"bearer"}}]}}"#
            )
        };
        assert!(lists_route(&page(r#"["/a/","/b/"]"#), &wanted));
        assert!(!lists_route(&page(r#"["/a/"]"#), &wanted));
        assert!(!lists_route(&page("[]"), &wanted));
        assert!(!lists_route("not json", &wanted));
    }

    /// An approval on a bottle held by the in-memory backend: the route goes into the live
    /// config (and its token into the secrets file), the bundle is signalled, and the route
    /// is confirmed on the proxy's table; a route that never shows up puts the old files
    /// back (paused time: the confirm wait costs nothing).
    mod apply {
        use super::*;
        use crate::backend::memory::{MemoryBackend, ok};
        use crate::backend::{ContainerSpec, Labels, Network, ResourceLimits};
        use bottle_contract::route::{AuthScheme, RouteAuth, RouteSummary, RouteTable};

        const CONFIG: &str = include_str!("../../tests/golden/bundle_config_direct.json");

        fn request() -> EgressRequest {
            EgressRequest {
                host: "docs.rs".parse().unwrap(),
                path_allowlist: vec!["/crate/".parse().unwrap()],
                auth: Some(RouteAuth {
                    scheme: AuthScheme::Bearer,
                    token_ref: "DOCS_TOKEN".parse().unwrap(),
                }),
            }
        }

        /// The bottle, with the proxy's table answering `table()` to `probe --routes`.
        async fn bottle(
            table: impl Fn() -> RouteTable + Send + Sync + 'static,
        ) -> (MemoryBackend, LiveBottle) {
            let backend = MemoryBackend::with_exec(Box::new(move |_, argv| {
                if argv.iter().any(|a| a == "--routes") {
                    ok(&serde_json::to_string(&table()).unwrap())
                } else {
                    ok("")
                }
            }));
            let name = object_name("dev-abcde", "bundle");
            let spec = ContainerSpec {
                name: name.clone(),
                image: "b".into(),
                labels: Labels::for_bottle("dev-abcde", "bundle"),
                cmd: vec![],
                entrypoint: None,
                user: String::new(),
                env: vec![],
                network: Network::None,
                volumes: vec![],
                binds: vec![],
                cap_drop_all: true,
                no_new_privileges: true,
                runtime: None,
                tty: false,
                working_dir: None,
                extra_hosts: vec![],
                init: false,
                limits: ResourceLimits {
                    memory_bytes: 1,
                    pids: 1,
                    nano_cpus: 1,
                },
            };
            let id = backend.create_container(&spec).await.unwrap();
            backend.start_container(&id).await.unwrap();
            backend.put(
                &name,
                &[
                    ContextFile::new(wire::BUNDLE_CONFIG_PATH, CONFIG, 0o644),
                    ContextFile::new(wire::BUNDLE_SECRETS_PATH, r#"{"tokens":{}}"#, 0o600)
                        .owned_by(0, 0),
                ],
            );
            let live = LiveBottle {
                identity: "dev-abcde".into(),
                bundle: id,
            };
            (backend, live)
        }

        fn config_of(backend: &MemoryBackend) -> BundleConfig {
            let file = backend
                .file(
                    &object_name("dev-abcde", "bundle"),
                    wire::BUNDLE_CONFIG_PATH,
                )
                .unwrap();
            BundleConfig::from_json(std::str::from_utf8(&file.contents).unwrap()).unwrap()
        }

        #[tokio::test(start_paused = true)]
        async fn a_route_that_goes_live_is_merged_with_its_token() {
            let (backend, live) = bottle(|| RouteTable {
                routes: vec![RouteSummary {
                    host: "docs.rs".parse().unwrap(),
                    port: None,
                    path_allowlist: vec!["/crate/".parse().unwrap()],
                    auth: Some("Bearer".into()),
                    header: None,
                }],
            })
            .await;
            let token = Secret::new("tok-value-9".into());
            let change = apply_egress(&backend, &live, &request(), Some(&token))
                .await
                .unwrap();
            assert_eq!(change.after.len(), change.before.len() + 1);
            assert!(
                config_of(&backend)
                    .proxy
                    .routes
                    .iter()
                    .any(|r| r.host == "docs.rs")
            );
            let secrets = backend
                .file(
                    &object_name("dev-abcde", "bundle"),
                    wire::BUNDLE_SECRETS_PATH,
                )
                .unwrap();
            let secrets: SecretsFile = serde_json::from_slice(&secrets.contents).unwrap();
            assert_eq!(secrets.tokens["DOCS_TOKEN"].expose(), "tok-value-9");
            assert_eq!(
                backend.signals(),
                [(object_name("dev-abcde", "bundle"), "SIGHUP".to_owned())]
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_route_that_never_goes_live_puts_the_old_files_back() {
            let (backend, live) = bottle(|| RouteTable { routes: vec![] }).await;
            let before = config_of(&backend);
            let token = Secret::new("tok-value-9".into());
            let err = apply_egress(&backend, &live, &request(), Some(&token))
                .await
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("did not go live") && text.contains("previous routes were put back"),
                "{text}"
            );
            assert!(!text.contains("tok-value"), "{text}");
            assert_eq!(config_of(&backend), before, "the config was not restored");
            let secrets = backend
                .file(
                    &object_name("dev-abcde", "bundle"),
                    wire::BUNDLE_SECRETS_PATH,
                )
                .unwrap();
            assert_eq!(
                secrets.contents, br#"{"tokens":{}}"#,
                "the secrets were not restored"
            );
            assert_eq!(secrets.mode, 0o600);
            // Signalled for the change and again for the restore.
            assert_eq!(backend.signals().len(), 2);
        }
    }
}
