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


# --- the hooks' stream report (torchrouter_core.contract): read over the headers, never relayed ------------
REPORT = b': x-torchrouter-report {"x-torchrouter-deployment": "openai-api/openai/gpt-4o-mini"}\n\n'
FIRST = b'data: {"id": "chatcmpl-1", "choices": []}\n\n'
REST = b"data: [DONE]\n\n"


def streaming(parts: list[bytes], *, cut: bool = False) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "x-litellm-model-id": "m"}
        )
        await response.prepare(request)
        for part in parts:
            await response.write(part)
            await asyncio.sleep(0.01)  # each its own read on the other side
        if cut:  # the connection drops without the chunked body's end
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return upstream(chat)


async def read_stream(parts: list[bytes], *, cut: bool = False) -> tuple[dict[str, str], bytes, str]:
    """(headers after take_stream_report, the bytes relayed, how the relay ended)."""
    async with served(streaming(parts, cut=cut)) as url:
        forwarder = HttpForwarder(url, timeout_s=5)
        try:
            async with forwarder.open("POST", PATH, b"{}", {}) as answer:
                await answer.take_stream_report()
                relayed, ended = b"", "whole"
                try:
                    async for chunk in answer.iter_chunks():
                        relayed += chunk
                except Exception as exc:
                    ended = type(exc).__name__
                return dict(answer.headers), relayed, ended
        except UpstreamUnavailable:
            return {}, b"", "unavailable"
        finally:
            await forwarder.close()


@pytest.mark.parametrize(
    "parts",
    [
        [REPORT, FIRST, REST],
        [REPORT + FIRST + REST],  # all in one read
        [REPORT[:1], REPORT[1:9], REPORT[9:40], REPORT[40:] + FIRST[:5], FIRST[5:], REST],  # split anywhere
    ],
)
async def test_a_stream_report_is_read_over_the_headers_and_not_relayed(parts: list[bytes]) -> None:
    headers, relayed, ended = await read_stream(parts)
    assert headers["x-torchrouter-deployment"] == "openai-api/openai/gpt-4o-mini"
    assert headers["Content-Type"] == "text/event-stream" and headers["x-litellm-model-id"] == "m"
    assert relayed == FIRST + REST and ended == "whole"


@pytest.mark.parametrize(
    "parts",
    [
        [FIRST, REST],
        [FIRST[:1], FIRST[1:], REST],  # "d" could not start a report: read no further
        [b": keep-alive\n\n", FIRST, REST],  # another comment is the stream's own
        [b": x-torchrouter-report {broken\n\n", FIRST, REST],  # not readable: relayed as the comment it is
    ],
)
async def test_any_other_stream_is_relayed_as_it_came(parts: list[bytes]) -> None:
    headers, relayed, ended = await read_stream(parts)
    assert "x-torchrouter-deployment" not in headers
    assert relayed == b"".join(parts) and ended == "whole"


async def test_a_stream_that_breaks_while_its_report_is_read_breaks_for_the_relay() -> None:
    headers, relayed, ended = await read_stream([REPORT[:20]], cut=True)
    assert "x-torchrouter-deployment" not in headers
    assert relayed == REPORT[:20] and ended != "whole", (relayed, ended)
