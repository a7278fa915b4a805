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


# --- reading a stream ahead to where its answer opens (the hooks' stream report read, never relayed) --------
REPORT = b': x-torchrouter-report {"x-torchrouter-deployment": "openai-api/openai/gpt-4o-mini"}\n\n'
ROLE = b'data: {"id": "c-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'
FIRST = b'data: {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
REST = b"data: [DONE]\n\n"
ERROR = b'data: {"error": {"message": "Response payload is not completed", "type": null, "code": "500"}}\n\n'


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


async def read_stream(
    parts: list[bytes], *, cut: bool = False
) -> tuple[dict[str, str], str | None, bytes, str]:
    """(headers after read_ahead, why it failed before the answer (None: it opened), the bytes relayed,
    how the relay ended)."""
    async with served(streaming(parts, cut=cut)) as url:
        forwarder = HttpForwarder(url, timeout_s=5)
        try:
            async with forwarder.open("POST", PATH, b"{}", {}) as answer:
                why = await answer.read_ahead()
                relayed, ended = b"", "whole"
                try:
                    async for chunk in answer.iter_chunks():
                        relayed += chunk
                except Exception as exc:
                    ended = type(exc).__name__
                return dict(answer.headers), why, relayed, ended
        except UpstreamUnavailable:
            return {}, "unavailable", b"", "unavailable"
        finally:
            await forwarder.close()


@pytest.mark.parametrize(
    "parts",
    [
        [REPORT, FIRST, REST],
        [REPORT + FIRST + REST],  # all in one read
        [REPORT[:1], REPORT[1:9], REPORT[9:40], REPORT[40:] + FIRST[:5], FIRST[5:], REST],  # split anywhere
        [REPORT, ROLE, FIRST, REST],  # a role-only first chunk: read past, relayed with the rest
        [ROLE, REPORT, FIRST, REST],  # the report after a role-only chunk (of the attempt that failed)
    ],
)
async def test_a_stream_report_is_read_over_the_headers_and_not_relayed(parts: list[bytes]) -> None:
    headers, why, relayed, ended = await read_stream(parts)
    assert why is None and headers["x-torchrouter-deployment"] == "openai-api/openai/gpt-4o-mini"
    assert headers["Content-Type"] == "text/event-stream" and headers["x-litellm-model-id"] == "m"
    assert relayed == b"".join(parts).replace(REPORT, b"") and ended == "whole"


@pytest.mark.parametrize(
    "parts",
    [
        [FIRST, REST],
        [FIRST[:1], FIRST[1:], REST],
        [b": keep-alive\n\n", FIRST, REST],  # another comment is the stream's own
        [b": x-torchrouter-report {broken\n\n", FIRST, REST],  # not readable: relayed as the comment it is
        [ROLE, REST],  # an empty answer is an answer
        [ROLE, b'data: {"choices": [{"delta": {"content": null, "tool_calls": [{"index": 0}]}}]}\n\n', REST],
        [b"event: x\ndata: {}\n\n", REST],  # not LiteLLM's shape: relayed as it is, not read on
    ],
)
async def test_any_other_stream_is_relayed_as_it_came(parts: list[bytes]) -> None:
    headers, why, relayed, ended = await read_stream(parts)
    assert why is None and "x-torchrouter-deployment" not in headers
    assert relayed == b"".join(parts) and ended == "whole"


@pytest.mark.parametrize(
    ("parts", "cut", "says"),
    [
        ([ERROR], False, "upstream stream broke: Response payload is not completed"),
        ([REPORT, ROLE, ERROR], False, "upstream stream broke: Response payload is not completed"),
        ([ROLE], False, "the stream ended before its answer began"),
        ([REPORT[:20]], True, "the stream broke before its answer began"),
        ([ROLE], True, "the stream broke before its answer began"),
    ],
)
async def test_a_stream_that_fails_before_its_answer_opens_says_why(
    parts: list[bytes], cut: bool, says: str
) -> None:
    _, why, _, ended = await read_stream(parts, cut=cut)
    assert why is not None and why.startswith(says), why
    if cut:
        assert ended != "whole"  # the relay, were it asked, breaks where the stream did
