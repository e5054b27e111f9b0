#!/usr/bin/env python3
"""Benchmark: what `egress.dlp: block` costs the proxy, side by side with `dlp: off`.

Two `bottle-bundle proxy` processes run at once, identical but for `dlp`: one with
`dlp: block` and 20 bottle secrets (10 agent env values, 10 route tokens; every encoding of
each is looked for in every request and answer), one with `dlp: off`. Against a local nginx
HTTPS upstream it measures, alternating between the two (off, block, off, block, ...; median of
`--runs`):

  * small HTTPS GETs on keep-alive with oha (`-c 16` and `-c 1`): req/s and p50;
  * a 100 MB download (`curl`, nginx serving a file): MB/s;
  * a 100 MB upload (`curl --data-binary`, nginx reading the whole body before answering):
    MB/s. The upload's bytes are random, so the body scan sees no secret and no text.

Run as root from the repository root:  python3 bench/proxy/dlp.py [--runs 3] [--duration 10s]
`--transfers-only` measures only the 100 MB download and upload (no oha needed).
Needs: nginx, openssl, curl (Debian); oha (`cargo install oha --locked`). It re-runs itself in
a private mount namespace whose /etc/hosts maps bench.test to 127.0.0.1, and builds
`bottle-bundle` in release mode.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLE = os.path.join(ROOT, "target/release/bottle-bundle")
NGINX_PORT = 18443
SINK_PORT = 18444
PORTS = {"off": 19101, "block": 19102}
LARGE_MB = 100


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def wait_port(port, timeout=20):
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"error: nothing listening on {port}")


def oha(url, proxy, ca, concurrency, duration):
    out = json.loads(run(["oha", "-z", duration, "-c", str(concurrency), "--no-tui",
                          "--output-format", "json", "-x", proxy, "--cacert", ca, url]).stdout)
    codes = out.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    if bad:
        sys.exit(f"error: non-2xx answers through {proxy}: {bad}")
    return out["summary"]["requestsPerSec"], out["latencyPercentiles"]["p50"] * 1000


def curl(args, proxy, ca, field):
    out = run(["curl", "-sS", "-o", "/dev/null", "--cacert", ca, "-x", proxy,
               "-w", "%{http_code} %{" + field + "}"] + args).stdout.split()
    if out[0] != "200":
        sys.exit(f"error: curl {args} through {proxy} answered {out[0]}")
    return float(out[1]) / 1e6


def cpu_seconds(pid):
    """User + system CPU time the process has used (a figure the machine's load does not move)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup(tmp):
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{tmp}/up-ca.key", "-out", f"{tmp}/up-ca.pem", "-days", "2",
         "-subj", "/CN=bench upstream CA"])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{tmp}/up.key", "-out", f"{tmp}/up.csr", "-subj", "/CN=bench.test"])
    with open(f"{tmp}/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:bench.test\n")
    run(["openssl", "x509", "-req", "-in", f"{tmp}/up.csr", "-CA", f"{tmp}/up-ca.pem",
         "-CAkey", f"{tmp}/up-ca.key", "-CAcreateserial", "-out", f"{tmp}/up.pem", "-days", "2",
         "-extfile", f"{tmp}/ext.cnf"])
    os.makedirs(f"{tmp}/www", exist_ok=True)
    with open(f"{tmp}/www/large", "wb") as f:
        # Random bytes, as in a compressed package or a git pack.
        for _ in range(LARGE_MB):
            f.write(os.urandom(1 << 20))
    shutil.copy(f"{tmp}/www/large", f"{tmp}/upload")
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  client_max_body_size 0;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  server {{
    listen 127.0.0.1:{NGINX_PORT} ssl;
    ssl_certificate {tmp}/up.pem;
    ssl_certificate_key {tmp}/up.key;
    root {tmp}/www;
    location = /small {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    # The whole body is read (buffered) before the sink is asked, so an upload is timed to
    # its last byte.
    location = /upload {{ client_max_body_size 0; proxy_request_buffering on;
                         proxy_pass http://127.0.0.1:{SINK_PORT}/; }}
  }}
  server {{
    listen 127.0.0.1:{SINK_PORT};
    location / {{ return 200 "stored\\n"; }}
  }}
}}
""")
    run([BUNDLE, "ca", "init", "--cert", f"{tmp}/ca.pem", "--key", f"{tmp}/ca-key.pem"])
    tokens = {f"TOKEN_{i}": "tok_" + secrets.token_urlsafe(24) for i in range(10)}
    env = {f"AGENT_SECRET_{i}": secrets.token_urlsafe(24) for i in range(10)}
    with open(f"{tmp}/secrets.json", "w") as f:
        json.dump({"tokens": tokens, "env": env}, f)
    os.chmod(f"{tmp}/secrets.json", 0o600)
    # The benchmarked route injects one token; nine more routes hold the rest.
    routes = [{"host": "bench.test", "port": NGINX_PORT, "path_allowlist": [],
               "auth": {"scheme": "bearer", "token_ref": "TOKEN_0"}}]
    routes += [{"host": f"r{i}.bench.test", "port": NGINX_PORT, "path_allowlist": [],
                "auth": {"scheme": "bearer", "token_ref": f"TOKEN_{i}"}} for i in range(1, 10)]
    for mode, port in PORTS.items():
        config = {
            "schema_version": 3, "identity": "bench-aaaaa", "roles": ["proxy"],
            "proxy": {
                "listen": {"tcp": f"127.0.0.1:{port}", "unix": None},
                "ca_cert": f"{tmp}/ca.pem", "ca_key": f"{tmp}/ca-key.pem",
                "routes": routes,
                "outbound": {"mode": "direct", "allow_private": ["127.0.0.0/8"],
                             "extra_ca": f"{tmp}/up-ca.pem"},
                "dlp": mode,
            },
            "gate": {"listen": {"tcp": None, "unix": None}, "mirrors_dir": f"{tmp}/m",
                     "remotes": [], "scanner_rules": None, "max_push_bytes": 1,
                     "push_timeout_secs": 1},
            "supervise": None, "pipelock": None, "audit_log": f"{tmp}/audit-{mode}.jsonl",
        }
        with open(f"{tmp}/config-{mode}.json", "w") as f:
            json.dump(config, f)


def main_inner(args):
    tmp = tempfile.mkdtemp(prefix="dlp-bench-")
    os.chmod(tmp, 0o755)  # nginx workers read the large file
    setup(tmp)
    with open(f"{tmp}/hosts", "w") as f:
        f.write("127.0.0.1 localhost bench.test\n")
    run(["mount", "--bind", f"{tmp}/hosts", "/etc/hosts"])
    procs = []
    try:
        procs.append(subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"]))
        wait_port(NGINX_PORT)
        pids = {}
        for mode, port in PORTS.items():
            procs.append(subprocess.Popen(
                [BUNDLE, "proxy", "--config", f"{tmp}/config-{mode}.json",
                 "--secrets", f"{tmp}/secrets.json"],
                stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/bundle-{mode}.log", "w"),
                env=dict(os.environ, BOTTLE_LOG="warn", NO_COLOR="1")))
            pids[mode] = procs[-1].pid
            wait_port(port)
        ca = f"{tmp}/ca.pem"
        small = f"https://bench.test:{NGINX_PORT}/small"
        large = f"https://bench.test:{NGINX_PORT}/large"
        upload = f"https://bench.test:{NGINX_PORT}/upload"
        res = {mode: {"c16": [], "p50_16": [], "c1": [], "p50_1": [], "down": [], "up": [],
                      "cpu_req": [], "cpu_down": [], "cpu_up": []}
               for mode in PORTS}
        for i in range(args.runs):
            for mode, port in PORTS.items():
                proxy = f"http://127.0.0.1:{port}"
                r = res[mode]
                curl([small], proxy, ca, "speed_download")  # warm: leaf minted, pool open
                if not args.transfers_only:
                    cpu = cpu_seconds(pids[mode])
                    rps, p50 = oha(small, proxy, ca, 16, args.duration)
                    r["c16"].append(rps)
                    r["p50_16"].append(p50)
                    # CPU per request over the c=16 run (oha's count is req/s times the duration).
                    seconds = float(args.duration.rstrip("s"))
                    r["cpu_req"].append((cpu_seconds(pids[mode]) - cpu) * 1e6 / (rps * seconds))
                    rps, p50 = oha(small, proxy, ca, 1, args.duration)
                    r["c1"].append(rps)
                    r["p50_1"].append(p50)
                cpu = cpu_seconds(pids[mode])
                r["down"].append(curl([large], proxy, ca, "speed_download"))
                r["cpu_down"].append(cpu_seconds(pids[mode]) - cpu)
                cpu = cpu_seconds(pids[mode])
                r["up"].append(curl(["--data-binary", f"@{tmp}/upload", upload], proxy, ca,
                                    "speed_upload"))
                r["cpu_up"].append(cpu_seconds(pids[mode]) - cpu)
                print(f"run {i + 1} {mode}: " + json.dumps({k: round(v[-1], 2) for k, v in r.items() if v}),
                      file=sys.stderr)
        report(res, args)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(res, args):
    med = {m: {k: statistics.median(v) for k, v in r.items() if v} for m, r in res.items()}
    off, block = med["off"], med["block"]
    load = os.getloadavg()
    print(f"\nbottle-bundle proxy, dlp: block (20 secrets) vs dlp: off; nginx HTTPS upstream; "
          f"median of {args.runs} alternating runs, oha -z {args.duration}; "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| | dlp: off | dlp: block | block / off |")
    print("|---|---:|---:|---:|")

    def row(label, key, fmt, higher_better=True):
        if key not in off:
            return
        ratio = block[key] / off[key] if higher_better else off[key] / block[key]
        print(f"| {label} | {fmt.format(off[key])} | {fmt.format(block[key])} | {ratio * 100:.0f} % |")

    row("small GETs, req/s, c=16", "c16", "{:.0f}")
    row("p50 ms, c=16", "p50_16", "{:.2f}", higher_better=False)
    row("small GETs, req/s, c=1", "c1", "{:.0f}")
    row("p50 ms, c=1", "p50_1", "{:.3f}", higher_better=False)
    row(f"{LARGE_MB} MB download, MB/s", "down", "{:.0f}")
    row(f"{LARGE_MB} MB upload, MB/s", "up", "{:.0f}")
    row("proxy CPU per request, µs (c=16)", "cpu_req", "{:.0f}", higher_better=False)
    row(f"proxy CPU per {LARGE_MB} MB download, s", "cpu_down", "{:.2f}", higher_better=False)
    row(f"proxy CPU per {LARGE_MB} MB upload, s", "cpu_up", "{:.2f}", higher_better=False)
    print("\n(for p50 and CPU the last column is off / block: 100 % means no added cost; CPU time "
          "is what the proxy process used, which the machine's load does not move)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--transfers-only", action="store_true",
                    help="only the 100 MB download and upload (no oha)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark uses a private mount namespace for /etc/hosts)")
    if args.inner:
        main_inner(args)
    else:
        for tool, hint in [("nginx", "apt-get install nginx"), ("openssl", "apt-get install openssl"),
                           ("curl", "apt-get install curl"), ("oha", "cargo install oha --locked"),
                           ("unshare", "util-linux")]:
            if tool == "oha" and args.transfers_only:
                continue
            if shutil.which(tool) is None:
                sys.exit(f"error: {tool} is required ({hint})")
        subprocess.run(["cargo", "build", "--release", "-p", "bottle-bundle"], cwd=ROOT, check=True)
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__), "--inner", "--runs", str(args.runs),
                              "--duration", args.duration]
                 + (["--transfers-only"] if args.transfers_only else []))
