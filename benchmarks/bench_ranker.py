"""The hooks' decision cost: one `select()` (filters, TTFT and quality scores, pick) per request, over the
shipped 23-profile matrix and a generated 1,000-profile one, against a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_ranker [--quick]
    .venv/bin/python -m benchmarks.bench_ranker --instructions   # valgrind's count, steady under load

The decision is what `async_filter_deployments` runs per attempt, with the same inputs: the live matrix and
overlay, requests in flight, the ledger's view, observed times, the clock, the eviction log and recent use
(eviction charges): filter (room included: a cold candidate that does not fit in free memory walks its
host's residents for an eviction), score by expected time to first token and quality, pick. Every profile
of the matrix is a candidate (one group holding all of them: the worst case). The baseline is a bare loop
over the same candidates reading one attribute each (the floor any per-candidate rule pays).

Columns: `decision` (wall clock, what the benchmark has always reported) and `cpu` (this process's CPU time,
steadier on a shared machine) per `select()`, medians of several timed batches; `+event` adds building the
`route_selected` event's fields; `plain` is the readable cycle (`rank()` over a `FleetSnapshot`, the
reference the compiled one answers exactly as) for comparison; `compile` is the one-off cost of compiling a
new live matrix and overlay (each probe round or warm-state change), per compile. The 1,000 / 23 ratio
shows the growth (linear would be about 43x).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capability_matrix import (
    DEFAULT_MATRIX_PATH,
    HostMemory,
    LiveOverlay,
    Matrix,
    MemorySource,
    WarmState,
    load_matrix,
    parse_matrix,
)
from torchrouter_core.eviction import EvictionLog, EvictionRules, RecentUse
from torchrouter_core.ledger import HostLedger
from torchrouter_core.ranker import RequestNeeds
from torchrouter_core.ranker.compiled import Compiled
from torchrouter_core.ranker.observed import ObservedTimes
from torchrouter_core.ranker.scorers import TIER_WEIGHTS
from torchrouter_core.ranker.select import _select_plain, select

HERE = str(Path(__file__).resolve().parents[1])


def generated(n_hosts: int, per_host: int) -> Matrix:
    hosts, profiles = {}, {}
    for h in range(n_hosts):
        host_id = f"host{h}-10.0.{h // 250}.{h % 250}"
        api = f"http://127.0.0.1:{20000 + h}"
        hosts[host_id] = {"api_base": api, "gpu_memory_gb": 48, "num_parallel": 2, "max_loaded_models": 3}
        for m in range(per_host):
            model = f"model{m}:7b"
            profiles[f"{host_id}/ollama/{model}"] = {
                "lane": "balanced", "host_id": host_id, "provider": "ollama", "model": model, "api_base": api,
                "context_window": 32768, "supports_tools": True, "reasoning": False,
                "requires_think_false": False, "hardware_class": "local_gpu", "preemptible": False,
                "lockout_state": "none", "warm_state": "unknown", "vram_gb": 4.0 + m * 3,
                "speed_score": 0.5, "quality_score": 0.3 + 0.1 * m,
            }  # fmt: skip
    return parse_matrix({"schema_version": "1.0", "hosts": hosts, "profiles": profiles})


def live(matrix: Matrix) -> tuple[Matrix, LiveOverlay, dict[str, int], dict[str, HostLedger], ObservedTimes]:
    """A busy fleet: a third of local profiles warm, a third cold, some in flight, reservations, timings
    (service, load and prompt pace, as the hooks have them once every deployment has answered)."""
    warm: dict[str, WarmState] = {}
    in_flight: dict[str, int] = {}
    observed = ObservedTimes()
    for i, p in enumerate(matrix.profiles.values()):
        if p.is_local:
            warm[p.key] = (WarmState.WARM, WarmState.COLD, WarmState.HOT)[i % 3]
            in_flight[p.key] = i % 4
            observed.record(p.key, service_s=1.5, ttft_s=8.0, was_cold=True, prompt=(1000, 0.5))
    memory = {
        h: HostMemory(host.gpu_memory_gb, 10.0, MemorySource.OLLAMA_PS) for h, host in matrix.hosts.items()
    }
    overlay = LiveOverlay(warm_states=warm, memory=memory)
    reserved = {h: HostLedger(6.0, (), 1) for i, h in enumerate(matrix.hosts) if i % 2 == 0}
    return matrix.with_live(overlay), overlay, in_flight, reserved, observed


def per_call_us(
    fn: Callable[[], Any], batch: int, repeats: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    runs = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(batch):
            fn()
        runs.append((clock() - t0) / batch * 1e6)
    return statistics.median(runs)


def measure(name: str, matrix: Matrix, batch: int, repeats: int) -> float:
    keys, needs, inputs, live_matrix = _inputs(matrix, time.time())
    overlay = inputs["overlay"]

    def decide() -> Any:
        return select("balanced", keys, needs, **inputs)

    def with_event() -> Any:
        return select("balanced", keys, needs, **inputs).event_fields()

    def plain() -> Any:
        return _select_plain("balanced", keys, needs, **inputs, breakers=None, rules=EvictionRules())

    def baseline() -> int:
        return sum(1 for k in keys if k is not None and live_matrix.profiles[k].vram_gb >= 0)

    selection = decide()
    assert selection.chosen is not None, selection.reason
    decision = per_call_us(decide, batch, repeats)
    cpu = per_call_us(decide, batch, repeats, time.process_time)
    event = per_call_us(with_event, batch, repeats, time.process_time)
    reference = per_call_us(plain, max(batch // 10, 5), repeats, time.process_time)
    compile_us = per_call_us(lambda: Compiled.build(live_matrix, overlay), max(batch // 20, 5), repeats)
    floor = per_call_us(baseline, batch, repeats)
    print(
        f"{name:>24}: {len(keys):5d} profiles  decision {decision:8.1f} us  cpu {cpu:8.1f} us  "
        f"+event {event:8.1f} us  plain {reference:8.1f} us  compile {compile_us:8.1f} us  "
        f"(bare loop {floor:6.1f} us, ratio {decision / floor:5.1f}x)"
    )
    return decision


def _inputs(matrix: Matrix, now: float) -> tuple[list[str | None], RequestNeeds, dict[str, Any], Matrix]:
    """The decision inputs over ``matrix`` busy (:func:`live`) at ``now`` (Unix seconds): the candidates,
    the request, ``select``'s keyword arguments, the live matrix."""
    live_matrix, overlay, in_flight, reserved, observed = live(matrix)
    use, log = RecentUse(), EvictionLog()
    for i, p in enumerate(live_matrix.profiles.values()):  # some recent use: evictions are charged
        if p.is_local and i % 2 == 0:
            use.record(p.host_id, p.model, now - i % 60)
    inputs: dict[str, Any] = dict(
        matrix=live_matrix, overlay=overlay, in_flight=in_flight, reserved=reserved,
        weights=TIER_WEIGHTS["R"], observed=observed, now=now, evicted_at=log.evicted_at, use=use,
    )  # fmt: skip
    return (
        list(live_matrix.profiles),
        RequestNeeds(prompt_tokens=1200, max_output_tokens=256),
        inputs,
        live_matrix,
    )


def _count_child(which: str, what: str, n: int) -> None:
    """Run ``n`` decisions (``what``: ``select`` or the bare ``loop``) over the ``which`` matrix
    (``small``: shipped, ``big``: 1,000 profiles), after one warm-up; valgrind counts the process."""
    matrix = load_matrix(DEFAULT_MATRIX_PATH) if which == "small" else generated(200, 5)
    keys, needs, inputs, live_matrix = _inputs(matrix, 1_800_000_000.0)  # a fixed clock: runs count alike
    select("balanced", keys, needs, **inputs)  # compile once, as the hooks do per probe round
    for _ in range(n):
        if what == "select":
            select("balanced", keys, needs, **inputs)
        else:
            sum(1 for k in keys if k is not None and live_matrix.profiles[k].vram_gb >= 0)


def _instructions(which: str, what: str, n: int) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", "benchmarks.bench_ranker", "--count-child", which, what, str(n)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same string hashes (set and dict order) every run
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count_instructions(n1: int, n2: int) -> None:
    """Instructions per decision, from two runs of ``n1`` and ``n2`` decisions each (start-up cancels out):
    a count that does not move with the machine's load, unlike the times above."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    print(f"instructions per decision (valgrind cachegrind; runs of {n1} and {n2} decisions)")
    per: dict[tuple[str, str], float] = {}
    for which in ("small", "big"):
        for what in ("select", "loop"):
            first, second = _instructions(which, what, n1), _instructions(which, what, n2)
            per[which, what] = (second - first) / (n2 - n1)
        print(
            f"{'shipped matrix' if which == 'small' else 'generated 200 hosts x 5':>24}: "
            f"select {per[which, 'select']:12,.0f}  bare loop {per[which, 'loop']:10,.0f}  "
            f"ratio {per[which, 'select'] / per[which, 'loop']:5.1f}x"
        )
    print(f"growth 1,000 / 23 profiles: {per['big', 'select'] / per['small', 'select']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per decision under valgrind instead"
    )
    parser.add_argument("--count-child", nargs=3, metavar=("MATRIX", "WHAT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        which, what, n = args.count_child
        _count_child(which, what, int(n))
        return
    if args.instructions:
        count_instructions(20, 120)
        return
    batch, repeats = (200, 3) if args.quick else (1000, 7)
    small = measure("shipped matrix", load_matrix(DEFAULT_MATRIX_PATH), batch, repeats)
    big = measure("generated 200 hosts x 5", generated(200, 5), max(batch // 20, 10), repeats)
    print(f"growth 1,000 / 23 profiles: {big / small:.1f}x (linear: {1000 / 23:.1f}x)")


if __name__ == "__main__":
    main()
