"""Forwarding to LiteLLM, behind an interface so tests and benchmarks can swap the transport.

The default :class:`HttpForwarder` keeps one pooled ``aiohttp.ClientSession``; a response is handed
back as soon as its headers arrive so a stream can be relayed chunk by chunk, unbuffered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from torchrouter_core.errors import UpstreamTimeout, UpstreamUnavailable


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    _response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        return await self._response.read()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()


class Forwarder(Protocol):
    def open(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...

    async def close(self) -> None: ...


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

    @asynccontextmanager
    async def open(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        answered = False
        try:
            async with self._session.request(
                method, self.base_url + path, data=body, headers=headers
            ) as resp:
                answered = True
                yield UpstreamResponse(resp.status, resp.headers, resp)
        except ConnectionResetError:
            # Raised by the caller's block after LiteLLM answered: a write to the *client* that has gone
            # (aiohttp's ClientConnectionResetError is a ClientError too). Not LiteLLM's failure: a 502 here
            # recorded a client that had its 200 as "cancelled, 502".
            if answered:
                raise
            raise UpstreamUnavailable("the connection to LiteLLM was reset") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(
                f"the router's LiteLLM proxy is unreachable ({exc.os_error.strerror})"
            ) from None
        except TimeoutError:  # before ClientError: aiohttp's read timeout is both
            raise UpstreamTimeout(f"LiteLLM sent nothing for {self._timeout_s:.0f} s") from None
        except aiohttp.ClientError as exc:  # disconnects, resets, broken payloads: all a bad gateway
            raise UpstreamUnavailable(f"the connection to LiteLLM failed: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self._session.close()
