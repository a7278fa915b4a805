"""HttpForwarder: what LiteLLM's side of the connection does becomes our upstream errors, wherever it happens
(connecting, waiting for the answer, reading its body). Upstreams are real aiohttp servers on free ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from classifier.forwarder import HttpForwarder
from tests.harness import free_ports, served
from torchrouter_core.errors import UpstreamTimeout, UpstreamUnavailable

PATH = "/v1/chat/completions"


def upstream(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_post(PATH, handler)
    return app


async def test_an_answer_is_read_whole() -> None:
    async def chat(request: web.Request) -> web.Response:
        echo = {"echo": (await request.read()).decode()}
        return web.json_response(echo, headers={"x-litellm-model-id": "m"})

    async with served(upstream(chat)) as url:
        forwarder = HttpForwarder(url, timeout_s=5)
        try:
            async with forwarder.open("POST", PATH, b"hello", {"Content-Type": "application/json"}) as answer:
                assert answer.status == 200 and answer.headers["X-LiteLLM-Model-Id"] == "m"
                assert await answer.read() == b'{"echo": "hello"}'
        finally:
            await forwarder.close()


async def test_an_unreachable_litellm_is_unavailable() -> None:
    forwarder = HttpForwarder(f"http://127.0.0.1:{free_ports(1)[0]}", timeout_s=5)
    try:
        with pytest.raises(UpstreamUnavailable, match="unreachable"):
            async with forwarder.open("POST", PATH, b"{}", {}):
                pass
    finally:
        await forwarder.close()


async def test_silence_past_the_read_timeout_is_a_timeout() -> None:
    async def chat(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    async with served(upstream(chat)) as url:
        forwarder = HttpForwarder(url, timeout_s=0.2)
        try:
            with pytest.raises(UpstreamTimeout, match="sent nothing"):
                async with forwarder.open("POST", PATH, b"{}", {}):
                    pass
        finally:
            await forwarder.close()


async def test_a_body_cut_short_while_it_is_read_is_unavailable() -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"part of it")
        assert request.transport is not None
        request.transport.close()  # the rest never comes
        return response

    async with served(upstream(chat)) as url:
        forwarder = HttpForwarder(url, timeout_s=5)
        try:
            with pytest.raises(UpstreamUnavailable, match="connection to LiteLLM failed"):
                async with forwarder.open("POST", PATH, b"{}", {}) as answer:
                    await answer.read()  # the error surfaces in the body of the `async with`
        finally:
            await forwarder.close()


async def test_other_errors_in_the_body_pass_through_unchanged() -> None:
    async def chat(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with served(upstream(chat)) as url:
        forwarder = HttpForwarder(url, timeout_s=5)
        try:
            with pytest.raises(KeyError, match="ours"):
                async with forwarder.open("POST", PATH, b"{}", {}):
                    raise KeyError("ours")
        finally:
            await forwarder.close()
