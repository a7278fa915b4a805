"""Forwarding to LiteLLM, behind an interface so tests and benchmarks can swap the transport.

The default :class:`HttpForwarder` keeps one pooled ``aiohttp.ClientSession``; a response is handed
back as soon as its headers arrive so a stream can be relayed chunk by chunk, unbuffered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from torchrouter_core.contract import MAX_STREAM_REPORT_BYTES, decode_stream_report
from torchrouter_core.errors import (
    ApiError,
    LiteLLMUnreachable,
    UpstreamTimeout,
    UpstreamUnavailable,
    stream_broke_message,
)


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    _response: aiohttp.ClientResponse
    _head: bytes = b""  # read ahead by read_ahead, relayed first
    _broke: BaseException | None = None  # the stream broke while reading ahead: raised after _head

    async def read(self) -> bytes:
        return await self._response.read()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        if not self._head and self._broke is None:  # nothing read ahead (not a stream): aiohttp's own
            return self._response.content.iter_any()
        return self._after_head()  # a stream read ahead: one generator step more a chunk (~0.1 us here)

    async def _after_head(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
        if self._broke is not None:
            raise self._broke
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def read_ahead(self) -> str | None:
        """Read an SSE stream up to where its answer opens, before anything is sent to the client: the
        first event with content (a role-only first chunk is read past), ``[DONE]``, an error event, or
        the stream's end or break. The hooks' stream report, when one comes before the answer opens
        (:data:`~torchrouter_core.contract.STREAM_REPORT_PREFIX`), is read over the headers (it names who
        answered) and taken out.
        Returns None when the answer opened (everything read is relayed first by :meth:`iter_chunks`), or
        why it failed before any content (LiteLLM's error event, or the stream ending or breaking), for the
        caller to go on to the rest of the failure chain or answer an error: nothing was relayed yet.
        Reads at most ``MAX_STREAM_REPORT_BYTES`` ahead (then relays as it is)."""
        head, failed, at = b"", None, 0
        try:
            while len(head) <= MAX_STREAM_REPORT_BYTES:
                end = head.find(b"\n\n", at)
                if end < 0:
                    chunk = await self._response.content.readany()
                    if not chunk:
                        failed = "the stream ended before its answer began"
                        break
                    head += chunk
                    continue
                event = head[at:end]
                if (report := decode_stream_report(event)) is not None:  # who answered: over the headers
                    merged = CIMultiDict(self.headers)
                    for name, value in report.items():
                        merged[name] = value
                    self.headers = CIMultiDictProxy(merged)
                    head, end = head[:at] + head[end + 2 :], at - 2
                else:
                    verdict = _opening(event)
                    if verdict is not None:
                        failed = verdict or None
                        break
                at = end + 2
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._broke = exc
            failed = f"the stream broke before its answer began ({type(exc).__name__})"
        self._head = head
        return failed


def _opening(event: bytes) -> str | None:
    """One SSE event at a stream's start: ``""`` when the answer opens with it (content, ``[DONE]``, or
    anything this does not read), the error's message for an error event, None for an event that opens
    nothing (a comment, a role-only first chunk): read on."""
    if event.startswith(b":"):
        return None  # a comment: nothing of the answer
    if not event.startswith(b"data:"):
        return ""  # another field (event:, id:): not LiteLLM's shape, relayed as it is
    data = event[5:].strip()
    if data == b"[DONE]":
        return ""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(chunk, dict):
        return ""
    error = chunk.get("error")
    if error is not None:
        return stream_broke_message(error)
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices:
        return ""  # usage, or something else: relayed as it is
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict) or choice.get("finish_reason") is not None:
            return ""
        if any(value for key, value in delta.items() if key != "role"):
            return ""
    return None  # a role-only chunk (content "", nothing else set): the answer has not begun


class Forwarder(Protocol):
    def open(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...

    async def close(self) -> None: ...


class _Exchange:
    """``HttpForwarder.open``'s context: aiohttp's request context, with its failures (on the way in, in
    the body of the ``async with`` and on the way out) turned into our upstream errors. A class rather than
    an ``asynccontextmanager`` generator, whose two extra steps and closing StopAsyncIteration cost
    microseconds on every request."""

    __slots__ = ("_args", "_forwarder", "_request")

    def __init__(
        self, forwarder: HttpForwarder, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> None:
        self._forwarder = forwarder
        self._args = (method, url, body, headers)

    async def __aenter__(self) -> UpstreamResponse:
        method, url, body, headers = self._args
        self._request = self._forwarder._session.request(method, url, data=body, headers=headers)
        try:
            resp = await self._request.__aenter__()
        except ConnectionResetError:  # before ClientError: aiohttp's ClientConnectionResetError is both
            raise UpstreamUnavailable("the connection to LiteLLM was reset") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._forwarder._upstream_error(exc) from None
        return UpstreamResponse(resp.status, resp.headers, resp)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # LiteLLM has answered by now: a ConnectionResetError from here on is a write to the *client* that
        # has gone (the caller's block relays to it), not LiteLLM's failure, and passes through as itself
        # (a 502 recorded a client that had its 200 as "cancelled, 502").
        try:
            await self._request.__aexit__(exc_type, exc, tb)
        except ConnectionResetError:
            raise
        except (aiohttp.ClientError, TimeoutError) as raised:
            raise self._forwarder._upstream_error(raised) from None
        if isinstance(exc, aiohttp.ClientError | TimeoutError) and not isinstance(exc, ConnectionResetError):
            raise self._forwarder._upstream_error(exc) from None


class HttpForwarder:
    def __init__(self, base_url: str, *, timeout_s: float, connect_timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        # No total: a long stream is fine as long as bytes keep coming; a silent upstream is cut after
        # timeout_s without a byte (sock_read), which also bounds a non-streamed answer.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=timeout_s)
        self._timeout_s = timeout_s
        # limit=0: the classifier's own queues bound concurrency; the pool must not add a hidden one.
        # keepalive below uvicorn's 5 s: never reuse a connection LiteLLM is about to close (a POST is not
        # retried on a stale connection).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    def open(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return _Exchange(self, method, self.base_url + path, body, headers)

    def _upstream_error(self, exc: aiohttp.ClientError | TimeoutError) -> ApiError:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return LiteLLMUnreachable(f"the router's LiteLLM proxy is unreachable ({exc.os_error.strerror})")
        if isinstance(exc, TimeoutError):  # before ClientError: aiohttp's read timeout is both
            return UpstreamTimeout(f"LiteLLM sent nothing for {self._timeout_s:.0f} s")
        # Disconnects, resets, broken payloads: all a bad gateway.
        return UpstreamUnavailable(f"the connection to LiteLLM failed: {type(exc).__name__}")

    async def close(self) -> None:
        await self._session.close()
