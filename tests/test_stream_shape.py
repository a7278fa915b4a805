"""Unit tests of the stream shaper (litellm_hooks/stream_shape.py) and the client watch (client_watch.py).

The client watch reads uvicorn's request cycle, an internal of the server LiteLLM runs on, so it is tested
against a real uvicorn server: a streaming ASGI app whose client hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import uvicorn
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

from litellm_hooks.client_watch import ClientGone, ClientWatches, watch_current_client
from litellm_hooks.stream_shape import ChunkShaper, shaper_for, sse_event, stream_id
from litellm_hooks.streams import shaped_stream


def ollama_chunk(uid: str, created: int, **choice: Any) -> dict[str, Any]:
    """A chunk as LiteLLM 1.102.4 dumps it for ollama_chat/ (no finish_reason until the end, a fresh id)."""
    return {"id": uid, "created": created, "model": "ollama_chat/qwen3:8b", "object": "chat.completion.chunk",
            "choices": [{"index": 0, **choice}]}  # fmt: skip


def test_one_id_created_and_model_per_stream_with_openais_prefix() -> None:
    shaper = ChunkShaper("fast-chat", include_usage=False)
    out = [
        *shaper.shape(ollama_chunk("0f7a-1", 100, delta={"role": "assistant", "content": "sim"})),
        *shaper.shape(ollama_chunk("9b2c-2", 101, delta={"content": " reply"})),
        *shaper.shape(ollama_chunk("77aa-3", 102, delta={}, finish_reason="length")),
    ]
    assert {c["id"] for c in out} == {"chatcmpl-0f7a-1"}
    assert {c["created"] for c in out} == {100} and {c["model"] for c in out} == {"fast-chat"}
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, "length"]
    assert all(c["object"] == "chat.completion.chunk" for c in out)
    cloud = ChunkShaper("cloud-fast", include_usage=False)
    assert cloud.shape(ollama_chunk("chatcmpl-abc", 5, delta={"content": "x"}))[0]["id"] == "chatcmpl-abc"
    assert stream_id(None) == "chatcmpl-missing" and stream_id("") == "chatcmpl-missing"


def test_usage_chunk_has_empty_choices_and_is_split_from_content() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    shaper = ChunkShaper("fast-chat", include_usage=True)
    (alone,) = shaper.shape({**ollama_chunk("a", 1, delta={}), "usage": usage})
    assert alone["choices"] == [] and alone["usage"] == usage
    both = shaper.shape({**ollama_chunk("b", 1, delta={}, finish_reason="stop"), "usage": usage})
    assert [c["choices"] for c in both] == [[{"index": 0, "delta": {}, "finish_reason": "stop"}], []]
    assert "usage" not in both[0] and both[1]["usage"] == usage
    # Not asked for (LiteLLM asked the provider on its own account): no chunk carries usage.
    quiet = ChunkShaper("fast-chat", include_usage=False)
    assert quiet.shape({**ollama_chunk("c", 1, delta={}), "usage": usage}) == []
    (content,) = quiet.shape({**ollama_chunk("d", 1, delta={"content": "x"}), "usage": usage})
    assert "usage" not in content and content["choices"][0]["delta"] == {"content": "x"}
    (no_usage,) = quiet.shape({**ollama_chunk("e", 1, delta={"content": "y"}), "usage": None})
    assert "usage" not in no_usage


def test_odd_chunks_still_come_out_in_shape() -> None:
    shaper = ChunkShaper("code", include_usage=False)
    (odd,) = shaper.shape({"id": 7, "created": "soon", "choices": [{"delta": None}]})
    assert odd["id"] == "chatcmpl-missing" and odd["created"] == 0
    assert odd["choices"] == [{"delta": {}, "index": 0, "finish_reason": None}]
    (empty,) = shaper.shape({"choices": "nope"})
    assert empty["choices"] == [] and empty["id"] == "chatcmpl-missing"


def test_shaper_for_reads_the_request() -> None:
    asked = {"model": "fast-chat", "stream": True, "stream_options": {"include_usage": True}}
    shaper = shaper_for(asked)
    assert shaper is not None and shaper.model == "fast-chat" and shaper.include_usage
    injected = shaper_for(asked | {"_litellm_strip_stream_usage": True})  # LiteLLM's own usage request
    assert injected is not None and not injected.include_usage
    plain = shaper_for({"model": "code"})
    assert plain is not None and not plain.include_usage
    assert shaper_for({"model": None}) is None and shaper_for({}) is None
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'


def test_client_watches_are_bounded_and_taken_once() -> None:
    watches = ClientWatches(limit=2)

    def never() -> bool:
        return False

    for call_id in ("a", "b", "c"):
        watches.add(call_id, never)
    watches.add(None, never)
    watches.add("d-none", None)
    assert len(watches) == 2 and watches.take("a") is None  # the oldest made room
    assert watches.take("c") is never and watches.take("c") is None


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """A real uvicorn server for the ASGI ``app`` on a free port (yielded), stopped afterwards."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110  (uvicorn has no started event to wait on)
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def test_no_probe_outside_a_uvicorn_request() -> None:
    assert watch_current_client() is None


async def test_probe_sees_a_real_uvicorn_client_hang_up() -> None:
    probes: list[ClientGone] = []
    sent = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            return
        probe = watch_current_client()
        assert probe is not None
        probes.append(probe)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        sent.set()
        for _ in range(500):  # as a stream does: keep sending; the server drops it once the client is gone
            if probe():
                return
            await send({"type": "http.response.body", "body": b".", "more_body": True})
            await asyncio.sleep(0.01)

    async with serving(app) as port, aiohttp.ClientSession() as http:
        resp = await http.get(f"http://127.0.0.1:{port}/")
        assert (await resp.content.readany()).startswith(b"first")
        await sent.wait()
        assert probes and not probes[0]()  # connected
        resp.close()  # the client hangs up
        for _ in range(300):
            if probes[0]():
                break
            await asyncio.sleep(0.01)
        assert probes[0](), "the probe never saw the client leave"


@pytest.mark.parametrize("call_id", ["x", 3])
def test_take_unknown(call_id: object) -> None:
    assert ClientWatches().take(call_id) is None


# --- a stream the server stops between two chunks (starlette cancels it once the client is gone) ---------
async def _chunks(gate: asyncio.Event) -> AsyncIterator[ModelResponseStream]:
    """LiteLLM's stream of one chunk ("hello"), then a wait for a next one that never comes."""
    yield ModelResponseStream(choices=[StreamingChoices(delta=Delta(content="hello"))])
    await gate.wait()


# LiteLLM's ModelResponseStream, built here as LiteLLM builds it, makes pydantic warn about a ReadOnly item
# of one of LiteLLM's TypedDicts (third-party, nothing to fix on our side).
_READONLY_ITEM = "ignore:Item 'summary' on TypedDict class 'ChatCompletionReasoningItem':UserWarning"


@pytest.mark.filterwarnings(_READONLY_ITEM)
@pytest.mark.parametrize("gone", [True, False])
@pytest.mark.parametrize("how", ["cancelled", "closed"])
async def test_a_stream_stopped_while_its_client_is_gone_is_abandoned_once(gone: bool, how: str) -> None:
    abandoned: list[int] = []
    left = [False]  # the client is there for the first chunk, then (maybe) gone
    stream = shaped_stream(
        _chunks(asyncio.Event()),
        {},
        client_gone=lambda: left[0],
        on_error=lambda _: None,
        on_abandoned=abandoned.append,
    )
    first = await anext(stream)
    assert first is not None
    left[0] = gone
    if how == "cancelled":  # the server's task stopped while the stream waits for the next chunk
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:  # the server closes the generator at its last yield
        await stream.aclose()
    assert abandoned == ([5] if gone else [])  # the 5 characters relayed, once; none with the client there


async def test_a_stream_starlette_stops_for_a_client_that_left_is_abandoned() -> None:
    """The same through the parts LiteLLM serves with: uvicorn and starlette's StreamingResponse. The
    upstream sends one chunk and then nothing; the client hangs up; starlette cancels the stream on the
    disconnect while it waits for the next chunk, and the abandonment is still seen (once)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    abandoned: list[int] = []
    sent = asyncio.Event()

    async def upstream() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        sent.set()
        await asyncio.Event().wait()  # a model that has not produced its next token yet

    async def endpoint(request: Request) -> StreamingResponse:
        stream = shaped_stream(
            upstream(),
            {},
            client_gone=watch_current_client(),
            on_error=lambda _: None,
            on_abandoned=abandoned.append,
        )
        return StreamingResponse(stream, media_type="text/event-stream")

    async with serving(Starlette(routes=[Route("/", endpoint)])) as port, aiohttp.ClientSession() as http:
        resp = await http.get(f"http://127.0.0.1:{port}/")
        assert (await resp.content.readany()).startswith(b"data: first")
        await sent.wait()
        resp.close()  # the client hangs up between two chunks
        for _ in range(300):
            if abandoned:
                break
            await asyncio.sleep(0.01)
        assert abandoned == [0], "the stream starlette stopped was not seen as abandoned"
