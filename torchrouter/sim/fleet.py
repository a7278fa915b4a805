"""Runs a whole simulated fleet (one Ollama app per host, one cloud app) on local ports.

Owns the sockets: starting and stopping the apps, port 0 for tests, a clear error on a busy port, and the
two faults that live at the socket: "refuse", which closes a host's listener so new connections are
refused, and "blackhole", which puts in its place a listener whose accept queue is full, so a new
connection's SYN is never answered (a host behind a dropping firewall or a dead route: the client waits for
its connect timeout). Both close idle kept-alive connections first, so they model new connections only: a
vanished host's pooled connections would go silent instead, which loopback cannot show (the local kernel
acknowledges whatever is written; see litellm_hooks/connect_budget.py on TCP_USER_TIMEOUT). Clearing
either reopens the app's listener on the same port. Because the app does not listen meanwhile, only this
Python API (`SimFleet.set_fault`, `reset`) can clear them. `serve_forever` is what `torchrouter up` runs
when no real fleet is configured; `SimFleetThread` runs a fleet beside an event loop that may block
(LiteLLM's SDK in the same process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from torchrouter.sim.cloud_app import create_cloud_app
from torchrouter.sim.ollama_app import HOST, RUNTIME, SOCKET_FAULTS, Clock, SimRuntime, create_host_app
from torchrouter.sim.spec import FleetSpec

log = logging.getLogger(__name__)
CLOUD = "cloud"
T = TypeVar("T")


class SimFleetError(RuntimeError):
    pass


class _BlackHole:
    """A listener on the port that never accepts, with its accept queue filled by our own connections: the
    kernel then drops every new SYN (Linux, ``tcp_abort_on_overflow`` off, the default), so a client's
    connect hangs until its own timeout, as with a host whose packets vanish."""

    FILLERS = 2  # backlog 0 holds one connection; the second is left half-open, which is harmless

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=0)
        self.fillers: list[socket.socket] = []
        try:
            for _ in range(self.FILLERS):
                filler = socket.socket(self.listener.family, socket.SOCK_STREAM)
                filler.setblocking(False)
                self.fillers.append(filler)
                with contextlib.suppress(BlockingIOError):
                    filler.connect((host, port))
            select.select([], self.fillers[:1], [], 1.0)  # the first one is queued (instant on loopback)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in (*self.fillers, self.listener):
            sock.close()


class _Served:
    """One app on one port, with a listener that can be closed, swapped for a black hole, and reopened."""

    def __init__(self, name: str, app: web.Application, host: str, port: int) -> None:
        self.name, self.app, self.host, self.port = name, app, host, port
        # handler_cancellation: a client that goes away cancels its handler, which frees its slot.
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        self.site: web.TCPSite | None = None
        self.hole: _BlackHole | None = None

    @property
    def runtime(self) -> SimRuntime:
        return self.app[RUNTIME]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        self.runtime.socket_hook = self.socket_fault
        await self._listen()

    async def _listen(self) -> None:
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            raise SimFleetError(
                f"simulated {self.name} cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.site, self.port = site, site.port  # with port 0 the kernel picked one; keep it for reopening

    async def socket_fault(self, mode: str) -> None:
        """``"refuse"``, ``"blackhole"``, or any other mode: the app listens (no socket fault)."""
        if self.hole is not None and mode != "blackhole":
            self.hole.close()
            self.hole = None
        await self.refuse(mode in SOCKET_FAULTS)
        if mode == "blackhole" and self.hole is None:
            try:
                self.hole = _BlackHole(self.host, self.port)
            except OSError as exc:
                raise SimFleetError(
                    f"simulated {self.name} cannot black-hole port {self.port}: {exc}"
                ) from exc

    async def refuse(self, on: bool) -> None:
        if on and self.site is not None:
            await self.site.stop()
            self.site = None
            # Kept-alive connections would still reach the app. An idle one is closed now (the client's
            # pool sees the close, and its next request connects anew and is refused); a busy one once its
            # current request ends (requests already running finish normally), as an Ollama being stopped
            # does (Go's Server.Shutdown). Not RequestHandler.close() on an idle one: aiohttp 3.14 then
            # stops serving the connection without closing it, so a pooled client connection hangs until
            # the client's timeout; that made "refused" look like "hung" for the first request (BENCHMARKS).
            if self.runner.server is not None:
                for conn in self.runner.server.connections:
                    if getattr(conn, "_request_in_progress", True):
                        conn.close()
                    else:
                        conn.force_close()
        elif not on and self.site is None:
            await self._listen()

    async def stop(self) -> None:
        if self.hole is not None:
            self.hole.close()
            self.hole = None
        await self.runner.cleanup()


class SimFleet:
    """A running simulated fleet. Use `async with SimFleet(spec) as fleet:` or start()/stop()."""

    def __init__(self, spec: FleetSpec, *, clock: Clock = time.monotonic) -> None:
        ids = [h.host_id for h in spec.hosts]
        if len(set(ids)) != len(ids) or CLOUD in ids:
            raise SimFleetError(f"host ids must be unique and not {CLOUD!r}: {ids}")
        self.spec = spec
        self._served: dict[str, _Served] = {}
        for h in spec.hosts:
            app = create_host_app(h, seed=spec.seed, time_scale=spec.time_scale, clock=clock)
            self._served[h.host_id] = _Served(f"host {h.host_id}", app, spec.host, h.port)
        if spec.cloud is not None:
            app = create_cloud_app(spec.cloud, seed=spec.seed, time_scale=spec.time_scale, clock=clock)
            self._served[CLOUD] = _Served("cloud", app, spec.host, spec.cloud.port)

    async def start(self) -> None:
        started: list[_Served] = []
        try:
            for served in self._served.values():
                started.append(served)
                await served.start()
        except BaseException:
            for served in started:
                await served.stop()
            raise

    async def stop(self) -> None:
        for served in self._served.values():
            await served.stop()

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def host_urls(self) -> dict[str, str]:
        """host_id -> Ollama base URL (the api_base for LiteLLM's ollama_chat/ provider)."""
        return {name: s.url for name, s in self._served.items() if name != CLOUD}

    @property
    def cloud_url(self) -> str | None:
        """The cloud's root URL; OpenAI clients want `cloud_api_base` (with /v1)."""
        return self._served[CLOUD].url if CLOUD in self._served else None

    @property
    def cloud_api_base(self) -> str | None:
        return None if self.cloud_url is None else self.cloud_url + "/v1"

    def runtime(self, target: str) -> SimRuntime:
        """The live simulator behind a host id or "cloud", for tests that need more than state()."""
        return self._get(target).runtime

    async def set_fault(
        self, target: str, mode: str, *, count: int | None = None, after_chunks: int = 2
    ) -> None:
        """Inject a fault on a host id or "cloud"; mode "none" clears it (and reopens a refusing or
        black-holed port)."""
        served = self._get(target)
        served.runtime.set_fault(mode, count, after_chunks)
        try:
            await served.socket_fault(mode)
        except BaseException:  # the port could not be black-holed: no fault at all, rather than half of one
            served.runtime.set_fault("none")
            await served.socket_fault("none")
            raise

    def set_external(self, host_id: str, gb: float) -> None:
        """Pretend something else holds `gb` of the host's GPU memory."""
        if host_id == CLOUD:
            raise SimFleetError("the cloud has no GPU memory")
        host = self._get(host_id).app[HOST]
        host.sched.set_external(gb)
        host.notify()  # freed memory may let a waiting load start

    async def reset(self) -> None:
        """Unload all models, zero counters and clear faults everywhere."""
        for served in self._served.values():
            served.runtime.reset()
            await served.socket_fault("none")

    def state(self) -> dict[str, dict[str, Any]]:
        """host_id (and "cloud") -> that simulator's /sim/state document."""
        return {name: s.runtime.state() for name, s in self._served.items()}

    def _get(self, target: str) -> _Served:
        try:
            return self._served[target]
        except KeyError:
            raise SimFleetError(f"no simulated host {target!r}; have {sorted(self._served)}") from None


async def serve_forever(spec: FleetSpec) -> None:
    """Run the fleet until cancelled (Ctrl-C under asyncio.run)."""
    async with SimFleet(spec) as fleet:
        for host_id, url in fleet.host_urls.items():
            log.info("simulated Ollama host %s at %s", host_id, url)
        if fleet.cloud_api_base is not None:
            log.info("simulated cloud at %s", fleet.cloud_api_base)
        await asyncio.Event().wait()


class SimFleetThread:
    """A SimFleet on its own event loop in a daemon thread.

    Needed whenever the caller's event loop may block on the fleet: LiteLLM's SDK, on the first logged call
    to an ollama_chat/ model, fetches `{api_base}/api/show` with a synchronous HTTP client from inside its
    event loop, which deadlocks against a fleet served by that same loop. A LiteLLM proxy in its own
    process does not need this.
    """

    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = SimFleet(spec)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-fleet", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (e.g. `fleet.set_fault(...)`) on the fleet's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def state(self) -> dict[str, dict[str, Any]]:
        async def snapshot() -> dict[str, dict[str, Any]]:
            return self.fleet.state()

        return self.call(snapshot())

    def start(self) -> SimFleet:
        self._thread.start()
        self.call(self.fleet.start())
        return self.fleet

    def stop(self) -> None:
        try:
            self.call(self.fleet.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
