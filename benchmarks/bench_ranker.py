"""The hooks' decision cost: one `select()` (filters, TTFT and quality scores, pick) per request, over the
shipped 23-profile matrix and a generated 1,000-profile one, against a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_ranker [--quick]

The decision is what `async_filter_deployments` runs per attempt: build the fleet snapshot (rooms less
reservations, slots, observed times), filter, score by expected time to first token and quality, pick.
Every profile of the matrix is a candidate (one group holding all of them: the worst case). The baseline is
a bare loop over the same candidates reading one attribute each (the floor any per-candidate rule pays).
Per-decision microseconds are medians of several timed batches; the 1,000 / 23 ratio shows the growth
(linear would be about 43x).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
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
from torchrouter_core.ledger import HostLedger
from torchrouter_core.ranker import RequestNeeds
from torchrouter_core.ranker.observed import ObservedTimes
from torchrouter_core.ranker.scorers import TIER_WEIGHTS
from torchrouter_core.ranker.select import select


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
    """A busy fleet: a third of local profiles warm, a third cold, some in flight, reservations, timings."""
    warm: dict[str, WarmState] = {}
    in_flight: dict[str, int] = {}
    observed = ObservedTimes()
    for i, p in enumerate(matrix.profiles.values()):
        if p.is_local:
            warm[p.key] = (WarmState.WARM, WarmState.COLD, WarmState.HOT)[i % 3]
            in_flight[p.key] = i % 4
            observed.record(p.key, service_s=1.5, ttft_s=8.0, was_cold=True)
    memory = {
        h: HostMemory(host.gpu_memory_gb, 10.0, MemorySource.OLLAMA_PS) for h, host in matrix.hosts.items()
    }
    overlay = LiveOverlay(warm_states=warm, memory=memory)
    reserved = {h: HostLedger(6.0, (), 1) for i, h in enumerate(matrix.hosts) if i % 2 == 0}
    return matrix.with_live(overlay), overlay, in_flight, reserved, observed


def per_call_us(fn: Callable[[], Any], batch: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        runs.append((time.perf_counter() - t0) / batch * 1e6)
    return statistics.median(runs)


def measure(name: str, matrix: Matrix, batch: int, repeats: int) -> float:
    live_matrix, overlay, in_flight, reserved, observed = live(matrix)
    keys: list[str | None] = list(live_matrix.profiles)
    needs = RequestNeeds(prompt_tokens=1200, max_output_tokens=256)

    def decide() -> Any:
        return select(
            "balanced", keys, needs, matrix=live_matrix, overlay=overlay, in_flight=in_flight,
            reserved=reserved, weights=TIER_WEIGHTS["R"], observed=observed,
        )  # fmt: skip

    def baseline() -> int:
        return sum(1 for k in keys if k is not None and live_matrix.profiles[k].vram_gb >= 0)

    selection = decide()
    assert selection.chosen is not None, selection.reason
    decision = per_call_us(decide, batch, repeats)
    floor = per_call_us(baseline, batch, repeats)
    print(
        f"{name:>28}: {len(keys):5d} profiles  decision {decision:9.1f} us  "
        f"(bare loop {floor:7.1f} us, ratio {decision / floor:5.1f}x)"
    )
    return decision


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch, repeats = (200, 3) if args.quick else (1000, 7)
    small = measure("shipped matrix", load_matrix(DEFAULT_MATRIX_PATH), batch, repeats)
    big = measure("generated 200 hosts x 5", generated(200, 5), max(batch // 20, 10), repeats)
    print(f"growth 1,000 / 23 profiles: {big / small:.1f}x (linear: {1000 / 23:.1f}x)")


if __name__ == "__main__":
    main()
