"""Fleet outcome: TorchRouter's hooks against LiteLLM's own strategies over the same deployments.

    .venv/bin/python -m benchmarks.bench_fleet [--requests 160] [--time-scale 0.05]

The fleet is the shipped matrix's five simulated hosts (24, 16, 48, 24 and 80 GB; 6.5 to 21 GB models, so a
host cannot hold all of its models at once: matthew 31.5 GB of models on 24 GB, frodo 26.5 on 16, gandalf
67.5 on 48, samwise 33.5 on 24), started **cold** (nothing preloaded) for every run. The workload shifts
in phases (chat bursts to `fast-chat`, then code to `code`, then long prompts to `balanced`, then all three
mixed), each phase a few bursts of concurrent requests with short gaps; the same seed for every router.
Requests go straight to LiteLLM (no classifier: only the placement differs). Routers: LiteLLM with our
hooks (TorchRouter; `routing_strategy` left at LiteLLM's default, our filter leaves one deployment), and
LiteLLM without our hooks with `simple-shuffle`, `least-busy`, `latency-based-routing` (each with
`think: false` in its config for the profiles that require it, as our hooks add it).

Per router: latency p50/p95/p99 (whole non-streamed answer, seconds of simulated time = wall / scale), each
divided by the same percentile of the lower bound (every request served warm on an idle slot by the fastest
model of its group: prompt at 20x generation speed plus its tokens, the simulator's own pace), cold loads,
evictions of idle models, evictions of models with requests in flight (the simulated Ollama never does
it: it waits instead, so this is 0 by construction and reported as such), and overcommits (spills: loads
that did not fit on the GPU) from the simulated hosts' own counters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import SimThread, free_ports, render_fleet_files
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import fleet_spec_from_matrix
from torchrouter.sim.ollama_app import PROMPT_SPEEDUP

PHASES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("chat", ("fast-chat",), 60),  # (name, groups, prompt words)
    ("code", ("code",), 120),
    ("long", ("balanced",), 1500),
    ("mixed", ("fast-chat", "code", "balanced"), 300),
)


def workload(n: int, seed: int) -> list[tuple[float, str, str, int]]:
    """(arrival s of simulated time, group, prompt, max_tokens): bursts per phase, gaps between."""
    rng = random.Random(seed)
    out: list[tuple[float, str, str, int]] = []
    per_phase = n // len(PHASES)
    t = 0.0
    for name, groups, words in PHASES:
        for i in range(per_phase):
            if i % 10 == 0:
                t += rng.uniform(4.0, 10.0)  # a gap, then a burst of ten arriving within half a second
            group = rng.choice(groups)
            prompt = f"{name} {i}: " + "word " * rng.randint(words // 2, words)
            out.append((t + rng.uniform(0.0, 0.5), group, prompt, rng.randint(16, 64)))
    return out


def lower_bound_s(matrix: dict[str, Any], group: str, prompt: str, max_tokens: int) -> float:
    """Served warm on an idle slot by the group's fastest model (the simulator's pace, simulated seconds)."""
    best = max(
        20.0 + 130.0 * float(p["speed_score"])
        for p in matrix["profiles"].values()
        if p["lane"] == group and p["provider"] == "ollama"
    )
    prompt_tokens = len(prompt) / 4
    return prompt_tokens / (best * PROMPT_SPEEDUP) + max_tokens / best


def config_for(src: Path, dst: Path, matrix: dict[str, Any], strategy: str | None) -> None:
    """LiteLLM config: ours as shipped (strategy None), or without our hooks and with ``strategy``."""
    doc = yaml.safe_load(src.read_text())
    if strategy is not None:
        doc.setdefault("router_settings", {})["routing_strategy"] = strategy
        doc.get("litellm_settings", {}).pop("callbacks", None)
        for d in doc["model_list"]:
            if matrix["profiles"][d["model_info"]["id"]].get("requires_think_false"):
                d["litellm_params"]["think"] = False
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))


async def run_one(
    router: str, strategy: str | None, requests: list[tuple[float, str, str, int]], scale: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        render_fleet_files(tmp)
        matrix = yaml.safe_load((tmp / "matrix.yaml").read_text())
        config_for(tmp / "litellm_config.yaml", tmp / "bench_config.yaml", matrix, strategy)
        sim = SimThread(fleet_spec_from_matrix(matrix, cloud_api_key="k", seed=5, time_scale=scale))
        sim.start()
        key = "sk-bench-" + secrets.token_hex(6)
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": key,
            "TORCHROUTER_CLOUD_API_KEY": "k",
            "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(tmp / "matrix.yaml"),
            "TORCHROUTER_PROBE_INTERVAL_S": "0.5",
        }
        env.pop("TORCHROUTER_LEDGER_REDIS_URL", None)
        proxy = LiteLLMProcess.start(
            tmp / "bench_config.yaml", port=free_ports(1)[0], env=env, log_path=tmp / "litellm.log"
        )
        try:
            proxy.wait_ready()
            latencies: list[float] = []
            bounds: list[float] = []
            failures = 0
            t0 = time.perf_counter()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

                async def one(at: float, group: str, prompt: str, max_tokens: int) -> None:
                    nonlocal failures
                    await asyncio.sleep(max(0.0, t0 + at * scale - time.perf_counter()))
                    body = {
                        "model": group,
                        "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": max_tokens,
                    }
                    started = time.perf_counter()
                    async with session.post(
                        proxy.url + "/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    ) as resp:
                        await resp.read()
                        if resp.status != 200:
                            failures += 1
                            return
                    latencies.append((time.perf_counter() - started) / scale)
                    bounds.append(lower_bound_s(matrix, group, prompt, max_tokens))

                await asyncio.gather(*(one(*r) for r in requests))
            hosts = {h: s for h, s in sim.state().items() if h != "cloud"}
            counters = [s["counters"] for s in hosts.values()]
        finally:
            proxy.stop()
            sim.stop()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    row: dict[str, Any] = {"router": router, "ok": len(latencies), "failed": failures}
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        row[name] = pct(latencies, q) if latencies else float("nan")
        row[name + "_ratio"] = row[name] / pct(bounds, q) if latencies else float("nan")
    row["loads"] = sum(c["loads"] for c in counters)
    row["evictions"] = sum(c["evictions"] for c in counters)
    row["spills"] = sum(c["spills"] for c in counters)
    row["mean_s"] = statistics.fmean(latencies) if latencies else float("nan")
    row["bound_p95"] = pct(bounds, 0.95) if bounds else float("nan")
    return row


async def main_async(n: int, scale: float, seed: int) -> None:
    requests = workload(n, seed)
    routers: list[tuple[str, str | None]] = [
        ("torchrouter", None),
        ("simple-shuffle", "simple-shuffle"),
        ("least-busy", "least-busy"),
        ("latency-based-routing", "latency-based-routing"),
    ]
    print(f"{len(requests)} requests, time scale {scale}, seed {seed}; latencies in simulated seconds")
    print(
        f"{'router':>22} {'ok':>4} {'fail':>4} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'p50/lb':>7} {'p95/lb':>7} {'p99/lb':>7} {'loads':>6} {'evict':>6} {'busy-ev':>7} {'spills':>6}"
    )
    for router, strategy in routers:
        r = await run_one(router, strategy, requests, scale)
        print(
            f"{r['router']:>22} {r['ok']:>4} {r['failed']:>4} "
            f"{r['p50']:7.2f} {r['p95']:7.2f} {r['p99']:7.2f} "
            f"{r['p50_ratio']:7.2f} {r['p95_ratio']:7.2f} {r['p99_ratio']:7.2f} {r['loads']:>6} "
            f"{r['evictions']:>6} {0:>7} {r['spills']:>6}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.time_scale, args.seed))


if __name__ == "__main__":
    main()
