"""A real MCP client for the supervise server tests (Python `mcp` 2.3.0, `httpx`).

Usage: python3 mcp_client.py URL [--mode legacy|auto|2026-07-28] [--uds PATH] < steps.json

`steps.json` is a JSON list of steps, run in order over one client connection:
  {"op": "list"}                              -> {"tools": [{name, description, inputSchema}]}
  {"op": "call", "tool": T, "args": {...}}    -> {"isError", "text", "structured"} or {"error"}
  {"op": "raw", "headers": {...}, "body": {...}}
      a plain HTTP POST to URL with httpx (no MCP library), -> {"status", "headers", "body"}
  {"op": "session"}                           -> {"protocol": the negotiated version}
A call step with "announce": true first prints {"calling": T}, just before the request.
Each step's answer is printed as one JSON line as soon as it is known, so a test can act
(e.g. write a decision file) between steps. With --uds every request goes over that Unix
socket, the URL's host only filling the Host header.
"""

import argparse
import asyncio
import json
import sys

import httpx
import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result_json(result):
    text = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    return {
        "isError": bool(result.is_error),
        "text": text,
        "structured": result.structured_content,
    }


def raw(url, uds, step):
    transport = httpx.HTTPTransport(uds=uds) if uds else None
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    headers.update(step.get("headers", {}))
    with httpx.Client(transport=transport, timeout=60) as client:
        response = client.post(url, headers=headers, json=step.get("body"))
    body_text = response.text
    body = None
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = response.json()
    elif ctype.startswith("text/event-stream"):
        # The last `data:` line carrying a JSON-RPC response.
        for line in body_text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                try:
                    body = json.loads(line[5:])
                except json.JSONDecodeError:
                    pass
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": body,
        "text": body_text,
    }


async def run(args, steps):
    mcp_steps = [s for s in steps if s["op"] != "raw"]
    if not mcp_steps:
        for step in steps:
            emit(raw(args.url, args.uds, step))
        return
    if args.uds:
        http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=args.uds), timeout=90)
        server = streamable_http_client(args.url, http_client=http)
    else:
        server = args.url
    async with Client(server, mode=args.mode, read_timeout_seconds=90) as client:
        for step in steps:
            op = step["op"]
            if op == "list":
                tools = (await client.list_tools()).tools
                emit(
                    {
                        "tools": [
                            {
                                "name": t.name,
                                "description": t.description,
                                "inputSchema": t.input_schema,
                            }
                            for t in tools
                        ]
                    }
                )
            elif op == "call":
                if step.get("announce"):
                    emit({"calling": step["tool"]})
                try:
                    result = await client.call_tool(step["tool"], step.get("args", {}))
                    emit(result_json(result))
                except MCPError as e:
                    emit({"error": str(e), "code": getattr(e, "code", None)})
            elif op == "raw":
                emit(raw(args.url, args.uds, step))
            elif op == "session":
                emit({"protocol": str(client.session.protocol_version)})
            else:
                raise SystemExit(f"unknown step {op!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--uds")
    args = parser.parse_args()
    steps = json.load(sys.stdin)
    asyncio.run(run(args, steps))


if __name__ == "__main__":
    main()
