"""The VRAM ledger under load, end to end: real LiteLLM (one worker, then two sharing Redis) with our hooks,
the simulated fleet starting cold, 200 concurrent mixed requests (streams cut midway, clients that go
away), then: no host's reserved memory ever passed its capacity, the simulated hosts counted zero spills,
and the ledger is back at zero well before any lease could have expired (so every lease was released,
not left to expire). With one of two workers killed mid-run: its leases expire and nothing leaks.

Each test starts its own simulated fleet and LiteLLM (the session's stack is warm and shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml

from tests.harness import SimThread, eventually, litellm_on_sim
from tests.redis_server import RedisServer
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.redis_ledger import RedisLedger
from torchrouter_core.contract import HostReport, RouteReport
from torchrouter_core.ledger import HostLedger

TIME_SCALE = 0.02
LEASE_S = 120.0  # far longer than the test waits for the ledger to empty (45 s): only releases can empty it
GROUPS = ("fast-chat", "balanced", "code")


@dataclass
class Fleet:
    dir: Path
    sim: SimThread
    litellm: LiteLLMProcess
    key: str
    capacity: dict[str, float]


@contextlib.contextmanager
def fleet(
    tmp: Path, *, workers: int = 1, redis_url: str | None = None, lease_s: float = LEASE_S
) -> Iterator[Fleet]:
    """The shipped fleet (nothing locked out) on the simulated hosts (seed 3) behind a real LiteLLM with
    ``workers`` workers, the ledger in Redis at ``redis_url`` (else in-process), leases of ``lease_s``."""
    env = {"TORCHROUTER_LEDGER_LEASE_S": str(lease_s), "TORCHROUTER_LEDGER_REDIS_URL": redis_url}
    with litellm_on_sim(tmp, only={}, time_scale=TIME_SCALE, env=env, seed=3, workers=workers) as (
        sim,
        proxy,
        key,
    ):
        matrix = yaml.safe_load((tmp / "matrix.yaml").read_text())
        capacity = {h: float(v["gpu_memory_gb"]) for h, v in matrix["hosts"].items()}
        yield Fleet(tmp, sim, proxy, key, capacity)


async def one_request(session: aiohttp.ClientSession, f: Fleet, i: int, rng: random.Random) -> str:
    """One request of the mix; how it ended (for the test's own bookkeeping)."""
    stream = rng.random() < 0.4
    body: dict[str, Any] = {
        "model": rng.choice(GROUPS),
        "messages": [{"role": "user", "content": f"request {i}: " + "word " * rng.randint(5, 400)}],
        "max_tokens": rng.randint(4, 40),
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {f.key}", "x-torchrouter-request-id": f"req-{i}"}
    roll = rng.random()
    try:
        async with session.post(f.litellm.url + "/v1/chat/completions", json=body, headers=headers) as resp:
            if stream and roll < 0.3:  # a stream cut midway: read one chunk, then drop the connection
                await resp.content.readline()
                resp.close()
                return "cut"
            if roll > 0.9:  # a client that goes away before its answer
                resp.close()
                return "gone"
            await resp.read()
            return str(resp.status)
    except (aiohttp.ClientError, TimeoutError):
        return "error"


async def ledger_report(session: aiohttp.ClientSession, f: Fleet) -> dict[str, HostReport]:
    """The ledger as the hooks report it, read from a cloud request (which reserves nothing)."""
    body = {"model": "cloud-fast", "messages": [{"role": "user", "content": "ledger?"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {f.key}"}
    async with session.post(f.litellm.url + "/v1/chat/completions", json=body, headers=headers) as resp:
        await resp.read()
        report = RouteReport.from_headers({k.lower(): v for k, v in resp.headers.items()})
    assert report.ledger is not None, "the hooks report the ledger on every response"
    return dict(report.ledger)


async def fire(f: Fleet, n: int, watch: Any, *, during: Any = None) -> list[str]:
    """Fire ``n`` concurrent requests while ``watch`` samples the ledger and the simulated hosts."""
    rng = random.Random(11)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                await watch(session)
                for host, state in f.sim.state().items():
                    if host in f.capacity:
                        assert state["memory_in_use_gb"] <= f.capacity[host] + 1e-6, (host, state)

        sampler = asyncio.create_task(sample())
        tasks = [asyncio.create_task(one_request(session, f, i, rng)) for i in range(n)]
        if during is not None:
            await during()
        outcomes = await asyncio.gather(*tasks)
        done.set()
        await sampler
    return outcomes


def spills(f: Fleet) -> int:
    return sum(s["counters"]["spills"] for h, s in f.sim.state().items() if h in f.capacity)


async def test_200_mixed_requests_one_worker_never_overcommit_and_release_everything(tmp_path: Path) -> None:
    with fleet(tmp_path) as f:
        peaks: dict[str, float] = {}

        async def watch(session: aiohttp.ClientSession) -> None:
            for host, report in (await ledger_report(session, f)).items():
                peaks[host] = max(peaks.get(host, 0.0), report.reserved_gb)

        outcomes = await fire(f, 200, watch)
        assert outcomes.count("cut") > 5 and outcomes.count("gone") > 5, outcomes
        assert all(peaks.get(h, 0.0) <= cap for h, cap in f.capacity.items()), peaks
        assert spills(f) == 0
        async with aiohttp.ClientSession() as session:

            async def empty() -> bool:  # nothing reserved, nothing in flight, on any host
                return await ledger_report(session, f) == {}

            await eventually(empty, timeout_s=45, what="the in-process ledger back at zero")
        loads = sum(s["counters"]["loads"] for h, s in f.sim.state().items() if h in f.capacity)
        assert loads > 0  # the fleet started cold: reservations were taken


async def redis_view(url: str) -> tuple[dict[str, HostLedger], dict[str, float]]:
    ledger = RedisLedger(url)  # the default prefix, as the hooks use it
    try:
        return await ledger.view(time.time(), {}), await ledger.peaks()
    finally:
        await ledger.close()


async def test_200_mixed_requests_two_workers_share_redis(
    tmp_path: Path, redis_server: RedisServer, flushed: aioredis.Redis
) -> None:
    with fleet(tmp_path, workers=2, redis_url=redis_server.url) as f:
        await eventually(lambda: len(f.litellm.worker_pids()) == 2, timeout_s=90, what="two workers")

        async def watch(session: aiohttp.ClientSession) -> None:
            await ledger_report(session, f)

        outcomes = await fire(f, 200, watch)
        assert outcomes.count("cut") > 5, outcomes
        _view, peaks = await redis_view(redis_server.url)
        assert peaks, "the workers reserved through Redis"
        assert all(peaks.get(h, 0.0) <= cap for h, cap in f.capacity.items()), peaks
        assert spills(f) == 0

        async def empty() -> bool:
            return (await redis_view(redis_server.url))[0] == {}

        await eventually(empty, timeout_s=45, what="the Redis ledger back at zero")


async def test_a_worker_killed_mid_run_leaks_nothing(
    tmp_path: Path, redis_server: RedisServer, flushed: aioredis.Redis
) -> None:
    lease_s = 4.0
    with fleet(tmp_path, workers=2, redis_url=redis_server.url, lease_s=lease_s) as f:
        await eventually(lambda: len(f.litellm.worker_pids()) == 2, timeout_s=90, what="two workers")
        killed: list[int] = []

        async def kill_one() -> None:
            async def reserving() -> bool:
                return bool((await redis_view(redis_server.url))[0])

            await eventually(reserving, timeout_s=20, what="a live reservation")
            pid = f.litellm.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        async def watch(session: aiohttp.ClientSession) -> None:
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                await ledger_report(session, f)

        await fire(f, 120, watch, during=kill_one)
        assert killed
        _view, peaks = await redis_view(redis_server.url)
        assert all(peaks.get(h, 0.0) <= cap for h, cap in f.capacity.items()), peaks
        assert spills(f) == 0

        async def empty() -> bool:
            return (await redis_view(redis_server.url))[0] == {}

        await eventually(empty, timeout_s=lease_s * 4, what="the dead worker's leases expired")
