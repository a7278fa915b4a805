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
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from classifier.protocol_edge import ClassifierRunner
from torchrouter import ports
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import FleetSpec, SimFleet, fleet_spec_from_matrix
from torchrouter_core.contract import RouteReport

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


def preload_model(url: str, model: str) -> None:
    """One request straight to a simulated Ollama at ``url`` (not through the router): the model loads
    there, as after an earlier session."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False})
    request = urllib.request.Request(url + "/api/chat", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        resp.read()


@contextlib.contextmanager
def litellm_on_sim(
    tmp: Path,
    *,
    only: Mapping[str, Collection[str]],
    preload: Sequence[tuple[str, str]] = (),
    time_scale: float,
    env: Mapping[str, str | None] | None = None,
    seed: int = 5,
    workers: int = 1,
) -> Iterator[tuple[SimThread, LiteLLMProcess, str]]:
    """The shipped fleet files in ``tmp`` with, for each lane of ``only``, every profile but the keys named
    there locked out (``codex``); the simulated fleet of that matrix (``seed``, ``time_scale``) with each
    ``(host id, model)`` of ``preload`` loaded straight at its host before the router starts watching; a
    real LiteLLM with our hooks on it, ``workers`` uvicorn workers (the in-process ledger, a probe every
    0.5 s, the trail at ``tmp/events.jsonl``; ``env`` over that, a ``None`` value unsetting the
    variable). Yields ``(sim, proxy, master key)``; stops both."""
    render_fleet_files(tmp)
    matrix_path = tmp / "matrix.yaml"
    doc = yaml.safe_load(matrix_path.read_text())
    for key, profile in doc["profiles"].items():
        if profile["lane"] in only and key not in only[profile["lane"]]:
            profile["lockout_state"] = "codex"
    matrix_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sim = SimThread(fleet_spec_from_matrix(doc, cloud_api_key="k", seed=seed, time_scale=time_scale))
    sim.start()
    key = "sk-test-" + secrets.token_hex(8)
    child_env = {
        **os.environ,
        "LITELLM_MASTER_KEY": key,
        "TORCHROUTER_CLOUD_API_KEY": "k",
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(matrix_path),
        "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(tmp / "events.jsonl"),
        "TORCHROUTER_PROBE_INTERVAL_S": "0.5",
        "TORCHROUTER_LEDGER_REDIS_URL": None,
        **(env or {}),
    }
    proxy: LiteLLMProcess | None = None
    try:
        for host_id, model in preload:
            preload_model(sim.fleet.host_urls[host_id], model)
        proxy = LiteLLMProcess.start(
            tmp / "litellm_config.yaml",
            port=free_ports(1)[0],
            env={k: v for k, v in child_env.items() if v is not None},
            log_path=tmp / "litellm.log",
            num_workers=workers,
        )
        proxy.wait_ready()
        yield sim, proxy, key
    finally:
        if proxy is not None:
            proxy.stop()
        sim.stop()


async def ledger_is_empty(proxy: LiteLLMProcess, key: str) -> bool:
    """Whether the hooks report an empty VRAM ledger (``x-torchrouter-ledger``), asked with a cloud request
    (it reserves nothing itself)."""
    probe = {"model": "cloud-fast", "messages": [{"role": "user", "content": "?"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + "/v1/chat/completions", json=probe, headers=headers) as resp,
    ):
        await resp.read()
        return RouteReport.from_headers({k.lower(): v for k, v in resp.headers.items()}).ledger == {}
