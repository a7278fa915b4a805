"""Test harness: the real parts, started once per session.

- the simulated fleet (the product's own :class:`SimFleet`) on free ports, in a background thread
  with its own event loop so tests can flip its faults from any loop;
- copies of the shipped matrix and litellm_config.yaml rewritten to those ports;
- a real LiteLLM proxy child process (:class:`LiteLLMProcess`, the same launcher ``torchrouter up``
  uses) with our hooks loaded;
- :func:`served` (any aiohttp app on a free port) and :func:`eventually` (wait for a condition).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from classifier.protocol_edge import ClassifierRunner
from torchrouter import ports
from torchrouter.sim import FleetSpec, SimFleet

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MATRIX = REPO / "capability_matrix" / "matrix.yaml"
SHIPPED_CONFIG = REPO / "litellm_config.yaml"

T = TypeVar("T")


def render_fleet_files(dst: Path) -> dict[int, int]:
    """Copy the shipped matrix and LiteLLM config into ``dst``, every loopback port moved to a free one
    (the same code ``torchrouter up --free-ports`` runs)."""
    return ports.render_fleet_files(SHIPPED_MATRIX, SHIPPED_CONFIG, dst)


free_ports = ports.free_ports


class SimThread:
    """A SimFleet served from its own thread and loop."""

    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = SimFleet(spec)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-fleet", daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self.fleet.start())

    def stop(self) -> None:
        self.run(self.fleet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def set_fault(self, target: str, mode: str, **kw: Any) -> None:
        async def apply() -> None:
            result = self.fleet.set_fault(target, mode, **kw)
            if asyncio.iscoroutine(result):
                await result

        self.run(apply())

    def reset(self) -> None:
        async def apply() -> None:
            result = self.fleet.reset()
            if asyncio.iscoroutine(result):
                await result

        self.run(apply())

    def state(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            result = self.fleet.state()
            if asyncio.iscoroutine(result):
                result = await result
            return dict(result)

        return self.run(read())


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def eventually(check: Callable[[], Any], timeout_s: float = 8.0, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, which is returned; fail naming
    ``what`` after ``timeout_s``. The one way tests wait: for a condition, never for a fixed time.

    Async on purpose: a classifier under test runs on the test's own loop and must keep running."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(0.02)


async def wait_for_event(path: Path, request_id: str, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The first ``kind`` event of a request; a stream's trail is written just after its last byte."""

    def found() -> dict[str, Any] | None:
        return next(
            (e for e in read_events(path) if e["request_id"] == request_id and e["event"] == kind), None
        )

    event: dict[str, Any] = await eventually(found, timeout_s, what=f"a {kind} event for {request_id}")
    return event


class ClassifierTestServer(TestServer):
    """TestServer on the classifier's own runner (aiohttp's protocol errors as OpenAI JSON), as
    ``torchrouter serve`` and ``up`` run it."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ClassifierRunner(self.app, **kwargs)


@contextlib.asynccontextmanager
async def served(
    app: web.Application, *, classifier: bool = False, **server_kwargs: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port for the duration; yields its base URL (no trailing slash).
    The one test-server helper: classifiers under test (``classifier=True``: on the classifier's own
    runner) and scripted upstreams alike."""
    server_type = ClassifierTestServer if classifier else TestServer
    server = server_type(app, host="127.0.0.1", port=0, **server_kwargs)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
