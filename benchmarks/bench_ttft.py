"""Stack start time and time to first token through the whole path, against LiteLLM alone.

1. ``torchrouter up --dev`` from a cold process to "up" (all three parts answering), and to the first
   answered request; three runs.
2. Streamed requests (fast-chat, warm model, simulated fleet at real speed): time from sending to the
   first content token, through classifier -> LiteLLM -> fleet and through LiteLLM -> fleet directly,
   alternating request by request.

Run: ``python -m benchmarks.bench_ttft`` (``BENCH_TTFT_N`` requests per path, default 40).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from benchmarks import procs

MESSAGES = [{"role": "user", "content": "Status of the deploy in one line?"}]


def start_stack_once(state_dir: Path) -> tuple[float, float]:
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchrouter.cli", "up", "--dev", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Ctrl-C stops everything" in line:
                break
        up = time.monotonic() - t0
        request = urllib.request.Request(
            "http://127.0.0.1:4002/v1/chat/completions",
            data=json.dumps({"model": "auto", "messages": MESSAGES}).encode(),
            headers={"Content-Type": "application/json", "X-Agent-Id": "inbox-triage"},
        )
        with urllib.request.urlopen(request, timeout=120) as resp:
            resp.read()
        first = time.monotonic() - t0
    finally:
        proc.send_signal(2)
        proc.communicate(timeout=60)
    return up, first


async def ttft(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], headers: dict[str, str]
) -> float:
    t0 = time.perf_counter()
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.strip()
            if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                elapsed = time.perf_counter() - t0
                await resp.read()
                return elapsed
    raise AssertionError("stream ended without content")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_ttft(stack: procs.Stack, n: int) -> dict[str, list[float]]:
    auth = {"Authorization": "Bearer " + stack.env["LITELLM_MASTER_KEY"]}
    direct = {"model": "fast-chat", "messages": MESSAGES, "stream": True, "max_tokens": 32}
    routed = {"model": "auto", "messages": MESSAGES, "stream": True, "max_tokens": 32}
    results: dict[str, list[float]] = {"LiteLLM alone": [], "classifier -> LiteLLM": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # warm: load the model, fill LiteLLM's /api/show cache and both pools
            await ttft(http, stack.litellm_url + "/v1/chat/completions", direct, auth)
            await ttft(
                http, stack.classifier_url + "/v1/chat/completions", routed, {"X-Agent-Id": "inbox-triage"}
            )
        for _ in range(n):
            results["LiteLLM alone"].append(
                await ttft(http, stack.litellm_url + "/v1/chat/completions", direct, auth)
            )
            results["classifier -> LiteLLM"].append(
                await ttft(
                    http,
                    stack.classifier_url + "/v1/chat/completions",
                    routed,
                    {"X-Agent-Id": "inbox-triage"},
                )
            )
    return results


def main() -> None:
    n = int(os.environ.get("BENCH_TTFT_N", "40"))
    print(f"# bench_ttft: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print("\n## 1. `torchrouter up --dev`: cold start\n")
    print("| run | stack up (s) | first answer (s) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(3):
            up, first = start_stack_once(Path(tmp) / f"run{run}")
            print(f"| {run + 1} | {up:.2f} | {first:.2f} |")
    with tempfile.TemporaryDirectory() as tmp, procs.stack(Path(tmp), time_scale=1.0) as stack:
        results = asyncio.run(measure_ttft(stack, n))
    print(f"\n## 2. Time to first token, streamed, fast-chat warm, {n} requests per path (alternating)\n")
    print("| path | p50 ms | p90 ms | mean ms |\n|---|---|---|---|")
    for name, values in results.items():
        ms = [v * 1e3 for v in values]
        print(f"| {name} | {statistics.median(ms):.1f} | {pct(ms, 0.9):.1f} | {statistics.fmean(ms):.1f} |")
    base = statistics.median(results["LiteLLM alone"]) * 1e3
    routed = statistics.median(results["classifier -> LiteLLM"]) * 1e3
    print(f"\nadded by the classifier at p50: {routed - base:.1f} ms ({routed / base:.2f}x LiteLLM alone)")


if __name__ == "__main__":
    main()
