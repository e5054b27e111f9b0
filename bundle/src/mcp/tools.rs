//! The five supervise tools, as an rmcp server.
//!
//! Their descriptions and input schemas are what the agent reads to decide when to call them,
//! so they say when to call, what to send and what happens next. Block tools validate, file a
//! proposal and return at once (Claude Code cuts HTTP tool calls near 60 s); only
//! `proposal-status` waits, and never longer than [`MAX_WAIT_SECONDS`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle_contract::bundle_config::BundleConfig;
use bottle_contract::route::RouteTable;
use bottle_contract::supervise::{EgressRequest, MAX_WAIT_SECONDS, Request, Verdict};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{Json, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::queue::{self, Queue, Status};
use super::validate;

/// `proposal-status` waits this long when the agent does not say.
pub const DEFAULT_WAIT_SECONDS: u64 = 30;
/// How often `proposal-status` looks for a decision while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Where the agent's current Dockerfile is (provisioned by the launcher).
pub const AGENT_DOCKERFILE_PATH: &str = "/etc/claude-bottle/agent.Dockerfile";

/// What every tool call shares.
#[derive(Debug)]
pub struct State {
    /// The bundle config, read again on each call that needs routes (the launcher replaces it
    /// and sends SIGHUP when it approves a route).
    pub config_path: PathBuf,
    /// The bottle's identity, written into each proposal.
    pub identity: String,
    pub queue: Queue,
    /// Serializes submissions so the pending cap holds under concurrent calls.
    submit: tokio::sync::Mutex<()>,
}

impl State {
    pub fn new(config_path: PathBuf, identity: String, queue: Queue) -> State {
        State {
            config_path,
            identity,
            queue,
            submit: tokio::sync::Mutex::new(()),
        }
    }

    fn config(&self) -> Result<BundleConfig, String> {
        crate::config::load_config(&self.config_path)
            .map_err(|e| format!("cannot read the bundle's routes ({e}); tell the operator"))
    }

    async fn file(&self, justification: String, request: Request) -> Result<Filed, String> {
        let _guard = self.submit.lock().await;
        if let Request::Egress(asked) = &request {
            let waiting = self
                .queue
                .pending()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|p| matches!(&p.request, Request::Egress(e) if e.host == asked.host));
            if let Some(p) = waiting {
                return Err(format!(
                    "host: {} is already asked for in proposal {}, still waiting for the \
                     operator; call proposal-status with that id instead of asking again",
                    asked.host, p.id
                ));
            }
        }
        let kind = queue::kind(&request);
        let proposal = self
            .queue
            .submit(&self.identity, justification, request)
            .map_err(|e| e.to_string())?;
        Ok(Filed {
            next: format!(
                "The operator has been asked. Call proposal-status with id {:?} to wait for the \
                 decision (it waits up to {MAX_WAIT_SECONDS} s per call; call it again while it says pending).",
                proposal.id
            ),
            id: proposal.id,
            kind: kind.to_owned(),
            status: "pending".to_owned(),
        })
    }
}

/// The supervise MCP server: one per session (rmcp builds one per connection), all sharing
/// [`State`].
#[derive(Debug, Clone)]
pub struct Supervise {
    state: Arc<State>,
    tool_router: ToolRouter<Self>,
    /// Whether this bottle runs pipelock: without it `pipelock-block` is not offered at all
    /// (a tool whose every proposal could only be refused would be a lie).
    pipelock: bool,
}

/// `egress-block` input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressBlockInput {
    /// The exact host name the proxy refused, lowercase, without scheme, port or path
    /// (e.g. `api.example.com`). No IP addresses, no wildcards.
    pub host: String,
    /// Optional path prefixes the route should allow, each starting with `/`
    /// (e.g. `["/repos/alice/"]`). Leave out to ask for every path on the host.
    #[serde(default)]
    pub path_allowlist: Option<Vec<String>>,
    /// Optional credential the proxy should inject for this host. Name the HOST environment
    /// variable holding the token; never send a token value.
    #[serde(default)]
    pub auth: Option<AuthInput>,
    /// Why you need this host: what you were doing and what failed. The operator reads it.
    pub justification: String,
}

/// A credential the proxy injects on the wire.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthInput {
    /// How the token is sent: `Bearer` (Authorization: Bearer <token>), `token`
    /// (Authorization: token <token>, GitHub/Gitea style), `Basic` (the variable holds
    /// `user:password`), or `header` (a custom header named in `header`).
    #[schemars(extend("enum" = ["Bearer", "token", "Basic", "header"]))]
    pub scheme: String,
    /// NAME of the host environment variable holding the token, `[A-Z_][A-Z0-9_]*`
    /// (e.g. `GITHUB_TOKEN`). The operator provides the value; you never see it.
    pub token_ref: String,
    /// The header name for scheme `header` (e.g. `x-api-key`); leave out otherwise.
    #[serde(default)]
    pub header: Option<String>,
}

/// `capability-block` input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityBlockInput {
    /// The WHOLE modified agent Dockerfile (start from /etc/claude-bottle/agent.Dockerfile),
    /// not a diff. At most 64 KiB; it must parse as a Dockerfile.
    pub dockerfile: String,
    /// Why you need the change: what you tried and what is missing. The operator reads it.
    pub justification: String,
}

/// `pipelock-block` input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelockBlockInput {
    /// A YAML mapping with only the pipelock config keys to change
    /// (e.g. `api_allowlist: [docs.rs]`). At most 16 KiB.
    pub change: String,
    /// Why you need the change: which request pipelock blocked and why it is needed.
    pub justification: String,
}

/// `list-egress-routes` input (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRoutesInput {}

/// `proposal-status` input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalStatusInput {
    /// The proposal id a block tool returned (like `p-k3m9x2qa`).
    pub id: String,
    /// How long to wait for a decision before answering `pending`: default 30, at most 45
    /// (larger values are treated as 45). 0 answers at once.
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
}

fn default_wait() -> u64 {
    DEFAULT_WAIT_SECONDS
}

/// What a block tool returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Filed {
    /// The proposal id: pass it to proposal-status.
    pub id: String,
    /// `egress`, `capability` or `pipelock`.
    pub kind: String,
    /// Always `pending` here.
    pub status: String,
    /// What to do next.
    pub next: String,
}

/// What `proposal-status` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProposalStatus {
    pub id: String,
    /// `egress`, `capability` or `pipelock`.
    pub kind: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// The operator's reason (always set on a rejection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do next.
    pub message: String,
    /// What the operator applied, if they edited the request before approving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<serde_json::Value>,
}

/// The tool offered only when the bottle runs pipelock.
const PIPELOCK_TOOL: &str = "pipelock-block";

#[tool_router(router = tool_router)]
impl Supervise {
    pub fn new(state: Arc<State>) -> Supervise {
        // Read when a client connects: an unreadable config offers no pipelock tool either.
        let pipelock = state.config().is_ok_and(|c| c.pipelock.is_some());
        let mut tool_router = Self::tool_router();
        if !pipelock {
            tool_router.remove_route(PIPELOCK_TOOL);
        }
        Supervise {
            state,
            tool_router,
            pipelock,
        }
    }

    #[tool(
        name = "egress-block",
        description = "Ask the operator to allow a host through the egress proxy. Call this when \
            a request through the egress proxy (HTTPS_PROXY, http://bundle:9099) was refused \
            with 403 because the host is not in the egress routes ('no route'), or because a \
            path is outside a routed host's path_allowlist (then send the path_allowlist you \
            need), or before using a host that list-egress-routes does not show. Send the \
            exact host, optional path prefixes, and a justification the \
            operator will read. If the API needs a credential, put the NAME of the host \
            environment variable holding it in auth.token_ref (never a token value). Returns a \
            proposal id at once; then call proposal-status with that id to wait for the \
            decision. Once approved, retry the request: the route is live without a restart."
    )]
    pub async fn egress_block(
        &self,
        Parameters(input): Parameters<EgressBlockInput>,
    ) -> Result<Json<Filed>, String> {
        let host = validate::host(&input.host).map_err(|e| e.to_string())?;
        let path_allowlist = validate::paths(input.path_allowlist.as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let auth = input
            .auth
            .map(|a| validate::auth(&a.scheme, &a.token_ref, a.header.as_deref()))
            .transpose()
            .map_err(|e| e.to_string())?;
        let justification =
            validate::justification(&input.justification).map_err(|e| e.to_string())?;

        let config = self.state.config()?;
        let serving = validate::routes_serving(&config.proxy.routes, &host);
        validate::check_routed(&host, &path_allowlist, &serving).map_err(|e| e.to_string())?;
        self.state
            .file(
                justification,
                Request::Egress(EgressRequest {
                    host,
                    path_allowlist,
                    auth,
                }),
            )
            .await
            .map(Json)
    }

    #[tool(
        name = "capability-block",
        description = "Ask the operator to change your container image, e.g. to add a package \
            or tool you cannot install yourself. Your current agent Dockerfile is at \
            /etc/claude-bottle/agent.Dockerfile: read it, change it, and send the WHOLE \
            modified file in `dockerfile` (not a diff). Returns a proposal id at once; then \
            call proposal-status to wait for the decision. If approved, this bottle STOPS and \
            the operator resumes it with the new image; your work tree is kept, but running \
            processes are not, so save your work and note where you are before waiting."
    )]
    pub async fn capability_block(
        &self,
        Parameters(input): Parameters<CapabilityBlockInput>,
    ) -> Result<Json<Filed>, String> {
        let dockerfile = validate::dockerfile(&input.dockerfile).map_err(|e| e.to_string())?;
        let justification =
            validate::justification(&input.justification).map_err(|e| e.to_string())?;
        self.state
            .file(justification, Request::Capability { dockerfile })
            .await
            .map(Json)
    }

    #[tool(
        name = "pipelock-block", // PIPELOCK_TOOL
        description = "Ask the operator to change the configuration of pipelock, the \
            allowlist/DLP proxy behind the egress proxy. Call this only when a request was \
            blocked by pipelock (a 403 naming pipelock or carrying X-Pipelock-Block-Reason), \
            not for a 403 'no route' from the egress proxy (use egress-block for that). Send a \
            YAML mapping with only the keys to change. Returns a proposal id at once; then call \
            proposal-status to wait for the decision."
    )]
    pub async fn pipelock_block(
        &self,
        Parameters(input): Parameters<PipelockBlockInput>,
    ) -> Result<Json<Filed>, String> {
        let change = validate::pipelock_change(&input.change).map_err(|e| e.to_string())?;
        let justification =
            validate::justification(&input.justification).map_err(|e| e.to_string())?;
        self.state
            .file(justification, Request::Pipelock { change })
            .await
            .map(Json)
    }

    #[tool(
        name = "list-egress-routes",
        description = "List the hosts the egress proxy allows right now, with their path \
            prefixes and whether a credential is injected (its scheme only, never a token). \
            Call it before egress-block to see whether a host is already routed, and after an \
            approval to confirm the new route."
    )]
    pub async fn list_egress_routes(
        &self,
        Parameters(_input): Parameters<ListRoutesInput>,
    ) -> Result<Json<RouteTable>, String> {
        let config = self.state.config()?;
        Ok(Json(RouteTable::of(&config.proxy.routes)))
    }

    #[tool(
        name = "proposal-status",
        description = "Get the operator's decision on a proposal: pending, approved or rejected, \
            with the operator's reason and a message saying what to do next. Waits up to \
            wait_seconds (default 30, at most 45) for a decision before answering pending; \
            call it again to keep waiting. Do not file the same request again while it is \
            pending."
    )]
    pub async fn proposal_status(
        &self,
        Parameters(input): Parameters<ProposalStatusInput>,
    ) -> Result<Json<ProposalStatus>, String> {
        let wait = wait_seconds(input.wait_seconds);
        let deadline = Instant::now() + Duration::from_secs(wait);
        let id = input.id.trim();
        loop {
            let status = self
                .state
                .queue
                .status(id)
                .map_err(|e| format!("id: {e}"))?;
            match status {
                Status::Decided(proposal, decision) => {
                    let applied = match decision.verdict {
                        Verdict::Approved => decision
                            .applied
                            .filter(|a| *a != proposal.request)
                            .and_then(|a| serde_json::to_value(a).ok()),
                        Verdict::Rejected => None,
                    };
                    return Ok(Json(ProposalStatus {
                        id: proposal.id,
                        kind: queue::kind(&proposal.request).to_owned(),
                        status: queue::verdict_name(decision.verdict).to_owned(),
                        reason: decision.reason,
                        message: decision.message,
                        applied,
                    }));
                }
                Status::Pending(proposal) if Instant::now() >= deadline => {
                    return Ok(Json(ProposalStatus {
                        message: format!(
                            "No decision yet after waiting {wait} s. Call proposal-status with \
                             id {:?} again to keep waiting, or carry on with other work.",
                            proposal.id
                        ),
                        id: proposal.id,
                        kind: queue::kind(&proposal.request).to_owned(),
                        status: "pending".to_owned(),
                        reason: None,
                        applied: None,
                    }));
                }
                Status::Pending(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// How long `proposal-status` waits: never more than [`MAX_WAIT_SECONDS`] (Claude Code cuts
/// tool calls near 60 s).
fn wait_seconds(asked: u64) -> u64 {
    asked.min(MAX_WAIT_SECONDS)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Supervise {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "claude-bottle-supervise",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "Tools for an agent stuck in a claude-bottle sandbox. When the egress proxy \
                 refuses a host (403 'no route'), call egress-block; when you need a package or \
                 tool in your image, call capability-block with the whole modified \
                 {AGENT_DOCKERFILE_PATH}{pipelock}. \
                 Each returns a proposal id at once: wait for the operator with proposal-status. \
                 Only the operator can approve.",
                pipelock = if self.pipelock {
                    "; when pipelock blocks a request, call pipelock-block"
                } else {
                    ""
                }
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instructions mention pipelock-block only when the bottle runs pipelock, and the
    /// name removed from the router is the tool's.
    #[test]
    fn the_pipelock_tool_and_its_instructions_follow_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let mut json: serde_json::Value = serde_json::from_str(&config_json(dir.path())).unwrap();
        let server = |json: &serde_json::Value| {
            std::fs::write(&config, json.to_string()).unwrap();
            Supervise::new(Arc::new(State::new(
                config.clone(),
                "dev-abcde".into(),
                Queue::new(dir.path().join("q").to_str().unwrap()),
            )))
        };
        let without = server(&json);
        assert!(!without.tool_router.has_route(PIPELOCK_TOOL));
        assert!(
            !without
                .get_info()
                .instructions
                .unwrap_or_default()
                .contains(PIPELOCK_TOOL)
        );
        json["pipelock"] =
            serde_json::json!({"binary": "/p", "config": "/c", "listen": "127.0.0.1:8888"});
        let with = server(&json);
        assert!(with.tool_router.has_route(PIPELOCK_TOOL));
        assert!(
            with.get_info()
                .instructions
                .unwrap_or_default()
                .contains(PIPELOCK_TOOL)
        );
    }

    fn config_json(queue: &std::path::Path) -> String {
        serde_json::json!({
            "schema_version": bottle_contract::SCHEMA_VERSION,
            "identity": "dev-abcde",
            "roles": ["mcp"],
            "proxy": {
                "listen": {"tcp": null, "unix": null},
                "ca_cert": "/x", "ca_key": "/x",
                "routes": [{"host": "api.github.com", "path_allowlist": ["/repos/a/"],
                            "auth": {"scheme": "bearer", "token_ref": "GH"}}],
                "outbound": {"mode": "direct"}
            },
            "gate": {"listen": {"tcp": null, "unix": null}, "mirrors_dir": "/x", "remotes": [],
                     "scanner_rules": null, "max_push_bytes": 1, "push_timeout_secs": 1},
            "supervise": {"listen": {"tcp": null, "unix": null},
                          "queue_dir": queue.display().to_string()},
            "pipelock": null,
            "audit_log": ""
        })
        .to_string()
    }

    fn server(dir: &std::path::Path) -> Supervise {
        let queue = dir.join("queue");
        let config = dir.join("config.json");
        std::fs::write(&config, config_json(&queue)).unwrap();
        Supervise::new(Arc::new(State::new(
            config,
            "dev-abcde".into(),
            Queue::new(queue),
        )))
    }

    fn err<T>(result: Result<Json<T>, String>) -> String {
        match result {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    fn egress(host: &str) -> Parameters<EgressBlockInput> {
        Parameters(EgressBlockInput {
            host: host.into(),
            path_allowlist: None,
            auth: None,
            justification: "need it".into(),
        })
    }

    /// Every tool, on good and bad input, leaves `decisions/` exactly as the host wrote it.
    #[tokio::test]
    async fn no_tool_ever_writes_under_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let decisions = dir.path().join("queue/decisions");
        std::fs::create_dir_all(&decisions).unwrap();
        let filed = s.egress_block(egress("docs.rs")).await.unwrap().0;
        let decision = format!(
            r#"{{"id":"{}","verdict":"rejected","decided":1,"reason":"no","applied":null,"message":"m"}}"#,
            filed.id
        );
        std::fs::write(decisions.join(format!("{}.json", filed.id)), &decision).unwrap();
        let listing = || {
            let mut v: Vec<_> = std::fs::read_dir(&decisions)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let before = listing();

        s.egress_block(egress("crates.io")).await.unwrap();
        err(s.egress_block(egress("Bad Host")).await);
        err(s.egress_block(egress("api.github.com")).await);
        s.capability_block(Parameters(CapabilityBlockInput {
            dockerfile: "FROM debian\nRUN apt-get install -y jq\n".into(),
            justification: "jq".into(),
        }))
        .await
        .unwrap();
        s.pipelock_block(Parameters(PipelockBlockInput {
            change: "api_allowlist: [docs.rs]".into(),
            justification: "docs".into(),
        }))
        .await
        .unwrap();
        s.list_egress_routes(Parameters(ListRoutesInput {}))
            .await
            .unwrap();
        let status = |id: &str| {
            s.proposal_status(Parameters(ProposalStatusInput {
                id: id.into(),
                wait_seconds: 0,
            }))
        };
        assert_eq!(status(&filed.id).await.unwrap().0.status, "rejected");
        err(status("p-unknown0").await);

        assert_eq!(listing(), before);
        assert_eq!(
            std::fs::read_to_string(decisions.join(format!("{}.json", filed.id))).unwrap(),
            decision
        );
    }

    #[test]
    fn waits_are_clamped_to_the_maximum() {
        let default: ProposalStatusInput = serde_json::from_str(r#"{"id": "p-1"}"#).unwrap();
        assert_eq!(wait_seconds(default.wait_seconds), 30);
        assert_eq!(wait_seconds(0), 0);
        assert_eq!(wait_seconds(45), 45);
        assert_eq!(wait_seconds(3600), MAX_WAIT_SECONDS);
    }

    #[tokio::test]
    async fn routed_and_already_asked_hosts_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let e = err(s.egress_block(egress("api.github.com")).await);
        assert!(
            e.contains("already has a route") && e.contains("/repos/a/"),
            "{e}"
        );
        let first = s.egress_block(egress("docs.rs")).await.unwrap().0;
        let e = err(s.egress_block(egress("docs.rs")).await);
        assert!(e.contains(&first.id), "{e}");
        let routes = s
            .list_egress_routes(Parameters(ListRoutesInput {}))
            .await
            .unwrap()
            .0;
        assert_eq!(routes.routes[0].auth.as_deref(), Some("Bearer"));
        let text = serde_json::to_string(&routes).unwrap();
        assert!(!text.contains("GH"), "the slot name leaked: {text}");
    }
}
