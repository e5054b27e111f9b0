"""mitmdump addon equivalent to a bottle-bundle credential route: strip the agent's
Authorization and inject the route's bearer token on requests to the benchmark host."""

import os

TOKEN = os.environ.get("BENCH_TOKEN", "bench-token")


def request(flow):
    if flow.request.pretty_host == "bench.test":
        flow.request.headers.pop("authorization", None)
        flow.request.headers["authorization"] = f"Bearer {TOKEN}"
