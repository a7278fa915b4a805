"""The stream relay: LiteLLM's streamed answer to the client, unbuffered, and how far it got.

:class:`Relay` records the status sent, the time to the first byte and whether the answer was whole
(the chat handler reads it to record the outcome, even when the client left part-way).
:func:`relay_stream` copies the chunks; a stream that breaks after the 200 went out ends with an
OpenAI-style ``data: {"error": ...}`` event (code ``upstream_stream_broken``) and a closed connection:
whether the connection to LiteLLM broke, LiteLLM sent its own error event (which this one replaces, with
its message), or an SSE stream ended cleanly without its ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from classifier.forwarder import UpstreamResponse
from torchrouter_core.errors import ApiError, stream_broke_message

log = logging.getLogger("torchrouter.classifier")

# Upstream response headers relayed to the client as they are.
RELAYED_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "Retry-After",
    "x-litellm-response-cost",
    "x-litellm-attempted-fallbacks",
)
SSE_TYPE = "text/event-stream"
STREAM_TYPES = (SSE_TYPE, "application/x-ndjson")

_SSE_DONE = b"data: [DONE]"


@dataclass
class Relay:
    """How far the answer got to the client: status, time to its first byte, and whether it was whole."""

    status: int = 0  # the answer's status (502 for a stream that broke after its 200 went out)
    sent: int = 0  # the status line that went out to the client (0: none yet)
    ttft_s: float | None = None
    complete: bool = False  # the upstream stream ended, or its ``data: [DONE]`` sentinel was relayed
    _tail: bytes = b""

    def saw(self, chunk: bytes) -> None:
        """Note a relayed stream chunk; the sentinel may arrive split across chunks."""
        self._tail = (self._tail + chunk)[-32:]
        self.complete = self._tail.rstrip().endswith(_SSE_DONE)


async def relay_stream(
    request: web.Request,
    upstream: UpstreamResponse,
    headers: Mapping[str, str],
    relay: Relay,
    started: float,
) -> web.StreamResponse:
    """Relay an upstream SSE stream as it comes. Headers go now, before the first byte (so TTFT and total
    go to events and metrics); ``relay`` records how far the answer got."""
    response = web.StreamResponse(status=200, headers=headers)
    relay.status = 200
    await response.prepare(request)
    relay.sent = 200
    sse = str(headers.get("Content-Type", "")).startswith(SSE_TYPE)
    try:
        async for chunk in upstream.iter_chunks():
            if relay.ttft_s is None:
                relay.ttft_s = time.perf_counter() - started
            at = _error_event_at(chunk) if sse else -1
            if at >= 0:  # LiteLLM ended the stream itself: its error event, then a clean end
                if at:
                    await response.write(chunk[:at])
                    relay.saw(chunk[:at])
                relay.status = 502
                message = _error_message(chunk[at:])
                await _end_stream_with_error(response, ApiError(message, code="upstream_stream_broken"))
                return response
            await response.write(chunk)
            relay.saw(chunk)
    except ConnectionResetError:
        raise  # the client went away: nothing to tell it (the request is recorded as cancelled)
    except Exception as exc:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the client left before the stream broke") from None
        # The 200 and part of the body are already out: end the stream with an error event the
        # client's SDK understands, and close; a second status line would corrupt the response.
        if not isinstance(exc, ApiError | aiohttp.ClientError | TimeoutError):
            log.exception("unexpected error while relaying a stream")
        relay.status = 502
        await _end_stream_with_error(response, exc)
        return response
    if sse and not relay.complete:  # a clean end without [DONE]: the answer stopped part-way
        relay.status = 502
        await _end_stream_with_error(response, ApiError(_NO_DONE, code="upstream_stream_broken"))
        return response
    relay.complete = True
    with contextlib.suppress(ConnectionResetError):  # the client left as the whole answer ended
        await response.write_eof()
    return response


_NO_DONE = "upstream stream ended before its last event"
_ERROR_EVENT = b'data: {"error"'


def _error_event_at(chunk: bytes) -> int:
    """Where an OpenAI-style ``data: {"error": ...}`` event starts in ``chunk`` (at its start or after an
    event's blank line; LiteLLM 1.102.4 ends a stream it cannot continue that way, then closes it
    cleanly), else -1."""
    if chunk.lstrip().startswith(_ERROR_EVENT):
        return len(chunk) - len(chunk.lstrip())
    found = chunk.find(b"\n" + _ERROR_EVENT)
    return found + 1 if found >= 0 else -1


def _error_message(event: bytes) -> str:
    """The message of the error event ``event`` starts with, as the classifier's own error's message."""
    try:
        parsed = orjson.loads(event.strip()[len(b"data: ") :].split(b"\n\n", 1)[0])
    except orjson.JSONDecodeError:
        return "upstream stream broke (its error event was cut)"
    return stream_broke_message(parsed.get("error") if isinstance(parsed, dict) else None)


async def _end_stream_with_error(response: web.StreamResponse, exc: BaseException) -> None:
    if isinstance(exc, ApiError):
        message = exc.message
    elif isinstance(exc, aiohttp.ClientError | TimeoutError):
        message = f"upstream stream broke: {type(exc).__name__}"
    else:
        message = "internal error in the classifier while relaying the stream; see its log"
    log.warning("stream from LiteLLM broke after the response started: %s", message)
    error = {
        "error": {"message": message, "type": "api_error", "param": None, "code": "upstream_stream_broken"}
    }
    response.force_close()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
        await response.write_eof()
