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

Measured (tests/test_connect_budget.py, a listener whose accept queue is full, so the SYN is never
answered): the attempt fails as a connect timeout after the connect budget, not the first-byte budget.

One client per distinct budget (at most one per tier), made on first use and kept for the process: its
connection pool is LiteLLM's own kind (aiohttp, with LiteLLM's keep-alive settings).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

# LiteLLM providers whose calls take our client (its base HTTP handler path); the rest get httpx.Timeout.
OLLAMA_PROVIDERS = frozenset({"ollama_chat", "ollama"})


def connect_capped(connect_s: float) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: the request's connect timeout becomes at most ``connect_s`` seconds."""

    async def cap(request: httpx.Request) -> None:
        timeout = dict(request.extensions.get("timeout") or {})
        given = timeout.get("connect")
        timeout["connect"] = connect_s if given is None else min(float(given), connect_s)
        request.extensions["timeout"] = timeout

    return cap


def cloud_timeout(first_byte_s: float, connect_s: float) -> httpx.Timeout:
    """The OpenAI SDK's per-call timeout: ``connect_s`` to connect, ``first_byte_s`` for everything else
    (seconds). Never more to connect than in all."""
    return httpx.Timeout(first_byte_s, connect=min(connect_s, first_byte_s))


class LocalClients:
    """LiteLLM HTTP clients for local (``ollama_chat``) attempts, one per connect budget (seconds)."""

    def __init__(self) -> None:
        self._clients: dict[float, AsyncHTTPHandler] = {}

    def for_connect(self, connect_s: float) -> AsyncHTTPHandler:
        client = self._clients.get(connect_s)
        if client is None:
            client = AsyncHTTPHandler(event_hooks={"request": [connect_capped(connect_s)]})
            self._clients[connect_s] = client
        return client

    def owns(self, client: object) -> bool:
        return any(client is mine for mine in self._clients.values())

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()  # type: ignore[no-untyped-call]  # LiteLLM's, unannotated
