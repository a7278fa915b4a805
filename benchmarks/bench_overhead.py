"""What the classifier costs, measured against baselines in the same run.

1. The stack (wrk -> classifier -> LiteLLM with hooks -> simulated fleet at time scale 0, i.e. instant)
   against LiteLLM alone (wrk -> LiteLLM -> the same fleet). Goal: stack throughput >= 90% of LiteLLM's.
2. The classifier alone in front of an instant upstream, against a bare aiohttp pass-through in front
   of the same upstream. Goal: >= 50% of the pass-through's requests/s. Two traffic shapes: one agent
   (every request in fast-chat, whose 13 slots keep 19 of the 32 connections always queued: the worst
   case for the queue machinery) and a mixed R/H/C rotation (the three lanes share the load).

Arms alternate (A B A B) and each figure is the mean of its runs. Concurrency 32, wrk with one thread.
Run: ``python -m benchmarks.bench_overhead`` (``BENCH_SECONDS`` sets each run's length, default 15).

Part 2 also reports each server's CPU time per request (from ``/proc``: the ratio's cause, and steadier
than throughput on a shared machine). To compare two trees in the same runs, ``BENCH_VS=<checkout>``
starts that checkout's classifier beside this one (same pass-through, same upstream, arms alternating;
it reads the same matrix); ``BENCH_ROUNDS`` sets the rounds (default 2); ``BENCH_PARTS=2`` skips part 1.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import procs
from benchmarks.wrk import WrkResult, require_wrk, run_wrk
from tests.harness import free_ports

BODY = {"model": "auto", "messages": [{"role": "user", "content": "Status in one line?"}], "max_tokens": 8}
CHAT = "/v1/chat/completions"
MIXED_AGENTS = ("inbox-triage", "webmaster", "codex-runner")


def mean(results: list[WrkResult]) -> WrkResult:
    n = len(results)
    return WrkResult(
        sum(r.rps for r in results) / n,
        sum(r.p50_ms for r in results) / n,
        sum(r.p99_ms for r in results) / n,
        sum(r.requests for r in results),
        sum(r.errors for r in results),
    )


def alternate(arms: dict[str, Callable[[], WrkResult]], rounds: int = 2) -> dict[str, WrkResult]:
    runs: dict[str, list[WrkResult]] = {name: [] for name in arms}
    for _ in range(rounds):
        for name, arm in arms.items():
            runs[name].append(arm())
    return {name: mean(r) for name, r in runs.items()}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, arm: Callable[[], WrkResult], cpu_us: list[float]) -> Callable[[], WrkResult]:
    """``arm``, noting the server's CPU microseconds per request of each run in ``cpu_us``."""

    def run() -> WrkResult:
        before = cpu_s(pid)
        result = arm()
        cpu_us.append((cpu_s(pid) - before) / max(1, result.requests) * 1e6)
        return result

    return run


def row(name: str, r: WrkResult, base: WrkResult | None) -> str:
    ratio = f"{r.rps / base.rps:6.2f}" if base else "   1.00"
    cells = [f"{name:38s}", f"{r.rps:9.1f}", ratio, f"{r.p50_ms:8.2f}", f"{r.p99_ms:8.2f}", str(r.requests)]
    return "| " + " | ".join([*cells, str(r.errors)]) + " |"


def main() -> None:
    require_wrk()
    seconds = int(os.environ.get("BENCH_SECONDS", "15"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    parts = os.environ.get("BENCH_PARTS", "12")
    vs = os.environ.get("BENCH_VS")
    print(
        f"# bench_overhead: {platform.node()} {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"{seconds}s per run, {rounds} rounds, concurrency 32, load average {os.getloadavg()[0]:.1f}"
        + (f", vs {vs}" if vs else "")
    )
    header = "| arm | req/s | ratio | p50 ms | p99 ms | requests | errors |\n|---|---|---|---|---|---|---|"
    with tempfile.TemporaryDirectory() as tmp, procs.stack(Path(tmp), time_scale=0.0) as s:
        if "1" in parts:
            part_1(s, seconds, rounds, header)
        up_port, pass_port, cls_port, vs_port = free_ports(4)
        upstream = f"http://127.0.0.1:{up_port}"
        py = sys.executable
        work = Path(tmp)
        cenv = {**s.env, "LITELLM_URL": upstream}
        with contextlib.ExitStack() as running:
            running.enter_context(
                procs.child(
                    [py, "-m", "benchmarks.instant", "upstream", str(up_port)], s.env, work / "up.log"
                )
            )
            servers = {
                "": running.enter_context(
                    procs.child(procs.classifier_cmd(cls_port, py), cenv, work / "c2.log")
                ),
                "pass-through": running.enter_context(
                    procs.child(
                        [py, "-m", "benchmarks.instant", "passthrough", str(pass_port), upstream],
                        s.env,
                        work / "pt.log",
                    )
                ),
            }
            urls = {"": f"http://127.0.0.1:{cls_port}", "pass-through": f"http://127.0.0.1:{pass_port}"}
            if vs:
                venv = {**cenv, "PYTHONPATH": vs}
                servers[" (vs)"] = running.enter_context(
                    procs.child(procs.classifier_cmd(vs_port, py), venv, work / "vs.log", cwd=vs)
                )
                urls[" (vs)"] = f"http://127.0.0.1:{vs_port}"
            for url in (upstream, *urls.values()):
                procs.wait_http(url + "/health")
            arms: dict[str, Callable[[], WrkResult]] = {}
            cpu: dict[str, list[float]] = {}

            def arm(name: str, tag: str, headers: dict[str, str], agents: tuple[str, ...] = ()) -> None:
                url = urls[tag] + CHAT
                cpu[name] = []
                arms[name] = timed(
                    servers[tag].pid,
                    lambda: run_wrk(url, BODY, headers, seconds=seconds, agents=agents),
                    cpu[name],
                )

            arm("bare aiohttp pass-through", "pass-through", {})
            for tag in [t for t in urls if t != "pass-through"]:
                run_wrk(urls[tag] + CHAT, BODY, {"X-Agent-Id": "inbox-triage"}, seconds=2)
                arm(f"classifier{tag}, one lane (inbox-triage)", tag, {"X-Agent-Id": "inbox-triage"})
                arm(f"classifier{tag}, mixed R/H/C agents", tag, {}, MIXED_AGENTS)
            run_wrk(urls["pass-through"] + CHAT, BODY, {}, seconds=2)
            part2 = alternate(arms, rounds)
        base2 = part2["bare aiohttp pass-through"]
        print("\n## 2. The classifier alone against a bare aiohttp pass-through (instant upstream)\n")
        print(header)
        for name, r in part2.items():
            print(row(name, r, None if r is base2 else base2))
        print("\n| arm | server CPU per request, each run (us) |\n|---|---|")
        for name, runs in cpu.items():
            print(f"| {name} | {', '.join(f'{us:.0f}' for us in runs)} |")
        for name, cls in part2.items():
            if cls is not base2:
                print(
                    f"\n{name}: {cls.rps / base2.rps:.3f} of the pass-through's throughput (goal >= 0.50); "
                    f"~{1e3 / cls.rps:.3f} ms per request vs {1e3 / base2.rps:.3f} ms"
                )


def part_1(s: procs.Stack, seconds: int, rounds: int, header: str) -> None:
    auth = {"Authorization": "Bearer " + s.env["LITELLM_MASTER_KEY"]}
    direct = {**BODY, "model": "fast-chat"}
    # Warm both paths (first /api/show per model, connection pools, the JIT-less Python caches).
    run_wrk(s.litellm_url + CHAT, direct, auth, seconds=3)
    run_wrk(s.classifier_url + CHAT, BODY, {"X-Agent-Id": "inbox-triage"}, seconds=3)
    part1 = alternate(
        {
            "LiteLLM alone (fast-chat)": lambda: run_wrk(s.litellm_url + CHAT, direct, auth, seconds=seconds),
            "classifier -> LiteLLM (inbox-triage)": lambda: run_wrk(
                s.classifier_url + CHAT, BODY, {"X-Agent-Id": "inbox-triage"}, seconds=seconds
            ),
        },
        rounds,
    )
    base = part1["LiteLLM alone (fast-chat)"]
    print("\n## 1. The stack against LiteLLM alone (instant simulated fleet)\n")
    print(header)
    for name, r in part1.items():
        print(row(name, r, None if r is base else base))
    added_p50 = part1["classifier -> LiteLLM (inbox-triage)"].p50_ms - base.p50_ms
    print(
        f"\nstack/LiteLLM throughput: {part1['classifier -> LiteLLM (inbox-triage)'].rps / base.rps:.3f} "
        f"(goal >= 0.90); p50 added by the classifier: {added_p50:.2f} ms"
    )


if __name__ == "__main__":
    main()
