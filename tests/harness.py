"""Test harness: the real parts, started once per session.

- the simulated fleet (the product's own :class:`SimFleet`) on free ports, in a background thread
  with its own event loop so tests can flip its faults from any loop;
- copies of the shipped matrix and litellm_config.yaml rewritten to those ports;
- a real LiteLLM proxy child process (:class:`LiteLLMProcess`, the same launcher ``torchrouter up``
  uses) with our hooks loaded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import orjson

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


async def wait_for_event(path: Path, request_id: str, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The first ``kind`` event of a request; a stream's trail is written just after its last byte.

    Async on purpose: the classifier under test runs on the test's own loop and must keep running."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        for event in read_events(path):
            if event["request_id"] == request_id and event["event"] == kind:
                return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event for {request_id} within {timeout_s} s")
        await asyncio.sleep(0.02)
