"""The connect budget, applied on its own, for every attempt (issue 10: per tier connect, first-byte, total).

LiteLLM 1.102.4 gives a call one timeout. For the OpenAI provider (our cloud deployments, ``openai/...``) it
passes an ``httpx.Timeout`` through to the OpenAI SDK whole, so a cloud attempt gets
``httpx.Timeout(first_byte_s, connect=connect_s)`` (:func:`cloud_timeout`). For every other provider,
``ollama_chat/`` included, LiteLLM cuts an ``httpx.Timeout`` down to its read value
(``litellm_core_utils/completion_timeout.py``), and httpx then applies that one number to connecting as
well. So a local attempt is sent through LiteLLM's own HTTP client (its ``AsyncHTTPHandler``, which the
``ollama_chat`` path accepts as the call's ``client``) built with an httpx *request* event hook that
lowers the request's connect timeout to the budget before the transport reads it (httpx carries the
timeouts in ``request.extensions["timeout"]``; LiteLLM's aiohttp transport maps ``connect`` to aiohttp's
``sock_connect``). The read timeout (first byte, and every silence within a stream) is untouched.

That bounds a *new* connection. A connection kept alive from before a host vanished (power lost, a route
gone) is not connected again: the request is written into it and nothing comes back. For those, the
client's sockets carry ``TCP_USER_TIMEOUT`` = the connect budget (Linux, tcp(7); RFC 5482): data the peer
has not acknowledged within it fails the connection, so a request sent into a dead connection fails
after the connect budget too instead of waiting for the first-byte budget. A live host's kernel
acknowledges within milliseconds whatever its GPU is doing, and a stream that only receives sends
nothing to be acknowledged, so a slow answer is never cut by it. (Not measurable on loopback, where the
local kernel acknowledges for any listener; the simulator's ``blackhole`` fault models new connections.)

Measured (tests/test_connect_budget.py, a listener whose accept queue is full, so the SYN is never
answered): the attempt fails as a connect timeout after the connect budget, not the first-byte budget.

One client per distinct budget (at most one per tier), made on first use and kept for the process, with
its own aiohttp session (LiteLLM's connection limits and keep-alive, plus the socket options above).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import httpx
from litellm.constants import (
    AIOHTTP_CONNECTOR_LIMIT,
    AIOHTTP_CONNECTOR_LIMIT_PER_HOST,
    AIOHTTP_KEEPALIVE_TIMEOUT,
)
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

# LiteLLM providers whose calls take our client (its base HTTP handler path); the rest get httpx.Timeout.
OLLAMA_PROVIDERS = frozenset({"ollama_chat", "ollama"})

_AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]


def connect_capped(connect_s: float) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: the request's connect timeout becomes at most ``connect_s`` seconds."""

    async def cap(request: httpx.Request) -> None:
        timeout = dict(request.extensions.get("timeout") or {})
        given = timeout.get("connect")
        timeout["connect"] = connect_s if given is None else min(float(given), connect_s)
        request.extensions["timeout"] = timeout

    return cap


def socket_factory(connect_s: float) -> Callable[[_AddrInfo], socket.socket]:
    """aiohttp's ``socket_factory``: a non-blocking TCP socket with ``SO_KEEPALIVE`` (as LiteLLM's own) and,
    where the platform has it, ``TCP_USER_TIMEOUT`` = ``connect_s`` (in ms; at least 1)."""
    user_timeout_ms = min(max(1, round(connect_s * 1000)), 2**31 - 1)  # a C int of milliseconds

    def make(addr_info: _AddrInfo) -> socket.socket:
        sock = socket.socket(family=addr_info[0], type=addr_info[1], proto=addr_info[2])
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
        return sock

    return make


def cloud_timeout(first_byte_s: float, connect_s: float) -> httpx.Timeout:
    """The OpenAI SDK's per-call timeout: ``connect_s`` to connect, ``first_byte_s`` for everything else
    (seconds). Never more to connect than in all."""
    return httpx.Timeout(first_byte_s, connect=min(connect_s, first_byte_s))


class LocalClients:
    """LiteLLM HTTP clients for local (``ollama_chat``) attempts, one per connect budget (seconds). Made
    inside the running event loop (the hooks'): each owns an aiohttp session bound to it."""

    def __init__(self) -> None:
        self._clients: dict[float, tuple[AsyncHTTPHandler, aiohttp.ClientSession]] = {}

    def for_connect(self, connect_s: float) -> AsyncHTTPHandler:
        made = self._clients.get(connect_s)
        if made is None:
            connector = aiohttp.TCPConnector(
                limit=AIOHTTP_CONNECTOR_LIMIT,
                limit_per_host=AIOHTTP_CONNECTOR_LIMIT_PER_HOST,
                keepalive_timeout=AIOHTTP_KEEPALIVE_TIMEOUT,
                socket_factory=socket_factory(connect_s),
            )
            session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
            hooks: dict[str, list[Callable[..., object]]] = {"request": [connect_capped(connect_s)]}
            client = AsyncHTTPHandler(event_hooks=hooks, shared_session=session)
            made = self._clients[connect_s] = (client, session)
        return made[0]

    def owns(self, client: object) -> bool:
        return any(client is mine for mine, _ in self._clients.values())

    async def aclose(self) -> None:
        made, self._clients = list(self._clients.values()), {}
        for client, session in made:
            await client.close()  # type: ignore[no-untyped-call]  # LiteLLM's, unannotated
            await session.close()


def apply_budget(
    request_kwargs: dict[str, Any],
    deployment: Mapping[str, Any],
    first_byte_s: float,
    connect_s: float,
    clients: LocalClients,
) -> None:
    """Set one attempt's time budgets (seconds) on LiteLLM's call kwargs: ``timeout`` and ``stream_timeout``
    (first byte, and every silence within a stream), and the connect budget the way the provider takes
    it: our client for Ollama (``deployment``'s ``litellm_params.model`` names the provider), an
    ``httpx.Timeout`` for the others. A client of ours left in the kwargs by an earlier attempt is taken
    back first (LiteLLM 1.102.4 gives each hop fresh kwargs; this holds should it not), so a cloud
    attempt gets the OpenAI client LiteLLM's router supplies; a client someone else set is left alone."""
    litellm_model = str((deployment.get("litellm_params") or {}).get("model") or "")
    if request_kwargs.get("client") is not None and clients.owns(request_kwargs["client"]):
        del request_kwargs["client"]
    if litellm_model.partition("/")[0] in OLLAMA_PROVIDERS:
        request_kwargs["client"] = clients.for_connect(connect_s)
        request_kwargs["timeout"] = request_kwargs["stream_timeout"] = first_byte_s
    else:
        request_kwargs["timeout"] = request_kwargs["stream_timeout"] = cloud_timeout(first_byte_s, connect_s)
