"""A stand-in for a stuck agent in the supervise end-to-end tests (Claude Code cannot be
installed here). It talks to the bottle's supervise MCP server with the real Python `mcp`
client, copied into the work tree as `pylib/` (containers cannot reach PyPI).

    python3 mcp_agent.py idle                      stay up (the agent's command)
    python3 mcp_agent.py call TOOL JSON_ARGS       call a tool, print the result as JSON
    python3 mcp_agent.py tools                     list the tool names as JSON
    python3 mcp_agent.py capability JUSTIFICATION  propose the image's own Dockerfile plus jq

Every result is one JSON line: {"error": bool, "text": str, "structured": ...} or
{"exception": str} when the call itself failed.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylib"))

from mcp import Client  # noqa: E402

URL = "http://supervise:9100/mcp"
DOCKERFILE = "/etc/claude-bottle/agent.Dockerfile"
# What the agent needs: jq, from the Debian mirror (build containers reach it over http).
EXTRA = (
    "USER root\n"
    "RUN apt-get update && apt-get install -y --no-install-recommends jq"
    " && rm -rf /var/lib/apt/lists/*\n"
    "USER agent\n"
)


async def call(tool, args):
    try:
        async with Client(URL) as client:
            result = await client.call_tool(tool, args)
    except Exception as e:  # the test asserts on it
        return {"exception": f"{type(e).__name__}: {e}"}
    text = "\n".join(getattr(c, "text", "") for c in result.content or [])
    return {
        "error": bool(result.is_error),
        "text": text,
        "structured": result.structured_content,
    }


async def tools():
    async with Client(URL) as client:
        listed = await client.list_tools()
    return sorted(t.name for t in listed.tools)


def main():
    what = sys.argv[1]
    if what == "idle":
        while True:
            time.sleep(3600)
    elif what == "call":
        out = asyncio.run(call(sys.argv[2], json.loads(sys.argv[3])))
    elif what == "tools":
        out = asyncio.run(tools())
    elif what == "capability":
        dockerfile = open(DOCKERFILE).read() + EXTRA
        out = asyncio.run(
            call("capability-block", {"dockerfile": dockerfile, "justification": sys.argv[2]})
        )
    else:
        raise SystemExit(f"unknown action {what}")
    print(json.dumps(out))


main()
