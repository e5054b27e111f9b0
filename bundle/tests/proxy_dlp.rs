//! `egress.dlp`: the bottle's secrets do not leave through the proxy. A secret env value the
//! agent holds (`AGENT_SECRET`) and the route tokens it never should hold are refused in every
//! channel (host name, path, query, header, body) and every encoding the proxy looks for, with a
//! 403 naming the variable; nothing complete reaches the upstream; the same request without the
//! secret goes through. Answers that echo a secret reach the agent masked, an event stream still
//! event by event.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod support;

use bottle_contract::bundle_config::DlpMode;
use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
use support::{
    AGENT_SECRET, BEARER_TOKEN, CREDENTIAL_LABEL_HOSTS, Env, KEY_TOKEN, Mode, PLAIN_LABEL_HOST,
};

/// `value`'s wire forms a URL can carry as they are, by name.
fn url_forms(value: &str) -> Vec<(&'static str, String)> {
    let b = value.as_bytes();
    vec![
        ("raw", value.to_owned()),
        ("base64url", BASE64URL_NOPAD.encode(b)),
        ("hex", HEXLOWER.encode(b)),
        ("HEX", HEXUPPER.encode(b)),
        ("base32", BASE32_NOPAD.encode(b)),
        (
            "percent",
            b.iter().map(|c| format!("%{c:02X}")).collect::<String>(),
        ),
    ]
}

/// Every form the issue names, for headers and bodies (any bytes go).
fn all_forms(value: &str) -> Vec<(&'static str, String)> {
    let mut forms = url_forms(value);
    let b = value.as_bytes();
    // Inside a larger base64 blob, at each alignment.
    for lead in ["", "x", "xy"] {
        let blob = format!("{lead}{{\"password\":\"{value}\"}}");
        forms.push(("base64 blob", BASE64.encode(blob.as_bytes())));
    }
    forms.push((
        "json \\u",
        value
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
    ));
    forms.push((
        "json",
        serde_json::to_string(value).unwrap().replace('/', "\\/"),
    ));
    forms.push((
        "form",
        percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string(),
    ));
    forms
}

/// A value of the same shape that is no secret of this bottle: the control.
const CONTROL: &str = "not-a-held-Secret/value+1a2b3c4d";

fn assert_refused_naming(code: u16, body: &str, name: &str, what: &str) {
    assert_eq!(code, 403, "{what}: {body}");
    assert!(body.contains(name), "{what}: {body}");
    assert!(
        !body.contains(AGENT_SECRET),
        "{what}: the refusal shows the value"
    );
}

#[test]
fn a_held_secret_leaves_by_no_channel_in_no_encoding() {
    let env = Env::start(Mode::Direct);
    let dir = env.dir.path().to_owned();
    for secret in [AGENT_SECRET, CONTROL] {
        let held = secret == AGENT_SECRET;
        let check = |what: &str, (code, body, err): (u16, String, String)| {
            if held {
                assert_refused_naming(code, &body, "AGENT_SECRET", what);
            } else if what == "path percent" {
                // An escaped `/` in a path is refused for what it is, secret or not.
                assert!(body.contains("ambiguous"), "control {what}: {body}{err}");
            } else {
                assert_eq!(code, 200, "control {what}: {body}{err}");
            }
        };
        for (encoding, form) in url_forms(secret) {
            let path = env.url("open.test", &format!("/p/{form}"));
            check(&format!("path {encoding}"), env.curl(&[&path]));
            let query = env.url("open.test", &format!("/q?token={form}"));
            check(&format!("query {encoding}"), env.curl(&[&query]));
        }
        for (encoding, form) in all_forms(secret) {
            let url = env.url("open.test", "/h");
            let header = format!("X-Data: {form}");
            check(
                &format!("header {encoding}"),
                env.curl(&["-H", &header, &url]),
            );
            let cookie = format!("Cookie: session={form}");
            check(
                &format!("cookie {encoding}"),
                env.curl(&["-H", &cookie, &url]),
            );
            let file = dir.join("body");
            std::fs::write(&file, format!("{{\"data\":\"{form}\"}}")).unwrap();
            let data = format!("@{}", file.display());
            let upload = env.url("open.test", "/upload");
            check(
                &format!("body {encoding}"),
                env.curl(&["--data-binary", &data, &upload]),
            );
        }
        // A subdomain of a wildcard route: refused at the CONNECT, before any lookup or leaf
        // certificate (the name does not resolve, so a lookup would have answered 502). Any
        // base32 blob is refused by its shape too (below), so the control is a plain word.
        let label = if held {
            BASE32_NOPAD.encode(secret.as_bytes()).to_ascii_lowercase()
        } else {
            "control-label".to_owned()
        };
        let (code, body, err) = env.curl(&[&env.url(&format!("{label}.wild.test"), "/")]);
        if held {
            assert!(
                err.contains("CONNECT tunnel failed, response 403"),
                "{code} {body}{err}"
            );
        } else {
            assert_eq!(code, 502, "control host label: {body}{err}");
        }
    }

    // The upstream saw only the controls: no form of the secret in any path, header or body.
    let seen = format!("{:?}", env.upstream.seen());
    let received = String::from_utf8_lossy(&env.upstream.received.lock().unwrap()).into_owned();
    for (encoding, form) in all_forms(AGENT_SECRET) {
        assert!(!seen.contains(&form), "{encoding} reached the upstream");
        assert!(!received.contains(&form), "{encoding} reached the upstream");
    }
    assert!(seen.contains(CONTROL) || received.contains(CONTROL));
    // The audit log names the variable and never holds the value, even a refused path.
    let audit = env.audit_until(|lines| {
        lines.iter().any(|l| {
            l["secret"]
                .as_str()
                .is_some_and(|s| s.contains("host name"))
        })
    });
    let text = std::fs::read_to_string(&env.audit_path).unwrap();
    for (encoding, form) in url_forms(AGENT_SECRET) {
        assert!(!text.contains(&form), "{encoding} is in the audit log");
    }
    assert!(
        audit.iter().any(|l| l["reason"] == "secret-in-request"
            && l["secret"].as_str().unwrap().starts_with("AGENT_SECRET")),
        "{audit:?}"
    );
}

/// Labels under a wildcard route shaped like credentials the bundle was never told about are
/// refused on the CONNECT and on a cleartext request, before any connection: the names resolve
/// to the upstream and its certificate covers them, yet it never sees them; the plain name
/// beside them goes through.
#[test]
fn a_credential_shaped_label_under_a_wildcard_is_refused_before_any_connection() {
    let env = Env::start(Mode::Direct);
    let (code, body, err) = env.curl(&[&env.url(PLAIN_LABEL_HOST, "/")]);
    assert_eq!(code, 200, "control: {body}{err}");
    for host in CREDENTIAL_LABEL_HOSTS {
        let (code, body, err) = env.curl(&["-v", &env.url(host, "/")]);
        assert!(
            err.contains("CONNECT tunnel failed, response 403"),
            "{host}: {code} {body}{err}"
        );
        let label = host.split('.').next().unwrap();
        let cleartext = format!("http://{host}:{}/", env.upstream.port());
        let (code, body, _) = env.curl(&[&cleartext]);
        assert_eq!(code, 403, "{host}: {body}");
        assert!(body.contains("looks like a credential"), "{body}");
        assert!(!body.contains(label), "the refusal shows the label: {body}");
    }
    let seen = env.upstream.seen();
    assert!(seen.iter().any(|s| s.host.starts_with(PLAIN_LABEL_HOST)));
    for host in CREDENTIAL_LABEL_HOSTS {
        assert!(
            !seen.iter().any(|s| s.host.starts_with(host)),
            "{host} reached the upstream"
        );
    }
    // Audited with why, the label starred out.
    let audit = env.audit_until(|lines| {
        lines
            .iter()
            .filter(|l| l["reason"] == "credential-shaped-host")
            .count()
            >= 2 * CREDENTIAL_LABEL_HOSTS.len()
    });
    let text = format!("{audit:?}");
    for host in CREDENTIAL_LABEL_HOSTS {
        assert!(!text.contains(host.split('.').next().unwrap()), "{text}");
    }
    assert!(text.contains("aws-access-key-id"), "{text}");
}

#[test]
fn a_route_token_goes_only_to_its_own_route() {
    let env = Env::start(Mode::Direct);
    // A token the agent should never have (planted in a file, as if it leaked to it).
    let file = env.dir.path().join("leaked");
    std::fs::write(&file, format!("token={BEARER_TOKEN}")).unwrap();
    let data = format!("@{}", file.display());
    let (code, body, _) = env.curl(&["--data-binary", &data, &env.url("open.test", "/upload")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("API"), "{body}");
    assert!(!body.contains(BEARER_TOKEN));
    assert!(env.upstream.received.lock().unwrap().is_empty());
    // Its own route already gets it from the proxy: carrying it there is no leak.
    let (code, body, _) = env.curl(&["--data-binary", &data, &env.url("api.test", "/v1/upload")]);
    assert_eq!(code, 200, "{body}");
    let received = env.upstream.received.lock().unwrap().clone();
    assert!(String::from_utf8_lossy(&received).contains(BEARER_TOKEN));
}

#[test]
fn a_secret_deep_in_a_streamed_body_ends_the_request_before_it_is_complete() {
    let env = Env::start(Mode::Direct);
    let mut body = vec![b'a'; 700 * 1024 + 5];
    body.extend_from_slice(AGENT_SECRET.as_bytes());
    body.extend_from_slice(&vec![b'b'; 300 * 1024]);
    let file = env.dir.path().join("big");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let (code, text, err) = env.curl(&["--data-binary", &data, &env.url("open.test", "/upload")]);
    assert_eq!(code, 403, "{text}{err}");
    assert!(
        text.contains("AGENT_SECRET") && text.contains("body"),
        "{text}"
    );
    let received = env.upstream.received.lock().unwrap().clone();
    assert!(
        received.len() < 700 * 1024 + 5 + AGENT_SECRET.len(),
        "{} bytes reached the upstream",
        received.len()
    );
    assert!(!String::from_utf8_lossy(&received).contains(AGENT_SECRET));
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_50_mb_upload_without_a_secret_passes_in_bounded_memory() {
    let env = Env::start(Mode::Direct);
    let file = env.dir.path().join("upload");
    // Varied bytes (a repeating pattern would be kinder to the matcher than real data).
    let mut data = Vec::with_capacity(50 << 20);
    let mut x: u32 = 0x9e37_79b9;
    while data.len() < 50 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&file, &data).unwrap();
    let before = peak_rss_kib(env.proxy.child.id());
    let arg = format!("@{}", file.display());
    let (code, text, err) = env.curl(&["--data-binary", &arg, &env.url("open.test", "/upload")]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(text.trim(), format!("received {}", 50 << 20));
    let grown = peak_rss_kib(env.proxy.child.id()).saturating_sub(before);
    assert!(grown < 25 * 1024, "the proxy grew by {grown} KiB");
}

#[test]
fn reflected_credentials_reach_the_agent_masked_in_headers_and_bodies_h1_and_h2() {
    let env = Env::start(Mode::Direct);
    let masked = "*".repeat(BEARER_TOKEN.len());
    for version in ["--http1.1", "--http2"] {
        let (code, body, err) = env.curl(&[version, "-D", "-", &env.url("api.test", "/v1/echo")]);
        assert_eq!(code, 200, "{err}");
        assert!(!body.contains(BEARER_TOKEN), "{version}: {body}");
        assert!(
            body.to_ascii_lowercase()
                .contains(&format!("x-echo-authorization: bearer {masked}")),
            "{version}: {body}"
        );
        assert!(
            body.contains(&format!("authorization: Bearer {masked}")),
            "{body}"
        );
    }
    // The upstream did get the real token.
    assert!(format!("{:?}", env.upstream.seen()).contains(BEARER_TOKEN));
}

#[test]
fn a_reflected_key_in_an_event_stream_is_masked_and_events_still_arrive_one_by_one() {
    let env = Env::start(Mode::Direct);
    for http2 in ["False", "True"] {
        let script = format!(
            r#"
import json, os, time, httpx
client = httpx.Client(proxy=os.environ["PROXY"], verify=os.environ["CA"], http2={http2})
url = f"https://key.test:{{os.environ['PORT']}}/v1/messages?reflect"
arrivals = []
with client.stream("POST", url, json={{}}) as r:
    print(r.http_version, file=__import__("sys").stderr)
    for line in r.iter_lines():
        if line.startswith("data:") and "text_delta" in line:
            arrivals.append([json.loads(line[5:])["delta"]["text"], time.time()])
print(json.dumps(arrivals))
"#
        );
        env.upstream.sse_sent.lock().unwrap().clear();
        let out = env.python(&script);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let want = if http2 == "True" {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        assert!(stderr.contains(want), "{stderr}");
        let arrivals: Vec<(String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
        let sent: Vec<f64> = env
            .upstream
            .sse_sent
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            })
            .collect();
        assert_eq!(
            arrivals.len(),
            support::upstream::SSE_EVENTS,
            "{arrivals:?}"
        );
        let masked = "*".repeat(KEY_TOKEN.len());
        for (i, (text, at)) in arrivals.iter().enumerate() {
            assert_eq!(text, &format!("chunk{i} {masked} "), "{want}");
            if let Some(next) = sent.get(i + 1) {
                assert!(at < next, "{want}: event {i} waited for event {}", i + 1);
            }
        }
    }
}

#[test]
fn with_dlp_log_a_secret_is_forwarded_and_audited_by_name() {
    let env = Env::start_dlp(Mode::Direct, &[], DlpMode::Log);
    let url = env.url("open.test", &format!("/q?token={AGENT_SECRET}"));
    let (code, _, err) = env.curl(&[&url]);
    assert_eq!(code, 200, "{err}");
    let audit = env.audit_until(|lines| lines.iter().any(|l| l["secret"].is_string()));
    let line = audit.iter().find(|l| l["secret"].is_string()).unwrap();
    assert!(
        line["secret"].as_str().unwrap().starts_with("AGENT_SECRET"),
        "{line}"
    );
    assert_eq!(line["decision"], "allow");
}

#[test]
fn with_dlp_off_nothing_is_looked_at() {
    let env = Env::start_dlp(Mode::Direct, &[], DlpMode::Off);
    let url = env.url("open.test", &format!("/q?token={AGENT_SECRET}"));
    let (code, _, err) = env.curl(&[&url]);
    assert_eq!(code, 200, "{err}");
    let (_, body, _) = env.curl(&[&env.url("api.test", "/v1/echo")]);
    assert!(body.contains(BEARER_TOKEN), "off masks nothing: {body}");
}

#[test]
fn a_compressed_request_body_is_refused_with_what_to_do() {
    let env = Env::start(Mode::Direct);
    let file = env.dir.path().join("gz");
    std::fs::write(&file, b"\x1f\x8b\x08\x00\x00\x00\x00\x00").unwrap();
    let data = format!("@{}", file.display());
    let (code, body, err) = env.curl(&[
        "-H",
        "Content-Encoding: gzip",
        "--data-binary",
        &data,
        &env.url("open.test", "/upload"),
    ]);
    assert_eq!(code, 403, "{body}{err}");
    assert!(body.contains("uncompressed"), "{body}");
    assert!(env.upstream.received.lock().unwrap().is_empty());
}

/// A WebSocket client through the proxy (`websocket-client`): for each `(name, payload)` it
/// opens `url`, sends a harmless message, then the payload (split over two frames when
/// `name` ends in `split`), and prints what came back: an echo, or the close code and reason.
const WS_CLIENT: &str = r#"
import os, ssl, sys, websocket
from websocket import ABNF
port = os.environ["PORT"]
proxy_host, proxy_port = os.environ["PROXY"].removeprefix("http://").split(":")
url = sys.argv[1].replace("PORT", port)
for line in sys.stdin.read().splitlines():
    name, payload = line.split(" ", 1)
    ws = websocket.create_connection(
        url, http_proxy_host=proxy_host, http_proxy_port=int(proxy_port), proxy_type="http",
        sslopt={"ca_certs": os.environ["CA"]},
    )
    ws.send("hello")
    print(name, ws.recv())
    if name.endswith("split"):
        half = len(payload) // 2
        ws.send_frame(ABNF.create_frame(payload[:half], ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(ABNF.create_frame(payload[half:], ABNF.OPCODE_CONT, fin=1))
    else:
        ws.send(payload)
    try:
        opcode, data = ws.recv_data(control_frame=True)
    except Exception as e:
        print(name, "error", type(e).__name__)
        continue
    if opcode == ABNF.OPCODE_CLOSE:
        print(name, "closed", int.from_bytes(data[:2], "big"), data[2:].decode())
    else:
        print(name, data.decode())
    ws.close()
"#;

/// WebSocket frames are looked through too: a message carrying the secret, in any form and
/// split over two frames, closes the connection with 1008 naming the variable, and the upstream
/// never receives it complete; the control message goes through.
#[test]
fn a_secret_in_a_websocket_message_closes_it_before_the_upstream_has_it() {
    let env = Env::start(Mode::Direct);
    let mut input = String::new();
    for secret in [AGENT_SECRET, CONTROL] {
        let tag = if secret == AGENT_SECRET {
            "held"
        } else {
            "control"
        };
        for (encoding, form) in [
            ("raw", secret.to_owned()),
            ("base64", BASE64.encode(secret.as_bytes())),
            ("hex", HEXLOWER.encode(secret.as_bytes())),
        ] {
            input.push_str(&format!("{tag}-{encoding} {{\"data\":\"{form}\"}}\n"));
            input.push_str(&format!("{tag}-{encoding}-split {{\"data\":\"{form}\"}}\n"));
        }
    }
    let out = env.python_with_stdin(WS_CLIENT, &["wss://open.test:PORT/ws"], &input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 24, "{stdout}");
    for pair in lines.chunks(2) {
        let name = pair[0].split(' ').next().unwrap();
        assert!(pair[0].ends_with("echo: hello"), "{stdout}");
        if name.starts_with("held") {
            assert!(
                pair[1].starts_with(&format!("{name} closed 1008 claude-bottle: "))
                    && pair[1].contains("AGENT_SECRET"),
                "{stdout}"
            );
            assert!(!pair[1].contains(AGENT_SECRET), "{stdout}");
        } else {
            assert!(
                pair[1].starts_with(&format!("{name} echo: {{\"data\":")),
                "{stdout}"
            );
        }
    }
    let received = String::from_utf8_lossy(&env.upstream.received.lock().unwrap()).into_owned();
    for (encoding, form) in all_forms(AGENT_SECRET) {
        assert!(!received.contains(&form), "{encoding} reached the upstream");
    }
    assert!(received.contains(CONTROL));
    let audit = env.audit_until(|lines| {
        lines
            .iter()
            .filter(|l| {
                l["secret"]
                    .as_str()
                    .is_some_and(|s| s.contains("websocket message"))
            })
            .count()
            >= 6
    });
    assert!(!format!("{audit:?}").contains(AGENT_SECRET));
}

/// An upstream that sends the injected key back in a WebSocket message: the agent gets it
/// masked.
#[test]
fn a_reflected_key_in_a_websocket_message_is_masked() {
    let env = Env::start(Mode::Direct);
    let out = env.python_with_stdin(WS_CLIENT, &["wss://key.test:PORT/ws?reflect"], "plain hi\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(KEY_TOKEN), "{stdout}");
    let stars = "*".repeat(KEY_TOKEN.len());
    assert!(
        stdout.contains(&format!("plain echo: hi key={stars}")),
        "{stdout}"
    );
    // The upstream did get the key: it was injected, then masked on the way back.
    assert!(
        env.upstream
            .seen()
            .iter()
            .any(|s| s.header("x-api-key") == Some(KEY_TOKEN))
    );
}
