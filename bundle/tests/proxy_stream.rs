//! Streaming through the proxy: the Python `anthropic` SDK reads a Messages stream from a local
//! fake that sends SSE events with gaps; every event must reach the client before the fake
//! sends the next one (no buffering anywhere on the path).

// Checks are plain functions run once per outbound mode; a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::UNIX_EPOCH;

use support::upstream::SSE_EVENTS;
use support::{Env, KEY_TOKEN, Mode};

#[test]
fn anthropic_sdk_stream_direct() {
    anthropic_sdk_stream_arrives_event_by_event_with_the_injected_key(Mode::Direct);
}

#[test]
fn anthropic_sdk_stream_chained() {
    anthropic_sdk_stream_arrives_event_by_event_with_the_injected_key(Mode::Chained);
}

fn anthropic_sdk_stream_arrives_event_by_event_with_the_injected_key(mode: Mode) {
    let env = Env::start(mode);
    let out = env.python(
        r#"
import json, os, time, anthropic
client = anthropic.Anthropic(
    api_key="placeholder-not-a-secret",
    base_url=f"https://key.test:{os.environ['PORT']}",
    http_client=anthropic.DefaultHttpxClient(proxy=os.environ["PROXY"], verify=os.environ["CA"]),
)
arrivals = []
with client.messages.stream(model="claude-test", max_tokens=16,
                            messages=[{"role": "user", "content": "hi"}]) as stream:
    for text in stream.text_stream:
        arrivals.append([text, time.time()])
print(json.dumps(arrivals))
"#,
    );
    assert!(
        out.status.success(),
        "anthropic SDK failed (pip install anthropic): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arrivals: Vec<(String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let sent: Vec<f64> = env
        .upstream
        .sse_sent
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64())
        .collect();
    assert_eq!(arrivals.len(), SSE_EVENTS, "{arrivals:?}");
    assert_eq!(sent.len(), SSE_EVENTS);
    for i in 0..SSE_EVENTS {
        assert_eq!(arrivals[i].0, format!("chunk{i} "));
        if i + 1 < SSE_EVENTS {
            assert!(
                arrivals[i].1 < sent[i + 1],
                "event {i} arrived at {} but event {} was sent at {}: the stream was buffered",
                arrivals[i].1,
                i + 1,
                sent[i + 1]
            );
        }
    }
    let seen = env.upstream.seen();
    let call = seen
        .iter()
        .find(|s| s.path_and_query == "/v1/messages")
        .unwrap();
    assert_eq!(call.header("x-api-key"), Some(KEY_TOKEN));
    assert!(!format!("{seen:?}").contains("placeholder-not-a-secret"));
}
