"""How good is the queue's wait estimate? Mixed, bursty load on the simulated fleet at real speed.

Lanes are capped at two slots each (``TORCHROUTER_LANE_LIMITS``) and wait budgets are generous, so
bursts queue instead of diverting. For every request that waited, the trail's ``request_completed``
holds the estimate the policy made at admission (``estimated_wait_ms``) and the wait it really had
(``queue_ms``). Reported: median and p90 of |estimate - actual| in ms, and relative to the actual wait;
beside them, in the same run, a constant-service-time estimator (the policy's 4 s prior, never
learning) applied to the same queue positions as the baseline.

Run: ``python -m benchmarks.bench_wait_estimate`` (``BENCH_WAVES`` bursts, default 30).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks import procs
from tests.harness import read_events
from torchrouter_core.queue_policy import DEFAULT_PRIOR_MS

AGENTS = """
tiers:
  H: {first_lane: balanced, wait_budget_ms: 120000}
  R: {first_lane: fast-chat, wait_budget_ms: 120000}
  C: {first_lane: code, wait_budget_ms: 120000}
agents: {webmaster: H, inbox-triage: R, codex-runner: C}
"""
MIX = [("inbox-triage", 0.5), ("webmaster", 0.25), ("codex-runner", 0.25)]
MIN_WAIT_MS = 50.0  # shorter waits are scheduling noise; relative error is meaningless there


async def one(http: aiohttp.ClientSession, url: str, agent: str, tokens: int) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "work item"}], "max_tokens": tokens}
    async with http.post(url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": agent}) as resp:
        await resp.read()


async def drive(url: str, waves: int, rng: random.Random) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        # Warm every lane (cold loads are seconds long and not what the estimate is about).
        await asyncio.gather(*(one(http, url, agent, 8) for agent, _ in MIX))
        pending: list[asyncio.Task[None]] = []
        for _ in range(waves):
            for _ in range(rng.randint(2, 10)):
                agent = rng.choices([a for a, _ in MIX], [w for _, w in MIX])[0]
                pending.append(asyncio.create_task(one(http, url, agent, rng.randint(20, 200))))
            await asyncio.sleep(rng.uniform(0.3, 2.5))
        await asyncio.gather(*pending)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    waves = int(os.environ.get("BENCH_WAVES", "30"))
    with tempfile.TemporaryDirectory() as tmp:
        agents = Path(tmp) / "agents.yaml"
        agents.write_text(AGENTS)
        env = {"TORCHROUTER_LANE_LIMITS": "fast-chat=2,balanced=2,code=2"}
        with procs.stack(Path(tmp) / "s", time_scale=1.0, classifier_env=env, agents=agents) as stack:
            t0 = time.monotonic()
            asyncio.run(drive(stack.classifier_url, waves, random.Random(42)))
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            events = read_events(Path(tmp) / "s" / "events.jsonl")
    done = [e for e in events if e["event"] == "request_completed" and e["outcome"] == "ok"]
    waited = [e for e in done if e["queue_ms"] >= MIN_WAIT_MS and e["estimated_wait_ms"]]
    abs_err = [abs(e["estimated_wait_ms"] - e["queue_ms"]) for e in waited]
    rel_err = [abs(e["estimated_wait_ms"] - e["queue_ms"]) / e["queue_ms"] for e in waited]
    service = statistics.median(e["total_ms"] - e["queue_ms"] for e in done)
    # Baseline: the same queue positions priced at the constant prior instead of the learned service time
    # (the policy's estimate is linear in the service time it was priced at, which the trail records).
    base_rel = [
        abs(e["estimated_wait_ms"] / e["service_estimate_ms"] * DEFAULT_PRIOR_MS - e["queue_ms"])
        / e["queue_ms"]
        for e in waited
    ]
    print(f"# bench_wait_estimate: {os.cpu_count()} cores, python {sys.version.split()[0]}, {waves} bursts")
    print(
        f"\n{len(done)} requests answered in {elapsed:.1f} s; {len(waited)} waited >= {MIN_WAIT_MS:.0f} ms; "
        f"median service {service:.0f} ms\n"
    )
    print("| estimator | median abs err ms | p90 abs err ms | median rel err | p90 rel err |")
    print("|---|---|---|---|---|")
    print(
        f"| learned service, line replay (shipped) | {statistics.median(abs_err):.0f} | "
        f"{pct(abs_err, 0.9):.0f} | {statistics.median(rel_err):.1%} | {pct(rel_err, 0.9):.1%} |"
    )
    print(
        f"| constant {DEFAULT_PRIOR_MS:.0f} ms prior (baseline, approx.) | - | - | "
        f"{statistics.median(base_rel):.1%} | {pct(base_rel, 0.9):.1%} |"
    )
    by_group: dict[str, list[float]] = {}
    for e in waited:
        by_group.setdefault(e["group"], []).append(
            abs(e["estimated_wait_ms"] - e["queue_ms"]) / e["queue_ms"]
        )
    for group, errs in sorted(by_group.items()):
        print(f"\n{group}: {len(errs)} waits, median rel err {statistics.median(errs):.1%}", end="")
    print()


if __name__ == "__main__":
    main()
