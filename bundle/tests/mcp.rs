//! The supervise MCP server as a real process (`bottle-bundle mcp`), driven by a real MCP
//! client (Python `mcp` 2.3.0, `tests/mcp_client.py`) and by raw HTTP (`httpx`): both protocol
//! revisions, TCP and the Unix socket, every tool's happy path and bad input, decisions
//! written as the host writes them, the Host-header check, and SIGHUP.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/mcp_config.rs"]
mod mcp_config;

use bottle_contract::bundle_config::Role;
use bottle_contract::supervise::{self, Decision, Proposal, Request, Verdict};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bottle-bundle");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
const TOOLS: [&str; 5] = [
    "capability-block",
    "egress-block",
    "list-egress-routes",
    "pipelock-block",
    "proposal-status",
];
const STATELESS: &str = "2026-07-28";

/// A running `bottle-bundle mcp` with its own config and queue.
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    socket: PathBuf,
    config: PathBuf,
    stderr: PathBuf,
}

fn config_json(dir: &Path, routes: Value) -> Value {
    let mut config = serde_json::to_value(mcp_config::supervise_config(
        dir,
        "dev-k2x9m",
        vec![Role::Mcp],
    ))
    .unwrap();
    config["proxy"]["routes"] = routes;
    // A bottle with pipelock: every tool is offered (`Server::without_pipelock` has none).
    config["pipelock"] = json!({
        "binary": "/usr/local/bin/pipelock",
        "config": "/etc/bottle/pipelock.yaml",
        "listen": "127.0.0.1:8888"
    });
    config
}

fn base_routes() -> Value {
    json!([
        {"host": "api.anthropic.com", "path_allowlist": [],
         "auth": {"scheme": "bearer", "token_ref": "CLAUDE_BOTTLE_OAUTH_TOKEN"}},
        {"host": "api.github.com", "path_allowlist": ["/repos/alice/", "/user"],
         "auth": {"scheme": "token", "token_ref": "GH_PAT_SLOT"}},
        {"host": "key.test", "path_allowlist": [],
         "auth": {"scheme": {"header": {"name": "x-api-key"}}, "token_ref": "KEY_SLOT"}},
        {"host": "*.example.org", "path_allowlist": [], "auth": null}
    ])
}

/// Reads stdout until the line starting with `prefix`; the rest of that line.
fn read_announce(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "stdout closed before {prefix:?}"
        );
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

impl Server {
    fn start() -> Server {
        Server::start_with(|_| {})
    }

    /// A server for a bottle that runs no pipelock.
    fn without_pipelock() -> Server {
        Server::start_with(|config| config["pipelock"] = Value::Null)
    }

    fn start_with(edit: impl FnOnce(&mut Value)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let mut text = config_json(dir.path(), base_routes());
        edit(&mut text);
        std::fs::write(&config, text.to_string()).unwrap();
        let stderr = dir.path().join("mcp.stderr");
        let mut child = Command::new(BIN)
            .args(["mcp", "--config"])
            .arg(&config)
            .env("BOTTLE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let addr = read_announce(&mut out, "mcp listening on tcp ");
        let socket = PathBuf::from(read_announce(&mut out, "mcp listening on unix "));
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Server {
            dir,
            child,
            addr,
            socket,
            config,
            stderr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    fn queue(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs `steps` in one client connection; one JSON answer per step.
    fn client(&self, mode: &str, steps: Value) -> Vec<Value> {
        run_client(&self.url(), mode, None, steps)
    }

    /// Writes a decision as the host does: whole file, renamed into `decisions/`.
    fn decide(&self, id: &str, verdict: Verdict, reason: Option<&str>, message: &str) {
        let dir = self.queue().join(supervise::DECISIONS_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let decision = Decision {
            id: id.into(),
            verdict,
            decided: 1,
            reason: reason.map(str::to_owned),
            applied: None,
            message: message.into(),
        };
        supervise::write_atomic(
            &supervise::decision_path(&self.queue(), id),
            serde_json::to_string(&decision).unwrap().as_bytes(),
        )
        .unwrap();
    }

    fn proposal(&self, id: &str) -> Proposal {
        let text = std::fs::read_to_string(supervise::proposal_path(&self.queue(), id)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_command(url: &str, mode: &str, uds: Option<&Path>) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(CLIENT).arg(url).args(["--mode", mode]);
    if let Some(path) = uds {
        cmd.arg("--uds").arg(path);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_client(url: &str, mode: &str, uds: Option<&Path>, steps: Value) -> Vec<Value> {
    let count = steps.as_array().unwrap().len();
    let mut child = client_command(url, mode, uds).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(steps.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), count, "{stdout}");
    answers
}

fn call(tool: &str, args: Value) -> Value {
    json!({"op": "call", "tool": tool, "args": args})
}

/// The text of a tool error (an `isError` result or a protocol error), or a panic if the call
/// succeeded.
fn tool_error(answer: &Value) -> String {
    if let Some(e) = answer.get("error") {
        return e.as_str().unwrap().to_owned();
    }
    assert_eq!(answer["isError"], true, "expected an error: {answer}");
    answer["text"].as_str().unwrap().to_owned()
}

fn ok(answer: &Value) -> &Value {
    assert_eq!(answer["isError"], false, "expected success: {answer}");
    &answer["structured"]
}

/// A raw stateless (2026-07-28) JSON-RPC POST: no initialize, no session, the per-request
/// headers and `_meta`.
fn raw_stateless(method: &str, name: Option<&str>, params: Value, host: Option<&str>) -> Value {
    let mut headers = json!({
        "MCP-Protocol-Version": STATELESS,
        "Mcp-Method": method,
    });
    if let Some(name) = name {
        headers["Mcp-Name"] = json!(name);
    }
    if let Some(host) = host {
        headers["Host"] = json!(host);
    }
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-httpx", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({
        "op": "raw",
        "headers": headers,
        "body": {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    })
}

/// Without pipelock in the bottle, `pipelock-block` is not offered: not listed and not
/// callable (the instructions leave it out too: `mcp::tools::tests`); the other tools are.
#[test]
fn without_pipelock_the_pipelock_tool_is_not_offered() {
    let server = Server::without_pipelock();
    for mode in ["legacy", STATELESS] {
        let answers = server.client(
            mode,
            json!([{"op": "session"}, {"op": "list"},
                   call("pipelock-block", json!({"change": "a: 1", "justification": "x"}))]),
        );
        let mut names: Vec<&str> = answers[1]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        let without: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| *t != "pipelock-block")
            .collect();
        assert_eq!(names, without, "{mode}");
        assert_eq!(answers[2]["error"], "tool not found", "{}", answers[2]);
    }
    let files = std::fs::read_dir(server.queue().join("proposals")).map_or(0, |d| d.count());
    assert_eq!(files, 0, "a proposal was filed");
}

#[test]
fn tools_list_shows_the_five_tools_with_their_schemas() {
    let server = Server::start();
    for mode in ["legacy", STATELESS] {
        let answers = server.client(mode, json!([{"op": "session"}, {"op": "list"}]));
        let expected_protocol = if mode == "legacy" {
            "2025-11-25"
        } else {
            STATELESS
        };
        assert_eq!(answers[0]["protocol"], expected_protocol);
        let tools = answers[1]["tools"].as_array().unwrap();
        let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        names.sort_unstable();
        assert_eq!(names, TOOLS, "{mode}");
        let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap();

        let egress = tool("egress-block");
        assert!(
            egress["description"]
                .as_str()
                .unwrap()
                .contains("'no route'")
        );
        assert!(
            egress["description"]
                .as_str()
                .unwrap()
                .contains("proposal-status")
        );
        let schema = &egress["inputSchema"];
        assert_eq!(schema["type"], "object");
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["host", "justification"]);
        for field in ["host", "path_allowlist", "auth", "justification"] {
            assert!(
                schema["properties"][field].is_object(),
                "egress-block lacks {field}: {schema}"
            );
        }
        let text = schema.to_string();
        for needle in [
            "\"Bearer\"",
            "\"token\"",
            "\"Basic\"",
            "\"header\"",
            "token_ref",
        ] {
            assert!(
                text.contains(needle),
                "egress-block schema lacks {needle}: {text}"
            );
        }

        let capability = tool("capability-block");
        let description = capability["description"].as_str().unwrap();
        assert!(description.contains("/etc/claude-bottle/agent.Dockerfile"));
        assert!(description.contains("WHOLE modified file"));
        assert!(description.contains("STOPS"));
        assert!(capability["inputSchema"]["properties"]["dockerfile"].is_object());

        assert!(tool("pipelock-block")["inputSchema"]["properties"]["change"].is_object());
        assert_eq!(tool("list-egress-routes")["inputSchema"]["type"], "object");
        let status = &tool("proposal-status")["inputSchema"];
        assert_eq!(status["properties"]["wait_seconds"]["default"], 30);
        assert_eq!(status["required"], json!(["id"]));
    }
}

#[test]
fn egress_block_files_a_proposal_and_refuses_bad_input() {
    let server = Server::start();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = call(
        "egress-block",
        json!({
            "host": "docs.rs",
            "path_allowlist": ["/crate/", "/releases/"],
            "auth": {"scheme": "header", "token_ref": "DOCS_KEY", "header": "X-Api-Key"},
            "justification": "  I need the serde docs to fix a build error.  "
        }),
    );
    let j = "need it";
    let bad = [
        (
            json!({"host": "Docs.rs", "justification": j}),
            "host",
            "lowercase",
        ),
        (
            json!({"host": "10.1.2.3", "justification": j}),
            "host",
            "IP address",
        ),
        (
            json!({"host": "docs.rs:443", "justification": j}),
            "host",
            "port",
        ),
        (
            json!({"host": "*.docs.rs", "justification": j}),
            "host",
            "wildcard",
        ),
        (
            json!({"host": "https://docs.rs/x", "justification": j}),
            "host",
            "bare host",
        ),
        (
            json!({"host": "bad_name.rs", "justification": j}),
            "host",
            "labels of a-z, 0-9 and `-`",
        ),
        (
            json!({"host": "api.github.com", "justification": j}),
            "host",
            "/repos/alice/, /user",
        ),
        (
            json!({"host": "a.example.org", "justification": j}),
            "host",
            "already has a route",
        ),
        (
            json!({"host": "x.rs", "path_allowlist": ["/ok", "v1/"], "justification": j}),
            "path_allowlist[1]",
            "start with `/`",
        ),
        (
            json!({"host": "x.rs", "justification": " \n "}),
            "justification",
            "empty",
        ),
        (
            json!({"host": "x.rs", "justification": "x".repeat(4001)}),
            "justification",
            "4000",
        ),
        (
            json!({"host": "x.rs", "justification": j,
                   "auth": {"scheme": "Digest", "token_ref": "T"}}),
            "auth.scheme",
            "Bearer, token, Basic, header",
        ),
        (
            json!({"host": "x.rs", "justification": j,
                   "auth": {"scheme": "header", "token_ref": "T"}}),
            "auth.header",
            "needs the header's name",
        ),
        (
            json!({"host": "x.rs", "justification": j,
                   "auth": {"scheme": "Bearer", "token_ref": "ghp_abc123"}}),
            "auth.token_ref",
            "in upper case",
        ),
        // The same rules as the manifest and the proxy: refused here, not at approval.
        (
            json!({"host": "x.rs", "justification": j,
                   "auth": {"scheme": "header", "token_ref": "T", "header": "Cookie"}}),
            "auth.header",
            "cannot carry a credential",
        ),
        (
            json!({"host": "x.rs", "justification": j,
                   "auth": {"scheme": "header", "token_ref": "T", "header": "te"}}),
            "auth.header",
            "cannot carry a credential",
        ),
        (
            json!({"host": "x.rs", "path_allowlist": ["/a%2Fb"], "justification": j}),
            "path_allowlist[0]",
            "write the decoded path",
        ),
        (json!({"host": "x.rs"}), "justification", "missing field"),
        (
            json!({"host": "x.rs", "justification": j, "hosts": []}),
            "hosts",
            "unknown field",
        ),
    ];
    let mut steps = vec![good];
    steps.extend(
        bad.iter()
            .map(|(args, _, _)| call("egress-block", args.clone())),
    );
    let answers = server.client("legacy", Value::Array(steps));

    let filed = ok(&answers[0]);
    let id = filed["id"].as_str().unwrap();
    assert_eq!(filed["status"], "pending");
    assert!(filed["next"].as_str().unwrap().contains("proposal-status"));
    assert!(id.starts_with("p-") && id.len() == 10, "{id}");
    let proposal = server.proposal(id);
    assert_eq!(proposal.identity, "dev-k2x9m");
    assert!(proposal.created >= started);
    assert_eq!(
        proposal.justification,
        "I need the serde docs to fix a build error."
    );
    let Request::Egress(egress) = proposal.request else {
        panic!("{proposal:?}")
    };
    assert_eq!(egress.host, "docs.rs");
    assert_eq!(egress.path_allowlist, ["/crate/", "/releases/"]);
    let auth = egress.auth.unwrap();
    assert_eq!(auth.token_ref, "DOCS_KEY");
    assert_eq!(
        auth.scheme,
        bottle_contract::route::AuthScheme::Header {
            name: "x-api-key".parse().unwrap()
        }
    );

    for ((_, field, needle), answer) in bad.iter().zip(&answers[1..]) {
        let text = tool_error(answer);
        assert!(
            text.contains(field) && text.contains(needle),
            "error for {field} lacks {needle:?}: {text}"
        );
    }
    // Only the good call left a proposal.
    let files = std::fs::read_dir(server.queue().join("proposals"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
    let again = server.client(
        "legacy",
        json!([
            // Asking again for a host that is waiting names the waiting proposal.
            call(
                "egress-block",
                json!({"host": "docs.rs", "justification": "again"})
            ),
            // A routed host with a prefix its route lacks is an extension, as the proxy's
            // "outside the route's path_allowlist" refusal suggests.
            call(
                "egress-block",
                json!({"host": "api.github.com",
                                        "path_allowlist": ["/orgs/alice/"], "justification": j})
            ),
            call(
                "egress-block",
                json!({"host": "api.github.com",
                                        "path_allowlist": ["/repos/alice/x"], "justification": j})
            ),
        ]),
    );
    assert!(tool_error(&again[0]).contains(id));
    let extension = ok(&again[1])["id"].as_str().unwrap().to_owned();
    let Request::Egress(asked) = server.proposal(&extension).request else {
        panic!("not an egress proposal")
    };
    assert_eq!(asked.path_allowlist, ["/orgs/alice/"]);
    assert!(tool_error(&again[2]).contains("already inside"));
}

#[test]
fn capability_and_pipelock_blocks_validate_and_file() {
    let server = Server::start();
    let dockerfile = "# syntax=docker/dockerfile:1\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n\
                      RUN apt-get update \\\n && apt-get install -y jq\nUSER agent\n";
    let j = "jq is missing and I cannot install it";
    let steps = json!([
        call(
            "capability-block",
            json!({"dockerfile": dockerfile, "justification": j})
        ),
        call(
            "capability-block",
            json!({"dockerfile": "FROM a\nRUNN x\n", "justification": j})
        ),
        call(
            "capability-block",
            json!({"dockerfile": "RUN x\n", "justification": j})
        ),
        call(
            "capability-block",
            json!({
            "dockerfile": format!("FROM a\n{}", "RUN true\n".repeat(8000)), "justification": j})
        ),
        call(
            "capability-block",
            json!({"dockerfile": dockerfile, "justification": ""})
        ),
        call(
            "pipelock-block",
            json!({"change": "api_allowlist: [docs.rs]\n", "justification": j})
        ),
        call(
            "pipelock-block",
            json!({"change": "- just\n- a list\n", "justification": j})
        ),
        call(
            "pipelock-block",
            json!({"change": "a: [unclosed\n", "justification": j})
        ),
        call(
            "pipelock-block",
            json!({"change": format!("a: \"{}\"", "x".repeat(17_000)),
                                      "justification": j})
        ),
    ]);
    let answers = server.client(STATELESS, steps);

    let id = ok(&answers[0])["id"].as_str().unwrap().to_owned();
    assert_eq!(ok(&answers[0])["kind"], "capability");
    assert_eq!(
        server.proposal(&id).request,
        Request::Capability {
            dockerfile: dockerfile.into()
        }
    );
    for (answer, needles) in answers[1..5].iter().zip([
        ["dockerfile", "line 2: unknown instruction `RUNN`"],
        ["dockerfile", "RUN before FROM"],
        ["dockerfile", "at most 65536"],
        ["justification", "empty"],
    ]) {
        let text = tool_error(answer);
        assert!(needles.iter().all(|n| text.contains(n)), "{text}");
    }

    let id = ok(&answers[5])["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.proposal(&id).request,
        Request::Pipelock {
            change: "api_allowlist: [docs.rs]\n".into()
        }
    );
    for (answer, needle) in answers[6..]
        .iter()
        .zip(["mapping", "not valid YAML", "16384"])
    {
        let text = tool_error(answer);
        assert!(
            text.contains("change") && text.contains(needle),
            "{needle}: {text}"
        );
    }
}

#[test]
fn list_egress_routes_reads_the_config_fresh_and_shows_no_secret() {
    let server = Server::start();
    let before = server.client("legacy", json!([call("list-egress-routes", json!({}))]));
    let routes = ok(&before[0])["routes"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 4);
    let github = routes
        .iter()
        .find(|r| r["host"] == "api.github.com")
        .unwrap();
    assert_eq!(github["path_allowlist"], json!(["/repos/alice/", "/user"]));
    assert_eq!(github["auth"], "token");
    let key = routes.iter().find(|r| r["host"] == "key.test").unwrap();
    assert_eq!(key["auth"], "header");
    assert_eq!(key["header"], "x-api-key");
    let open = routes
        .iter()
        .find(|r| r["host"] == "*.example.org")
        .unwrap();
    assert!(open["auth"].is_null(), "{open}");
    let text = before[0].to_string();
    for slot in [
        "GH_PAT_SLOT",
        "KEY_SLOT",
        "CLAUDE_BOTTLE_OAUTH_TOKEN",
        "token_ref",
    ] {
        assert!(!text.contains(slot), "{slot} leaked: {text}");
    }

    // The launcher replaces the file on approval: the next call sees the new route.
    let mut routes = base_routes();
    routes
        .as_array_mut()
        .unwrap()
        .push(json!({"host": "docs.rs", "path_allowlist": ["/crate/"], "auth": null}));
    let tmp = server.dir.path().join("config.json.new");
    std::fs::write(&tmp, config_json(server.dir.path(), routes).to_string()).unwrap();
    std::fs::rename(&tmp, &server.config).unwrap();
    let after = server.client(
        "legacy",
        json!([
            call("list-egress-routes", json!({})),
            call(
                "egress-block",
                json!({"host": "docs.rs", "justification": "x"})
            ),
        ]),
    );
    let routes = ok(&after[0])["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r["host"] == "docs.rs"), "{routes:?}");
    assert!(tool_error(&after[1]).contains("already has a route"));
}

/// Reads the next JSON answer from a running client.
fn next_answer(out: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    assert!(out.read_line(&mut line).unwrap() > 0, "client ended early");
    serde_json::from_str(&line).unwrap()
}

#[test]
fn proposal_status_waits_for_the_hosts_decision() {
    let server = Server::start();
    let filed = server.client(
        "legacy",
        json!([
            call(
                "egress-block",
                json!({"host": "docs.rs", "justification": "docs"})
            ),
            call(
                "capability-block",
                json!({"dockerfile": "FROM a\n", "justification": "x"})
            ),
            call(
                "pipelock-block",
                json!({"change": "a: 1", "justification": "x"})
            ),
        ]),
    );
    let ids: Vec<String> = filed
        .iter()
        .map(|a| ok(a)["id"].as_str().unwrap().to_owned())
        .collect();

    // Approved while the agent waits: the answer arrives soon after the host writes it.
    let mut waiter = client_command(&server.url(), "legacy", None)
        .spawn()
        .unwrap();
    waiter
        .stdin
        .take()
        .unwrap()
        .write_all(
            json!([{"op": "call", "tool": "proposal-status", "announce": true,
                    "args": {"id": ids[0], "wait_seconds": 40}}])
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    let mut out = BufReader::new(waiter.stdout.take().unwrap());
    // Once the client is calling, let it wait a moment, then decide as the host does.
    assert_eq!(next_answer(&mut out)["calling"], "proposal-status");
    std::thread::sleep(Duration::from_secs(2));
    let decided_at = Instant::now();
    server.decide(
        &ids[0],
        Verdict::Approved,
        None,
        "route added; retry the request",
    );
    let answer = next_answer(&mut out);
    let waited = decided_at.elapsed();
    assert!(waiter.wait().unwrap().success());
    let status = ok(&answer);
    assert_eq!(status["status"], "approved", "{answer}");
    assert_eq!(status["message"], "route added; retry the request");
    assert_eq!(status["kind"], "egress");
    assert!(
        waited < Duration::from_secs(5),
        "the answer came {waited:?} after the decision"
    );

    // Rejected (decided before the call), pending after a short wait, unknown ids.
    server.decide(
        &ids[1],
        Verdict::Rejected,
        Some("no new packages today"),
        "carry on without jq",
    );
    let t0 = Instant::now();
    let answers = server.client(
        STATELESS,
        json!([
            call("proposal-status", json!({"id": ids[1]})),
            call("proposal-status", json!({"id": ids[2], "wait_seconds": 2})),
            call(
                "proposal-status",
                json!({"id": "p-nothere0", "wait_seconds": 0})
            ),
            call(
                "proposal-status",
                json!({"id": "../decisions/x", "wait_seconds": 0})
            ),
        ]),
    );
    let rejected = ok(&answers[0]);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["reason"], "no new packages today");
    assert_eq!(rejected["message"], "carry on without jq");
    assert_eq!(rejected["kind"], "capability");
    let pending = ok(&answers[1]);
    assert_eq!(pending["status"], "pending");
    assert!(pending["message"].as_str().unwrap().contains(&ids[2]));
    assert!(t0.elapsed() >= Duration::from_secs(2));
    for answer in &answers[2..] {
        let text = tool_error(answer);
        assert!(
            text.contains("id") && text.contains("no proposal"),
            "{text}"
        );
    }
    // The bundle wrote no decision of its own.
    let decisions = std::fs::read_dir(server.queue().join("decisions"))
        .unwrap()
        .count();
    assert_eq!(decisions, 2);
}

#[test]
fn stateless_requests_work_from_the_sdk_and_from_raw_http() {
    let server = Server::start();
    // The SDK pinned to 2026-07-28: no initialize, every request stands alone.
    let sdk = server.client(
        STATELESS,
        json!([
            {"op": "session"},
            call("egress-block", json!({"host": "pypi.org", "justification": "need a wheel"})),
        ]),
    );
    assert_eq!(sdk[0]["protocol"], STATELESS);
    let id = ok(&sdk[1])["id"].as_str().unwrap().to_owned();

    // Raw HTTP with httpx: the 2026-07-28 headers and `_meta`, no initialize, no session id.
    let raw = server.client(
        STATELESS,
        json!([
            raw_stateless("tools/list", None, json!({}), None),
            raw_stateless(
                "tools/call",
                Some("proposal-status"),
                json!({"name": "proposal-status", "arguments": {"id": id, "wait_seconds": 0}}),
                None,
            ),
            raw_stateless(
                "tools/call",
                Some("egress-block"),
                json!({"name": "egress-block",
                       "arguments": {"host": "PyPI.org", "justification": "x"}}),
                None,
            ),
        ]),
    );
    for answer in &raw {
        assert_eq!(answer["status"], 200, "{answer}");
        let headers = answer["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("mcp-session-id"),
            "a stateless answer carried a session: {headers:?}"
        );
    }
    let tools = raw[0]["body"]["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 5, "{}", raw[0]);
    let status = &raw[1]["body"]["result"];
    assert_eq!(
        status["structuredContent"]["status"], "pending",
        "{}",
        raw[1]
    );
    assert_eq!(status["structuredContent"]["id"], json!(id));
    let bad = &raw[2]["body"]["result"];
    assert_eq!(bad["isError"], true, "{}", raw[2]);
    assert!(
        bad["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("lowercase")
    );
}

#[test]
fn the_unix_socket_serves_the_same_server() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start();
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666, "the relay's uid must be able to connect");
    // As the relay forwards it: the agent's Host header, over the socket.
    let url = "http://supervise:9100/mcp";
    let answers = run_client(
        url,
        "legacy",
        Some(&server.socket),
        json!([
            {"op": "list"},
            call("egress-block", json!({"host": "crates.io", "justification": "cargo add"})),
            raw_stateless("tools/list", None, json!({}), None),
        ]),
    );
    assert_eq!(answers[0]["tools"].as_array().unwrap().len(), 5);
    let id = ok(&answers[1])["id"].as_str().unwrap().to_owned();
    assert_eq!(answers[2]["status"], 200);
    // The same queue as over TCP.
    let over_tcp = server.client(
        "auto",
        json!([call(
            "proposal-status",
            json!({"id": id, "wait_seconds": 0})
        )]),
    );
    assert_eq!(ok(&over_tcp[0])["status"], "pending");
}

#[test]
fn host_headers_other_than_the_bundles_names_get_403() {
    let server = Server::start();
    let port = server.addr.rsplit_once(':').unwrap().1.to_owned();
    let allowed = [
        "supervise".to_owned(),
        "supervise:9100".to_owned(),
        "bundle".to_owned(),
        format!("bundle:{port}"),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
    ];
    let refused = [
        "evil.example",
        "evil.example:9100",
        "supervise.evil.example",
        "10.0.0.1",
    ];
    let steps: Vec<Value> = allowed
        .iter()
        .map(String::as_str)
        .chain(refused)
        .map(|host| raw_stateless("tools/list", None, json!({}), Some(host)))
        .collect();
    let answers = server.client(STATELESS, Value::Array(steps));
    for (host, answer) in allowed
        .iter()
        .map(String::as_str)
        .chain(refused)
        .zip(&answers)
    {
        let expected = if refused.contains(&host) { 403 } else { 200 };
        assert_eq!(answer["status"], expected, "Host {host}: {answer}");
    }
    assert!(server.log().contains("disallowed Host header"));
}

#[test]
fn origins_other_than_the_bundles_get_403_and_no_origin_is_served() {
    let server = Server::start();
    let allowed = [
        None,
        Some("http://supervise:9100"),
        Some("http://bundle:9100"),
        Some("http://localhost:9100"),
        Some("http://127.0.0.1:9100"),
    ];
    let refused = [
        "http://evil.example",
        "http://evil.example:9100",
        "https://supervise:9100",
        "http://supervise.evil.example:9100",
        "http://supervise:8080",
        "null",
    ];
    let cases: Vec<(Option<&str>, u16)> = allowed
        .iter()
        .map(|o| (*o, 200))
        .chain(refused.iter().map(|o| (Some(*o), 403)))
        .collect();
    // Both revisions: the 2026-07-28 stateless POST and the session handshake's initialize.
    let mut steps = Vec::new();
    for (origin, _) in &cases {
        for mut step in [
            raw_stateless("tools/list", None, json!({}), None),
            json!({"op": "raw", "headers": {"MCP-Protocol-Version": "2025-11-25"}, "body": {
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "raw-httpx", "version": "1"}}}}),
        ] {
            if let Some(origin) = origin {
                step["headers"]["Origin"] = json!(origin);
            }
            steps.push(step);
        }
    }
    let answers = server.client(STATELESS, Value::Array(steps));
    assert_eq!(answers.len(), cases.len() * 2);
    for (i, answer) in answers.iter().enumerate() {
        let (origin, expected) = cases[i / 2];
        assert_eq!(answer["status"], expected, "Origin {origin:?}: {answer}");
    }
}

#[test]
fn pending_proposals_are_capped_at_twenty() {
    let server = Server::start();
    let steps: Vec<Value> = (0..21)
        .map(|i| {
            call(
                "egress-block",
                json!({"host": format!("h{i}.test"), "justification": "loop"}),
            )
        })
        .collect();
    let answers = server.client(STATELESS, Value::Array(steps));
    for answer in &answers[..20] {
        ok(answer);
    }
    let text = tool_error(&answers[20]);
    assert!(
        text.contains("at most 20") && text.contains("proposal-status"),
        "{text}"
    );
}

#[test]
fn sighup_does_not_stop_the_server() {
    let mut server = Server::start();
    for _ in 0..3 {
        server.signal("HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP killed mcp: {}",
        server.log()
    );
    let answers = server.client(STATELESS, json!([call("list-egress-routes", json!({}))]));
    ok(&answers[0]);
    assert!(server.log().contains("SIGHUP"), "{}", server.log());
    // SIGTERM still stops it, cleanly.
    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mcp ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", server.log());
}
