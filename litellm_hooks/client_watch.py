"""Whether the HTTP client of a proxied request is still there, for the streaming hook (an I/O edge).

Why this exists: LiteLLM 1.102.4 behind uvicorn keeps an ``ollama_chat/`` stream running after its client
(the classifier) hangs up mid-stream. uvicorn (ASGI spec 2.3) drops the bytes sent to a closed connection
without an error, and LiteLLM's proxy never closes the provider stream, so the model keeps generating
for no one (checked here: the simulated host never saw the connection close, and a later SIGTERM waited
out its grace period). ``cancel_on_disconnect`` (litellm_config.yaml) covers the call *before* the
stream starts; this covers it afterwards.

How: in ``async_pre_call_hook`` (which runs in uvicorn's task for the request) :func:`watch_current_client`
finds uvicorn's request cycle (the ``self`` of the task's ``run_asgi`` coroutine) and returns a probe
reading its ``disconnected`` flag; the streaming hook asks it after each chunk and, once the client has
gone, closes the provider stream (which closes the connection to Ollama). Should uvicorn's internals
differ, no probe is made and streams behave as LiteLLM's do.

:class:`ClientWatches` keeps the probes by LiteLLM call id until the stream hook or the call's
success/failure event takes them; it is bounded so a call LiteLLM never reports on cannot grow it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable

ClientGone = Callable[[], bool]


def watch_current_client() -> ClientGone | None:
    """A probe saying whether the client of the request running in this task has disconnected, or None."""
    task = asyncio.current_task()
    coro = task.get_coro() if task is not None else None
    frame = getattr(coro, "cr_frame", None)
    cycle = frame.f_locals.get("self") if frame is not None else None
    if cycle is None or not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    ref = weakref.ref(cycle)

    def gone() -> bool:
        current = ref()
        return current is None or bool(current.disconnected)

    return gone


class ClientWatches:
    """Probes by LiteLLM call id, at most ``limit`` of them (the oldest dropped first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._probes: OrderedDict[str, ClientGone] = OrderedDict()
        self._limit = limit

    def add(self, call_id: object, probe: ClientGone | None) -> None:
        if not isinstance(call_id, str) or probe is None:
            return
        self._probes[call_id] = probe
        while len(self._probes) > self._limit:
            self._probes.popitem(last=False)

    def take(self, call_id: object) -> ClientGone | None:
        return self._probes.pop(call_id, None) if isinstance(call_id, str) else None

    def __len__(self) -> int:
        return len(self._probes)
