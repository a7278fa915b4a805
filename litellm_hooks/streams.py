"""What the hooks do to LiteLLM's answers (issue 8): the adapters between LiteLLM's objects and the pure
shaper in :mod:`litellm_hooks.stream_shape`, kept out of hooks.py so that stays a list of thin entry points.

- :func:`shaped_stream`: a chat stream as SSE bytes in OpenAI's chunk shape (LiteLLM passes ``data:``
  bytes through untouched); once the client has gone (:mod:`litellm_hooks.client_watch`), the provider
  stream is closed, which stops the model.
  A stream LiteLLM continued from its fallback before the first chunk opens with the stream report
  (:func:`torchrouter_core.contract.encode_stream_report`).
- :func:`name_the_group`: a non-streamed answer says the group in ``model`` (after a fallback LiteLLM
  names the fallback's model) and carries a ``chatcmpl-`` id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from litellm.types.utils import ModelResponse, ModelResponseStream

from litellm_hooks.client_watch import ClientGone
from litellm_hooks.stream_shape import shaper_for, sse_event, stream_id


async def shaped_stream(
    response: AsyncIterator[Any],
    request_data: dict[str, Any],
    *,
    client_gone: ClientGone | None,
    on_error: Callable[[str], None],
    on_abandoned: Callable[[int], None],
    before_first: Callable[[], Awaitable[bytes | None]] | None = None,
) -> AsyncGenerator[Any, None]:
    """LiteLLM's chunks, each chat chunk as SSE bytes in OpenAI's shape; anything else, or a chunk the
    shaper fails on (``on_error`` logs and counts it), as LiteLLM made it. When ``client_gone`` says the
    client has left, the provider stream is closed, ``on_abandoned`` runs (with the characters of answer
    relayed so far: content and tool-call arguments), and the stream ends; ``on_abandoned`` runs too when
    the server cancels or closes this stream while the client is gone (between two chunks).
    ``before_first`` runs for each chunk until the answer's first characters (so after any fallback
    LiteLLM took to get them); what it returns goes out ahead of that chunk."""
    shaper = shaper_for(request_data)
    relayed = 0  # characters of answer so far: what an abandoned stream's cost is estimated from
    try:
        async for chunk in response:
            if before_first is not None and relayed == 0:  # until the answer's first characters: a role-only
                ahead = await before_first()  # first chunk may come from an attempt LiteLLM then gives up on
                if ahead is not None:
                    yield ahead
            if client_gone is not None and client_gone():
                await close_stream(response)
                on_abandoned(relayed)
                return
            if not isinstance(chunk, ModelResponseStream):
                yield chunk
                continue
            relayed += answer_chars(chunk)
            if shaper is None:
                yield chunk
                continue
            try:
                events = [sse_event(c) for c in shaper.shape(chunk.model_dump(exclude_none=True))]  # type: ignore[no-untyped-call]
            except Exception:
                on_error("stream_shape")
                yield chunk
                continue
            for event in events:
                yield event
    except (asyncio.CancelledError, GeneratorExit):
        # The server stopped the stream between two chunks (starlette cancels a streaming response once
        # uvicorn tells it the client disconnected): the same client gone, seen from the other side.
        if client_gone is not None and client_gone():
            on_abandoned(relayed)
        raise


def answer_chars(chunk: ModelResponseStream) -> int:
    """Characters of answer in one chunk: its choices' content and tool-call arguments."""
    total = 0
    for choice in chunk.choices:
        delta = getattr(choice, "delta", None)
        content = getattr(delta, "content", None)
        if isinstance(content, str):
            total += len(content)
        for call in getattr(delta, "tool_calls", None) or ():
            arguments = getattr(getattr(call, "function", None), "arguments", None)
            if isinstance(arguments, str):
                total += len(arguments)
    return total


async def close_stream(response: Any) -> None:
    """Close LiteLLM's stream wrapper, which closes the provider's HTTP response (and so the model's work)."""
    close = getattr(response, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def name_the_group(data: dict[str, Any], response: Any) -> None:
    """Set ``model`` of a non-streamed chat answer to the group the request named; ids get ``chatcmpl-``."""
    group = data.get("model")
    if isinstance(response, ModelResponse) and isinstance(group, str) and group:
        response.model = group
        response.id = stream_id(response.id)
