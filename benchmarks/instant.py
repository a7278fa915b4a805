"""Two tiny servers for the overhead benchmark, each run as its own process.

``upstream PORT``: an instant OpenAI-compatible chat endpoint (a fixed answer, no work), standing in
for LiteLLM so the classifier's own cost is what is measured.
``passthrough PORT UPSTREAM``: the baseline, the same framework forwarding the body with a pooled
client and returning the answer, with no decisions, metrics or events.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-instant",
        "object": "chat.completion",
        "created": 0,
        "model": "instant",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def upstream_app() -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def passthrough_app(upstream: str) -> web.Application:
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app[session_key].post(
            upstream + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            payload = await resp.read()
            return web.Response(status=resp.status, body=payload, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    app = upstream_app() if kind == "upstream" else passthrough_app(sys.argv[3])
    if kind == "upstream":
        app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
