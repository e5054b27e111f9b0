#!/usr/bin/env python3
"""Benchmark: bottle-bundle's egress proxy vs mitmproxy (mitmdump with a header-injecting addon)
vs a direct baseline, against a local nginx HTTPS upstream, using oha as the load generator.

Run as root from the repository root:  python3 bench/proxy/run.py
Needs: nginx, openssl, curl (Debian); oha (`cargo install oha --locked`); mitmproxy (pip).
It re-runs itself in a private mount namespace whose /etc/hosts maps the benchmark names to
127.0.0.1 (no DNS server needed), builds `bottle-bundle` in release mode, and prints a
Markdown table.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NGINX_PORT = 18443
BUNDLE_PORT = 19099
MITM_PORT = 19098
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "16")
LARGE_MB = 256
COLD_NAMES = 40


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"error: {tool} is required ({hint})")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


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


def oha(url, proxy=None, ca=None, concurrency=CONCURRENCY, extra=()):
    cmd = ["oha", "-z", DURATION, "-c", str(concurrency), "--no-tui", "--output-format", "json"]
    if proxy:
        cmd += ["-x", proxy]
    if ca:
        cmd += ["--cacert", ca]
    cmd += list(extra) + [url]
    out = json.loads(run(cmd).stdout)
    summary = out["summary"]
    pct = out["latencyPercentiles"]
    codes = out.get("statusCodeDistribution", {})
    return {
        "rps": summary["requestsPerSec"],
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "ok": summary.get("successRate", 0),
        "codes": codes,
    }


def curl_time(url, proxy, ca, fields):
    cmd = ["curl", "-sS", "-o", "/dev/null", "--cacert", ca, "-w", " ".join("%{" + f + "}" for f in fields)]
    if proxy:
        cmd += ["-x", proxy]
    out = run(cmd + [url]).stdout.split()
    return [float(x) for x in out]


def setup(tmp):
    # Upstream CA and nginx leaf for bench.test and the cold-SNI names.
    names = ["bench.test"] + [f"n{i}.bench.test" for i in range(COLD_NAMES)]
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{tmp}/up-ca.key", "-out", f"{tmp}/up-ca.pem", "-days", "2", "-subj", "/CN=bench upstream CA"])
    san = ",".join(f"DNS:{n}" for n in names)
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{tmp}/up.key", "-out", f"{tmp}/up.csr", "-subj", "/CN=bench.test"])
    with open(f"{tmp}/ext.cnf", "w") as f:
        f.write(f"subjectAltName={san}\n")
    run(["openssl", "x509", "-req", "-in", f"{tmp}/up.csr", "-CA", f"{tmp}/up-ca.pem", "-CAkey", f"{tmp}/up-ca.key",
         "-CAcreateserial", "-out", f"{tmp}/up.pem", "-days", "2", "-extfile", f"{tmp}/ext.cnf"])
    os.makedirs(f"{tmp}/www", exist_ok=True)
    with open(f"{tmp}/www/large", "wb") as f:
        f.truncate(LARGE_MB * 1024 * 1024)
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{NGINX_PORT} ssl http2;
    ssl_certificate {tmp}/up.pem;
    ssl_certificate_key {tmp}/up.key;
    root {tmp}/www;
    location = /small {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
  }}
}}
""")
    # bottle-bundle config.
    run([BUNDLE, "ca", "init", "--cert", f"{tmp}/ca.pem", "--key", f"{tmp}/ca-key.pem"])
    config = {
        "schema_version": 2, "identity": "bench-aaaaa", "roles": ["proxy"],
        "proxy": {
            "listen": {"tcp": f"127.0.0.1:{BUNDLE_PORT}", "unix": None},
            "ca_cert": f"{tmp}/ca.pem", "ca_key": f"{tmp}/ca-key.pem",
            "routes": [
                {"host": f"bench.test:{NGINX_PORT}", "path_allowlist": [],
                 "auth": {"scheme": "bearer", "token_slot": "BENCH"}},
                {"host": f"*.bench.test:{NGINX_PORT}", "path_allowlist": [], "auth": None},
            ],
            "outbound": {"mode": "direct", "allow_private": ["127.0.0.0/8"], "extra_ca": f"{tmp}/up-ca.pem"},
        },
        "gate": {"listen": {"tcp": None, "unix": None}, "mirrors_dir": f"{tmp}/m", "remotes": [],
                 "scanner_rules": None, "max_push_bytes": 1, "push_timeout_secs": 1},
        "supervise": None, "pipelock": None, "audit_log": f"{tmp}/audit.jsonl",
    }
    with open(f"{tmp}/config.json", "w") as f:
        json.dump(config, f)
    with open(f"{tmp}/secrets.json", "w") as f:
        json.dump({"tokens": {"BENCH": "bench-token"}}, f)
    os.chmod(f"{tmp}/secrets.json", 0o600)
    return names


def main_inner():
    tmp = tempfile.mkdtemp(prefix="proxy-bench-")
    os.chmod(tmp, 0o755)  # nginx workers read the large file
    names = setup(tmp)
    with open(f"{tmp}/hosts", "w") as f:
        f.write("127.0.0.1 localhost " + " ".join(names) + "\n")
    run(["mount", "--bind", f"{tmp}/hosts", "/etc/hosts"])
    procs = []
    try:
        procs.append(subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"]))
        wait_port(NGINX_PORT)
        env = dict(os.environ, BOTTLE_LOG="warn,bottle_bundle::proxy::ca=debug", NO_COLOR="1")
        bundle_log = open(f"{tmp}/bundle.log", "w")
        bundle = subprocess.Popen([BUNDLE, "proxy", "--config", f"{tmp}/config.json", "--secrets", f"{tmp}/secrets.json"],
                                  stdout=subprocess.DEVNULL, stderr=bundle_log, env=env)
        procs.append(bundle)
        wait_port(BUNDLE_PORT)
        mitm = subprocess.Popen(["mitmdump", "-q", "--listen-host", "127.0.0.1", "-p", str(MITM_PORT),
                                 "--set", f"confdir={tmp}/mitm", "--set", f"ssl_verify_upstream_trusted_ca={tmp}/up-ca.pem",
                                 "-s", os.path.join(ROOT, "bench/proxy/inject_header.py")])
        procs.append(mitm)
        wait_port(MITM_PORT)
        time.sleep(1.0)
        results = {}
        url = f"https://bench.test:{NGINX_PORT}/small"
        large = f"https://bench.test:{NGINX_PORT}/large"
        up_ca = f"{tmp}/up-ca.pem"
        setups = {
            "direct": (None, up_ca, None),
            "bottle-bundle": (f"http://127.0.0.1:{BUNDLE_PORT}", f"{tmp}/ca.pem", bundle.pid),
            "mitmdump": (f"http://127.0.0.1:{MITM_PORT}", f"{tmp}/mitm/mitmproxy-ca-cert.pem", mitm.pid),
        }
        only = os.environ.get("BENCH_ONLY")
        for name, (proxy, ca, pid) in setups.items():
            if only and name not in only.split(","):
                continue
            r = {}
            r["idle_rss_mb"] = rss_kb(pid) / 1024 if pid else None
            curl_time(url, proxy, ca, ["http_code"])  # warm up: mint, pool
            r["c16"] = oha(url, proxy, ca)
            r["load_rss_mb"] = rss_kb(pid, "VmHWM") / 1024 if pid else None
            r["c1"] = oha(url, proxy, ca, concurrency=1)
            speeds = [curl_time(large, proxy, ca, ["speed_download"])[0] for _ in range(3)]
            r["mb_s"] = statistics.median(speeds) / 1e6
            if proxy:
                cold, warm = [], []
                for n in names[1:]:
                    u = f"https://{n}:{NGINX_PORT}/small"
                    cold.append(curl_time(u, proxy, ca, ["time_appconnect"])[0])
                    warm.append(curl_time(u, proxy, ca, ["time_appconnect"])[0])
                r["cold_handshake_ms"] = statistics.median(cold) * 1000
                r["warm_handshake_ms"] = statistics.median(warm) * 1000
            if name == "bottle-bundle":
                import re
                with open(f"{tmp}/bundle.log") as f:
                    mints = [int(m) for m in re.findall(r"micros=(\d+)", f.read())]
                r["mint_ms_median"] = statistics.median(mints) / 1000 if mints else None
                r["mint_ms_max"] = max(mints) / 1000 if mints else None
                r["mints"] = len(mints)
            results[name] = r
            print(f"{name}: {json.dumps(r)}", file=sys.stderr)
        if len(results) == len(setups):
            report(results)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(res):
    d, b, m = res["direct"], res["bottle-bundle"], res["mitmdump"]
    def row(label, f):
        print(f"| {label} | {f(d)} | {f(b)} | {f(m)} |")
    print(f"\nsmall HTTPS GETs on keep-alive, oha -z {DURATION}; nginx upstream; 2-core machine\n")
    print("| | direct | bottle-bundle | mitmdump |")
    print("|---|---:|---:|---:|")
    row(f"req/s, c={CONCURRENCY}", lambda r: f"{r['c16']['rps']:.0f}")
    row(f"p50 / p99 ms, c={CONCURRENCY}", lambda r: f"{r['c16']['p50']:.2f} / {r['c16']['p99']:.2f}")
    row("req/s, c=1", lambda r: f"{r['c1']['rps']:.0f}")
    row("p50 / p99 ms, c=1", lambda r: f"{r['c1']['p50']:.3f} / {r['c1']['p99']:.3f}")
    row("added p50 ms, c=1", lambda r: f"{r['c1']['p50'] - d['c1']['p50']:.3f}")
    row(f"large download MB/s ({LARGE_MB} MB)", lambda r: f"{r['mb_s']:.0f}")
    row("TLS handshake via proxy, cold SNI ms", lambda r: f"{r['cold_handshake_ms']:.2f}" if "cold_handshake_ms" in r else "-")
    row("TLS handshake via proxy, warm SNI ms", lambda r: f"{r['warm_handshake_ms']:.2f}" if "warm_handshake_ms" in r else "-")
    row("cold-SNI extra vs warm, ms (curl, noisy)", lambda r: f"{r['cold_handshake_ms'] - r['warm_handshake_ms']:.2f}" if "cold_handshake_ms" in r else "-")
    print(f"| leaf mint inside the proxy, median / max ms ({b['mints']} mints) | - | "
          f"{b['mint_ms_median']:.3f} / {b['mint_ms_max']:.3f} | - |")
    row("RSS idle MB", lambda r: f"{r['idle_rss_mb']:.1f}" if r["idle_rss_mb"] else "-")
    row("RSS peak under load MB", lambda r: f"{r['load_rss_mb']:.1f}" if r["load_rss_mb"] else "-")
    row("non-2xx", lambda r: str({k: v for k, v in r["c16"]["codes"].items() if not k.startswith("2")} or 0))
    print(f"\nbottle-bundle vs mitmdump req/s: {b['c16']['rps'] / m['c16']['rps']:.1f}x")


BUNDLE = os.path.join(ROOT, "target/release/bottle-bundle")

if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark uses a private mount namespace for /etc/hosts)")
    if "--inner" in sys.argv:
        main_inner()
    else:
        for tool, hint in [("nginx", "apt-get install nginx"), ("openssl", "apt-get install openssl"),
                           ("curl", "apt-get install curl"), ("oha", "cargo install oha --locked"),
                           ("mitmdump", "pip install mitmproxy"), ("unshare", "util-linux")]:
            need(tool, hint)
        subprocess.run(["cargo", "build", "--release", "-p", "bottle-bundle"], cwd=ROOT, check=True)
        os.execvp("unshare", ["unshare", "-m", sys.executable, os.path.abspath(__file__), "--inner"])
