"""The classifier relays a stream unbuffered and byte for byte.

The upstream here is a scripted aiohttp application (a real server on a free port) because the test
needs to hold the second chunk back until the client has seen the first: that proves no buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from classifier.forwarder import HttpForwarder
from tests.conftest import ClassifierFactory, Stack
from tests.harness import free_ports, served, wait_for_event
from torchrouter_core.errors import ApiError, UpstreamUnavailable

CHUNKS = [
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"sim:first"}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" \\u00e9\\u00e8 second"}}]}\n\n',
    b"data: [DONE]\n\n",
]
STREAM_BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


def scripted_upstream(
    chat: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> contextlib.AbstractAsyncContextManager[str]:
    """A real server on a free port whose /v1/chat/completions runs ``chat``; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return served(app)


async def test_stream_is_relayed_unbuffered_and_exact(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    release = asyncio.Event()
    seen_auth: list[str] = []

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        seen_auth.append(request.headers.get("Authorization", ""))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "x-litellm-model-id": "m/x/y"}
        )
        await resp.prepare(request)
        await resp.write(CHUNKS[0])
        await asyncio.wait_for(release.wait(), 10)  # the client must see chunk 1 before chunk 2 exists
        for chunk in CHUNKS[1:]:
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async with scripted_upstream(upstream_chat) as upstream_url:
        url = await make_classifier(litellm_url=upstream_url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/v1/chat/completions", json=STREAM_BODY) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["X-Router-Model"] == "m/x/y"
            received = b""
            while not received.endswith(b"\n\n"):
                received += await asyncio.wait_for(resp.content.readany(), 10)
            assert received == CHUNKS[0]
            release.set()
            received += await resp.content.read()
        assert received == b"".join(CHUNKS)
        assert seen_auth == [f"Bearer {stack.master_key}"]  # the classifier authenticates to LiteLLM


async def test_upstream_dying_mid_stream_ends_the_stream_cleanly(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    """After the 200 is out, an upstream failure must end the stream with an error event, not corrupt it."""

    client_has_first_chunk = asyncio.Event()

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(CHUNKS[0])
        await asyncio.wait_for(client_has_first_chunk.wait(), 10)
        assert request.transport is not None
        request.transport.abort()  # the upstream process dies mid-answer
        return resp

    async with scripted_upstream(upstream_chat) as upstream_url:
        url = await make_classifier(litellm_url=upstream_url)
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/chat/completions", json=STREAM_BODY) as resp:
                assert resp.status == 200
                received = b""
                while not received.endswith(b"\n\n"):
                    received += await asyncio.wait_for(resp.content.readany(), 10)
                client_has_first_chunk.set()
                received += await asyncio.wait_for(resp.content.read(), 10)
                request_id, group = resp.headers["X-Router-Request-Id"], resp.headers["X-Router-Group"]
            async with http.get(url + "/queue/status") as status:
                lanes = (await status.json())["groups"]
    assert received.startswith(CHUNKS[0])
    tail = received[len(CHUNKS[0]) :]
    assert b"HTTP/1.1" not in tail, "a second status line inside the body"
    assert tail.startswith(b"data: ") and b'"upstream_stream_broken"' in tail
    assert group == "fast-chat" and lanes[group]["active"] == 0  # a local lane: its slot came back
    completed = await wait_for_event(stack.events_path, request_id, "request_completed")
    # The trail's status is the status line the client got: the 200 went out before the stream broke.
    assert (completed["outcome"], completed["status"]) == ("upstream_error", 200)


LITELLM_ERROR = (
    b'data: {"error": {"message": "litellm.APIConnectionError: Ollama_chatException - Response payload is '
    b'not completed", "type": null, "param": null, "code": "500"}}\n\n'
)


@pytest.mark.parametrize(
    ("ending", "says"),
    [
        ([LITELLM_ERROR], b"Response payload is not completed"),  # LiteLLM's own error event, clean EOF
        ([], b"ended before its last event"),  # a clean end part-way, nothing said
    ],
)
async def test_a_stream_that_ends_cleanly_but_part_way_is_a_broken_stream(
    stack: Stack, make_classifier: ClassifierFactory, ending: list[bytes], says: bytes
) -> None:
    """LiteLLM ends a stream it cannot continue with its own error event and a clean close; a stream may
    also just stop without ``[DONE]``. Either is the one documented error event (``upstream_stream_broken``)
    and the outcome ``upstream_error`` with the 200 that went out, never ``ok``."""

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in [CHUNKS[0], *ending]:
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async with scripted_upstream(upstream_chat) as upstream_url:
        url = await make_classifier(litellm_url=upstream_url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/v1/chat/completions", json=STREAM_BODY) as resp,
        ):
            assert resp.status == 200
            received = await asyncio.wait_for(resp.content.read(), 10)
            request_id = resp.headers["X-Router-Request-Id"]
    assert received.startswith(CHUNKS[0])
    tail = received[len(CHUNKS[0]) :]
    assert tail.startswith(b"data: ") and b'"upstream_stream_broken"' in tail and says in tail, tail
    assert b'"code":"500"' not in tail and b"[DONE]" not in tail
    completed = await wait_for_event(stack.events_path, request_id, "request_completed")
    assert (completed["outcome"], completed["status"]) == ("upstream_error", 200)


async def _close_after(url: str, stop_after: bytes) -> str:
    """Read a stream until ``stop_after`` has arrived, then drop the connection (as the OpenAI SDK does after
    ``[DONE]``, without waiting for the chunked terminator). Returns the router's request id."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/chat/completions", json=STREAM_BODY) as resp,
    ):
        assert resp.status == 200
        received = b""
        while stop_after not in received:
            received += await asyncio.wait_for(resp.content.readany(), 10)
        resp.close()  # drop the connection, not release it to the pool
        return resp.headers["X-Router-Request-Id"]


@pytest.mark.parametrize(
    ("sent", "leave_after", "outcome"),
    [
        (CHUNKS, b"[DONE]", "ok"),  # the whole answer arrived: the client's close is not a cancel
        (CHUNKS[:1], b"sim:first", "cancelled"),  # the client left part-way
    ],
)
async def test_a_client_closing_a_stream_is_ok_only_after_done(
    stack: Stack, make_classifier: ClassifierFactory, sent: list[bytes], leave_after: bytes, outcome: str
) -> None:
    """The upstream sends ``sent`` and then holds its end-of-stream back; the client reads up to
    ``leave_after`` and drops the connection. The trail records the outcome, with the TTFT either way."""
    hold_eof = asyncio.Event()

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in sent:
            await resp.write(chunk)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hold_eof.wait(), 10)
        return resp

    async with scripted_upstream(upstream_chat) as upstream_url:
        url = await make_classifier(litellm_url=upstream_url)
        request_id = await _close_after(url, leave_after)
        completed = await wait_for_event(stack.events_path, request_id, "request_completed")
        hold_eof.set()
    assert (completed["outcome"], completed["status"]) == (outcome, 200)
    assert completed["ttft_ms"] is not None


async def test_a_client_gone_before_the_upstream_breaks_is_cancelled_with_the_200_it_got(
    stack: Stack, make_classifier: ClassifierFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The client leaves part-way while the upstream goes on (the classifier's write to it fails: once
    reported as a 502 from LiteLLM); then the upstream dies. The client got a 200: the trail says so, and
    the server's log has no error (a client leaving is not one)."""
    client_left = asyncio.Event()

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(CHUNKS[0])
        await asyncio.wait_for(client_left.wait(), 10)
        for _ in range(20):  # the classifier's writes to the gone client fail; then the upstream dies
            await resp.write(CHUNKS[1])
            await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async with scripted_upstream(upstream_chat) as upstream_url:
        url = await make_classifier(litellm_url=upstream_url)
        request_id = await _close_after(url, b"sim:first")
        client_left.set()
        completed = await wait_for_event(stack.events_path, request_id, "request_completed")
    assert (completed["outcome"], completed["status"]) == ("cancelled", 200)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors


async def test_a_failed_write_to_the_client_is_not_litellms_failure() -> None:
    """A burst of cut clients: the classifier's write to a client that had gone failed inside the
    forwarder's exchange and came out as "LiteLLM unreachable" (502), so a client that had its 200 was
    recorded as cancelled with 502. The client's reset passes through as itself."""

    async def upstream_chat(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async with scripted_upstream(upstream_chat) as upstream_url:
        forwarder = HttpForwarder(upstream_url, timeout_s=5)
        try:
            with pytest.raises(ConnectionResetError) as caught:
                async with forwarder.open("POST", "/v1/chat/completions", b"{}", {}) as upstream:
                    assert upstream.status == 200
                    raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            assert not isinstance(caught.value, ApiError)
        finally:
            await forwarder.close()


async def test_litellm_refusing_the_connection_is_still_a_502() -> None:
    forwarder = HttpForwarder(f"http://127.0.0.1:{free_ports(1)[0]}", timeout_s=5)
    try:
        with pytest.raises(UpstreamUnavailable):
            async with forwarder.open("POST", "/v1/chat/completions", b"{}", {}):
                pass
    finally:
        await forwarder.close()


async def test_a_write_to_a_client_that_left_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """On the classifier's own server, a handler whose write to its client fails with a reset (the client
    left part-way; the chat handler records it as ``cancelled`` and re-raises) is not logged as an error,
    where aiohttp's default logs a traceback for it; any other exception still is."""

    async def left(_: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Cannot write to closing transport")

    async def broken(_: web.Request) -> web.StreamResponse:
        raise RuntimeError("a real bug")

    app = web.Application()
    app.router.add_get("/left", left)
    app.router.add_get("/broken", broken)
    async with served(app, classifier=True) as url, aiohttp.ClientSession() as http:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/left") as resp:
                await resp.read()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        async with http.get(url + "/broken") as resp:
            assert resp.status == 500
    assert any(r.levelno >= logging.ERROR for r in caplog.records)  # the real bug is still logged
