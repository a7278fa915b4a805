"""Capability-matrix costs, each against a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_matrix [--quick]

1. load + validate the shipped 23-profile matrix, and a generated 2,000-profile one, against a bare
   `yaml.safe_load` of the same file (PyYAML's default pure-Python loader) and a bare libyaml load;
2. one warm-state refresh across 20 hosts: `FleetProbe.poll_once` against 20 local aiohttp `/api/ps`
   servers on port 0 plus `build_overlay` (warm states, memory, lockouts) and `Matrix.with_live`, against
   the same 20 GETs made bare with the same client session.
Medians of several runs; the servers run in the same process and event loop, so both sides pay for them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from capability_matrix import (
    BYTES_PER_GB,
    DEFAULT_MATRIX_PATH,
    Matrix,
    build_overlay,
    load_matrix,
    parse_matrix,
)
from capability_matrix.probe import FleetProbe

MODELS = ["qwen3:8b", "qwen2.5-coder:7b", "qwen3:30b-a3b", "qwen2.5:32b", "qwen2.5-coder:32b"]


def median_s(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches (schema compilation, imports) outside the measurement
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def amedian_s(fn: Callable[[], Awaitable[object]], runs: int) -> float:
    await fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def generated_matrix(hosts: int, per_host: int, base: Callable[[int], str]) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema_version": "1.0", "hosts": {}, "profiles": {}}
    for h in range(hosts):
        host_id = f"node{h:04d}-100.64.{h // 250}.{h % 250 + 1}"
        api_base = base(h)
        doc["hosts"][host_id] = {
            "api_base": api_base,
            "gpu_memory_gb": 80,
            "num_parallel": 4,
            "max_loaded_models": 4,
        }
        for m in range(per_host):
            model = f"{MODELS[m % len(MODELS)]}-v{m}"
            doc["profiles"][f"{host_id}/ollama/{model}"] = {
                "lane": ["fast-chat", "balanced", "code"][m % 3],
                "host_id": host_id,
                "provider": "ollama",
                "model": model,
                "api_base": api_base,
                "context_window": 32768,
                "supports_tools": True,
                "reasoning": m % 2 == 0,
                "requires_think_false": m % 3 == 0,
                "hardware_class": "local_gpu",
                "preemptible": h % 5 == 0,
                "lockout_state": "none",
                "warm_state": "unknown",
                "vram_gb": 6.5 + m % 10,
                "speed_score": round(0.3 + (h * 7 + m) % 60 / 100, 2),
                "quality_score": round(0.4 + (h * 3 + m) % 50 / 100, 2),
            }
    return doc


def bench_load(label: str, path: Path, runs: int) -> None:
    text = path.read_bytes()
    load = median_s(lambda: load_matrix(path), runs)
    pure = median_s(lambda: yaml.safe_load(text), runs)
    libyaml = median_s(lambda: yaml.load(text, Loader=yaml.CSafeLoader), runs)
    doc = yaml.load(text, Loader=yaml.CSafeLoader)
    validate = median_s(lambda: parse_matrix(doc), runs)
    print(f"{label} ({len(text) / 1024:.0f} KiB, median of {runs}):")
    print(f"  load_matrix (read + libyaml + schema + cross-checks + build)  {load * 1e3:9.2f} ms")
    print(f"    of which parse_matrix (schema + cross-checks + build)       {validate * 1e3:9.2f} ms")
    print(f"  baseline yaml.safe_load (pure Python)                          {pure * 1e3:9.2f} ms")
    print(f"  baseline yaml.load(CSafeLoader)                                {libyaml * 1e3:9.2f} ms")
    print(f"  ratio load_matrix / yaml.safe_load                             {load / pure:9.2f} x")
    print(f"  ratio load_matrix / CSafeLoader                                {load / libyaml:9.2f} x")


async def bench_refresh(hosts: int, runs: int) -> None:
    now = time.time()
    ps = orjson.dumps(
        {
            "models": [
                {
                    "name": f"{MODELS[m]}-v{m}",
                    "model": f"{MODELS[m]}-v{m}",
                    "size": 7 * BYTES_PER_GB,
                    "size_vram": int(6.5 * BYTES_PER_GB),
                    "expires_at": "2099-01-01T00:00:00.000000000Z",
                    "details": {"family": "qwen3", "quantization_level": "Q4_K_M"},
                }
                for m in range(3)
            ]
        }
    )

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=ps, content_type="application/json")

    servers = []
    for _ in range(hosts):
        app = web.Application()
        app.router.add_get("/api/ps", handle)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
    bases = [str(s.make_url("")).rstrip("/") for s in servers]
    matrix: Matrix = parse_matrix(generated_matrix(hosts, 5, lambda h: bases[h]))
    try:
        async with aiohttp.ClientSession() as session:
            probe = FleetProbe(lambda: matrix, session, timeout_s=2.0)
            last_served = {k: now - 5 for k in list(matrix.profiles)[::4]}

            async def refresh() -> Matrix:
                observations = await probe.poll_once(time.time())
                return matrix.with_live(build_overlay(matrix, observations, now=now, last_served=last_served))

            async def bare() -> None:
                async def get(url: str) -> bytes:
                    async with session.get(url) as resp:
                        return await resp.read()

                await asyncio.gather(*(get(f"{b}/api/ps") for b in bases))

            observations = await probe.poll_once(now)
            assert all(o.reachable for o in observations.values())
            live = await refresh()
            assert {p.warm_state.value for p in live.profiles.values()} == {"hot", "warm", "cold"}
            full = await amedian_s(refresh, runs)
            baseline = await amedian_s(bare, runs)
            poll = await amedian_s(lambda: probe.poll_once(now), runs)
            pure = median_s(
                lambda: matrix.with_live(
                    build_overlay(matrix, observations, now=now, last_served=last_served)
                ),
                runs,
            )
    finally:
        for server in servers:
            await server.close()
    print(f"warm-state refresh, {hosts} hosts x 5 profiles, 3 models resident each (median of {runs}):")
    print(f"  poll_once + build_overlay + with_live                          {full * 1e3:9.2f} ms")
    print(f"    of which poll_once (20 concurrent GET /api/ps + parsing)    {poll * 1e3:9.2f} ms")
    print(f"    of which build_overlay + with_live (pure)                   {pure * 1e6:9.1f} us")
    print(f"  baseline: the same {hosts} GETs, bare, same session              {baseline * 1e3:9.2f} ms")
    print(f"  ratio refresh / bare GETs                                      {full / baseline:9.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = parser.parse_args()
    small_runs, big_runs, refresh_runs = (5, 2, 5) if args.quick else (50, 7, 50)
    print(f"python {sys.version.split()[0]}, PyYAML {yaml.__version__} (libyaml: {yaml.__with_libyaml__})\n")
    bench_load("shipped matrix, 23 profiles", DEFAULT_MATRIX_PATH, small_runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix-2000.yaml"
        doc = generated_matrix(100, 20, lambda h: f"http://10.0.{h // 250}.{h % 250 + 1}:11434")
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        assert len(load_matrix(path).profiles) == 2000
        print()
        bench_load("generated matrix, 2,000 profiles on 100 hosts", path, big_runs)
    print()
    asyncio.run(bench_refresh(20, refresh_runs))


if __name__ == "__main__":
    main()
