"""The fleet benchmark's own parts: its fleet files, its workload, its reference replay and its hooks shim.

Cheap checks that keep ``python -m benchmarks.bench_fleet`` runnable: the hard fleet validates as the
shipped one does, the workload is deterministic and shaped as BENCHMARKS.md says, the pure-simulation
reference runs, and the ranker still has the time constants the shim scales (a rename fails here, not as a
silently wrong benchmark).
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from benchmarks import fleet_reference, scaled_hooks
from benchmarks.bench_fleet import (
    FLEET_DIR,
    Answer,
    RunResult,
    dump,
    estimate_report,
    eviction_setting,
    render_fleet,
    undump,
)
from benchmarks.fleet_workload import (
    KINDS,
    PHASES,
    Request,
    lower_bound_s,
    percentile,
    service_s,
    tokens_per_s,
    workload,
)
from capability_matrix.consistency import validate_files
from capability_matrix.loader import load_matrix
from torchrouter.sim.ollama_app import PROMPT_SPEEDUP
from torchrouter.sim.spec import fleet_spec_from_matrix

REPO = Path(__file__).resolve().parent.parent


def matrix_doc() -> dict[str, object]:
    doc: dict[str, object] = yaml.safe_load((FLEET_DIR / "matrix.yaml").read_text())
    return doc


def test_the_hard_fleet_validates_as_the_shipped_one_does() -> None:
    assert validate_files(FLEET_DIR / "matrix.yaml", FLEET_DIR / "litellm_config.yaml") == []
    matrix = load_matrix(FLEET_DIR / "matrix.yaml")
    assert len(matrix.hosts) == 4 and len(matrix.profiles) == 12
    assert all(p.num_parallel is not None for p in matrix.profiles.values())


def test_slower_disks_declare_load_times_the_simulator_loads_in_and_the_router_reads_scaled(
    tmp_path: Path,
) -> None:
    sim_doc = render_fleet(FLEET_DIR, tmp_path, 1.0, router_scale=0.1)
    spec = fleet_spec_from_matrix(sim_doc, cloud_api_key="k")
    loads = {(h.host_id, m.name): m.load_s for h in spec.hosts for m in h.models}
    assert loads[("a100-10.0.0.24", "qwen2.5-coder:32b")] == 2.0 + 21.0  # 2 s + 21 GB at 1 GB/s
    assert loads[("rtx4090-10.0.0.21", "qwen3:8b")] == 2.0 + 6.5
    router = load_matrix(tmp_path / "matrix.yaml")  # what the router reads: the same loads, in wall seconds
    assert router.profiles["a100-10.0.0.24/ollama/qwen2.5-coder:32b"].load_time_s == 2.3
    assert validate_files(tmp_path / "matrix.yaml", tmp_path / "litellm_config.yaml") == []
    default = render_fleet(FLEET_DIR, tmp_path / "default")  # no disk given: the simulator's 2 s + 0.4 s/GB
    assert all("load_time_s" not in p for p in default["profiles"].values())


def test_the_hard_fleet_cannot_hold_every_deployment_at_once() -> None:
    spec = fleet_spec_from_matrix(matrix_doc(), cloud_api_key="unused")
    capacity = sum(h.gpu_memory_gb for h in spec.hosts)
    deployed = sum(m.size_gb for h in spec.hosts for m in h.models)
    assert deployed > capacity
    fits_all = [h.host_id for h in spec.hosts if sum(m.size_gb for m in h.models) <= h.gpu_memory_gb]
    assert fits_all == ["a100-10.0.0.24"]


def test_the_workload_is_seeded_and_shaped_as_documented() -> None:
    requests = workload(7)
    assert requests == workload(7) and requests != workload(8)
    assert len(requests) >= 300
    assert [r.at for r in requests] == sorted(r.at for r in requests)
    assert {r.phase for r in requests} == {p.name for p in PHASES}
    leading = {p.name: p.leading for p in PHASES}
    for phase in PHASES:
        kinds = Counter(r.kind for r in requests if r.phase == phase.name)
        assert kinds.most_common(1)[0][0] == leading[phase.name]
    assert sum(r.burst for r in requests) >= len(PHASES) * 2 * 3
    for r in requests:
        kind = KINDS[r.kind]
        assert kind.prompt_tokens[0] <= r.prompt_tokens <= kind.prompt_tokens[1]
        assert 4 + math.ceil(len(r.prompt()) / 4) == r.prompt_tokens  # as the simulated Ollama counts
        assert r.prompt().startswith(r.label + " ")


def test_the_lower_bound_is_the_group_s_fastest_deployment() -> None:
    doc = matrix_doc()
    request = workload(7)[0]
    profiles = doc["profiles"]
    assert isinstance(profiles, dict)
    times = [
        service_s(p, request.prompt_tokens, request.max_tokens)
        for p in profiles.values()
        if p["lane"] == request.group
    ]
    assert lower_bound_s(doc, request) == min(times) < max(times)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (50, 95, 100)
    assert math.isnan(percentile([], 0.5))


def test_the_reference_replay_serves_every_request_and_the_informed_policy_beats_shuffle() -> None:
    doc = matrix_doc()
    requests = workload(7, PHASES[:2])
    informed = fleet_reference.simulate(doc, requests, fleet_reference.informed)
    shuffled = fleet_reference.simulate(doc, requests, fleet_reference.shuffle)
    for outcome in (informed, shuffled):
        assert set(outcome.latency_s) == {r.index for r in requests}
        assert all(outcome.latency_s[r.index] >= lower_bound_s(doc, r) - 1e-9 for r in requests)
        assert set(outcome.history) == {r.label for r in requests}
        assert outcome.counters["spills"] == 0
    p95 = [percentile(list(o.latency_s.values()), 0.95) for o in (informed, shuffled)]
    assert p95[0] < p95[1]
    assert informed.counters["loads"] < shuffled.counters["loads"]


def test_the_shim_scales_the_router_s_time_constants() -> None:
    # In a fresh interpreter: the shim changes the router's constants for the whole process.
    code = (
        "from capability_matrix import live\n"
        "from torchrouter_core import eviction\n"
        "from torchrouter_core.ranker import scorers as s\n"
        "from benchmarks import scaled_hooks\n"
        "print(s.LOAD_BASE_S, s.PROMPT_TOKENS_PER_S, eviction.RecentUse().window_s,\n"
        "      live.build_overlay.__kwdefaults__['hot_window_s'], eviction.KEEP_ALIVE_HORIZON_S,\n"
        "      scaled_hooks.router_hooks is not None)\n"
    )
    env = {
        "TORCHROUTER_BENCH_TIME_SCALE": "0.1",
        "PYTHONPATH": str(REPO),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PATH": "",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "0.2",
        "20000.0",
        "30.0",
        "3.0",
        "30.0",
        "True",
    ]
    assert eviction_setting(0.1) == "min_residency_s=6,hold_s=30,unload_s=0.15"


def test_the_shim_finds_every_time_constant_it_scales() -> None:
    assert len(scaled_hooks.slots()) == 10  # raises when one of them was renamed or removed


def test_the_estimate_report_pairs_each_answer_with_its_own_pick_and_survives_a_dump(tmp_path: Path) -> None:
    """Two answers on the same warm deployment, one on an idle slot and one after 3 s in a slot's line
    (simulated), estimated at the truth and at twice it; a third whose last pick named another deployment
    (a retry) is left out. The report's medians say so, and a dump read back gives the same report."""
    matrix = render_fleet(FLEET_DIR, tmp_path)
    key = next(k for k, p in matrix["profiles"].items() if p["provider"] == "ollama")
    prompt_s = 800 / (tokens_per_s(matrix["profiles"][key]) * PROMPT_SPEEDUP)
    scale = 0.1
    answers, history, events = [], {}, []
    for i, (line_s, factor, picked) in enumerate([(0.0, 1.0, key), (3.0, 2.0, key), (0.0, 1.0, "other")]):
        request = Request(i, 1.0 * i, "chat", "chat", "fast-chat", 800, 100, False)
        answers.append(Answer(request, 5.0, 200, 1, key, 0.0, f"call-{i}"))
        history[request.label] = {
            "host": "h", "model": "m", "submitted_at": 100.0, "started_at": 100.0 + line_s * scale,
            "ready_at": 100.0, "finished_at": 101.0, "loaded": False, "evicted": [],
            "waited_s": {"slot": line_s * scale} if line_s else {},
        }  # fmt: skip
        ttft_ms = factor * (line_s + prompt_s) * scale * 1e3
        events.append(
            {"event": "route_selected", "request_id": f"call-{i}", "outcome": "routed", "deployment": picked,
             "warm_state": "warm", "estimated_ttft_ms": ttft_ms}
        )  # fmt: skip
    result = RunResult("torchrouter", answers, {}, history, events)
    lines = estimate_report(result, matrix, scale)
    assert len(lines) == 2
    assert "picks resident (n=2): estimate/actual median 1.00 (quartiles 1.00-2.00)" in lines[0], lines
    assert "picks waited for a slot (n=1): estimate/actual median 2.00" in lines[1], lines
    assert lines[1].endswith(f"|error| median {3.0 + prompt_s:.2f} s"), lines
    dump(tmp_path / "torchrouter.json", result, {i: 1.0 for i in range(3)})
    again = undump(tmp_path / "torchrouter.json")
    assert again.answers == result.answers and again.history == result.history
    assert estimate_report(again, matrix, scale) == lines
    assert estimate_report(dataclasses.replace(result, events=[]), matrix, scale) == []
