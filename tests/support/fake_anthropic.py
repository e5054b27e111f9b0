# A fake Anthropic API for running the real Claude Code in a bottle: HTTPS on 443 with
# /srv/cert.pem + /srv/key.pem. Every request is appended to /tmp/requests.jsonl (method, path,
# lower-cased headers, body, time). `POST /v1/messages` answers a streamed reply (the SSE events
# Claude Code reads); everything else is a 404, which Claude Code treats as "not available"
# without retrying (NOTES, "Claude Code on the wire").
#
# The reply is scripted by /srv/turns.json, a list of turns; a request gets the turn whose index
# is the number of assistant messages already in its `messages` (so a tool loop walks the list;
# past the end, the last turn). A turn is {"text": "...", "chunks": N, "delay_ms": M} (the text
# in N text deltas M ms apart) or {"tool_use": {"name": "...", "input": {...}}}.
import http.server, json, os, ssl, threading, time

# Defaults are the test container's; bench/claude/run also runs it on the host.
LOG = os.environ.get("FAKE_LOG", "/tmp/requests.jsonl")
SRV = os.environ.get("FAKE_DIR", "/srv")
PORT = int(os.environ.get("FAKE_PORT", "443"))
lock = threading.Lock()

def turns():
    try:
        with open(os.path.join(SRV, "turns.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return [{"text": "Hello from the fake model."}]

def sse(name, data):
    return ("event: %s\ndata: %s\n\n" % (name, json.dumps(data))).encode()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        seen = {"method": self.command, "path": self.path, "time": time.time(),
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        with lock, open(LOG, "a") as f:
            f.write(json.dumps(seen) + "\n")
        if self.command == "POST" and self.path.split("?")[0] == "/v1/messages":
            return self.messages(body)
        out = b'{"type":"error","error":{"type":"not_found_error","message":"not here"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def messages(self, body):
        try:
            req = json.loads(body)
        except ValueError:
            req = {}
        done = sum(1 for m in req.get("messages", []) if m.get("role") == "assistant")
        script = turns() or [{"text": "Hello from the fake model."}]
        turn = script[min(done, len(script) - 1)]
        model = req.get("model", "claude-fake")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(chunk):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()

        usage = {"input_tokens": 10, "output_tokens": 1}
        send(sse("message_start", {"type": "message_start", "message": {
            "id": "msg_fake_%d" % done, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}))
        if "tool_use" in turn:
            tool = turn["tool_use"]
            send(sse("content_block_start", {"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_fake_%d" % done,
                                  "name": tool["name"], "input": {}}}))
            send(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool.get("input", {}))}}))
            stop = "tool_use"
        else:
            text = turn.get("text", "")
            chunks = max(1, int(turn.get("chunks", 1)))
            delay = turn.get("delay_ms", 0) / 1000.0
            size = -(-len(text) // chunks) or 1
            send(sse("content_block_start", {"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}))
            for i in range(0, len(text), size):
                if i and delay:
                    time.sleep(delay)
                send(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text[i:i + size]}}))
            stop = "end_turn"
        send(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        send(sse("message_delta", {"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}}))
        send(sse("message_stop", {"type": "message_stop"}))
        send(b"")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(SRV, "cert.pem"), os.path.join(SRV, "key.pem"))
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
