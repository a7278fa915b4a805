"""The simulated host's scheduler, as a table of request sequences and what Ollama would do with them."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from torchrouter.sim.scheduler import (
    NEVER,
    SPILL_SPEED_FACTOR,
    HostScheduler,
    Start,
    Ticket,
    UnknownModel,
    parse_keep_alive,
)
from torchrouter.sim.spec import HostSpec, ModelSpec

# 24 GB GPU; A/B/C take 10 GB each, S* 2 GB, X (30 GB) can never fit. Loads take 2 s (time_scale 1).
HOST = HostSpec(
    host_id="h",
    port=0,
    gpu_memory_gb=24,
    models=tuple(
        ModelSpec(n, size, 50.0, 2.0)
        for n, size in [("A", 10), ("B", 10), ("C", 10), ("S1", 2), ("S2", 2), ("S3", 2), ("X", 30)]
    ),
)

Step = tuple[Any, ...]


def outcome(d: Start | Any) -> str:
    if isinstance(d, Start):
        return ("load" if d.loaded else "start") + ("+spill" if d.speed_factor < 1 else "")
    return f"wait:{d.reason}"


def play(sched: HostScheduler, steps: list[Step]) -> None:
    """Steps: ("go", tag, model, t, expect[, keep_alive]), ("retry", tag, t, expect), ("done", tag, t),
    ("ext", gb), ("at", t, "A,B": the resident models at time t)."""
    tickets: dict[str, Ticket] = {}
    for i, step in enumerate(steps):
        where = f"step {i} {step}"
        match step:
            case ("go", tag, model, t, expect, *ka):
                tickets[tag] = sched.submit(model, t, keep_alive_s=parse_keep_alive(ka[0] if ka else None))
                assert outcome(sched.try_start(tickets[tag], t)) == expect, where
            case ("retry", tag, t, expect):
                assert outcome(sched.try_start(tickets[tag], t)) == expect, where
            case ("done", tag, t):
                sched.release(tickets[tag], t)
            case ("ext", gb):
                sched.set_external(gb)
            case ("at", t, names):
                assert ",".join(r.model.name for r in sched.loaded(t)) == names, where
            case _:
                raise AssertionError(f"bad step {step}")


# Each case: name, HostSpec overrides, steps, expected counters. Kept as a table, so not auto-formatted.
# fmt: off
CASES: list[tuple[str, dict[str, Any], list[Step], dict[str, int]]] = [
    ("fits", {},
     [("go", "a", "A", 0, "load"), ("at", 0, "A")],
     {"loads": 1}),
    ("warm model is reused", {},
     [("go", "a", "A", 0, "load"), ("done", "a", 1), ("go", "b", "A", 2, "start")],
     {"loads": 1}),
    ("idle model evicted, shortest keep-alive first", {},
     [("go", "a", "A", 0, "load", "10m"), ("done", "a", 1), ("go", "b", "B", 2, "load", "1m"),
      ("done", "b", 3), ("go", "c", "C", 4, "load"), ("at", 4, "A,C")],
     {"loads": 3, "evictions": 1}),
    ("idle models evicted only until the load fits", {},
     [("go", "a", "S1", 0, "load"), ("done", "a", 0), ("go", "b", "A", 1, "load"), ("done", "b", 1),
      ("go", "c", "B", 2, "load"), ("done", "c", 2), ("go", "d", "C", 3, "load"), ("at", 3, "B,C")],
     {"evictions": 2}),
    ("load waits for a busy model, then evicts it", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "B", 0, "load"), ("go", "c", "C", 1, "wait:memory"),
      ("done", "a", 5), ("retry", "c", 5, "load"), ("at", 5, "B,C")],
     {"loads": 3, "evictions": 1, "spills": 0}),
    ("a model bigger than the GPU spills", {},
     [("go", "a", "X", 0, "load+spill")],
     {"spills": 1}),
    ("spill evicts idle models first", {},
     [("go", "a", "A", 0, "load"), ("done", "a", 1), ("go", "b", "X", 2, "load+spill"), ("at", 2, "X")],
     {"evictions": 1, "spills": 1}),
    ("a too-big model waits for busy ones before spilling", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "X", 1, "wait:memory"), ("done", "a", 3),
      ("retry", "b", 3, "load+spill")],
     {"evictions": 1, "spills": 1}),
    ("external reservation leaves too little: spill", {},
     [("ext", 23), ("go", "a", "S1", 0, "load+spill")],
     {"spills": 1}),
    ("external reservation makes a load wait", {},
     [("ext", 10), ("go", "a", "A", 0, "load"), ("go", "b", "B", 0, "wait:memory"), ("ext", 0),
      ("retry", "b", 1, "load")],
     {"spills": 0}),
    ("keep_alive default is 5 minutes", {},
     [("go", "a", "A", 0, "load"), ("done", "a", 1), ("at", 300.5, "A"), ("at", 301.5, "")],
     {"unloads": 1}),
    ("keep_alive 0 unloads when idle", {},
     [("go", "a", "A", 0, "load", 0), ("at", 1, "A"), ("done", "a", 2), ("at", 2, "")],
     {"unloads": 1}),
    ("keep_alive 0 waits for the last request", {"num_parallel": 2},
     [("go", "a", "A", 0, "load", 0), ("go", "b", "A", 0, "start", 0), ("done", "a", 1), ("at", 1, "A"),
      ("done", "b", 2), ("at", 2, "")],
     {"unloads": 1}),
    ("keep_alive -1 never expires", {},
     [("go", "a", "A", 0, "load", -1), ("done", "a", 1), ("at", 1e9, "A")],
     {"unloads": 0}),
    ("the latest request's keep_alive wins", {},
     [("go", "a", "A", 0, "load", "1h"), ("done", "a", 1), ("go", "b", "A", 2, "start", "30s"),
      ("done", "b", 3), ("at", 32, "A"), ("at", 34, "")],
     {"unloads": 1}),
    ("max_loaded_models evicts though memory would fit", {"max_loaded_models": 2},
     [("go", "a", "S1", 0, "load"), ("done", "a", 1), ("go", "b", "S2", 2, "load"), ("done", "b", 3),
      ("go", "c", "S3", 4, "load"), ("at", 4, "S2,S3")],
     {"evictions": 1}),
    ("max_loaded_models with all busy waits", {"max_loaded_models": 2},
     [("go", "a", "S1", 0, "load"), ("go", "b", "S2", 0, "load"), ("go", "c", "S3", 0, "wait:max_loaded"),
      ("done", "b", 1), ("retry", "c", 1, "load"), ("at", 1, "S1,S3")],
     {"evictions": 1}),
    ("one slot: second request waits", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "A", 0, "wait:slot"), ("done", "a", 1),
      ("retry", "b", 1, "start")],
     {"loads": 1}),
    ("two slots: third request waits", {"num_parallel": 2},
     [("go", "a", "A", 0, "load"), ("go", "b", "A", 0, "start"), ("go", "c", "A", 0, "wait:slot"),
      ("done", "b", 1), ("retry", "c", 1, "start")],
     {"loads": 1}),
    ("slots go in arrival order", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "A", 0, "wait:slot"), ("go", "c", "A", 0, "wait:slot"),
      ("done", "a", 1), ("retry", "c", 1, "wait:slot"), ("retry", "b", 1, "start")],
     {}),
    ("a waiting load holds up later loads that would fit", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "B", 0, "load"), ("go", "c", "C", 0, "wait:memory"),
      ("go", "d", "S1", 0, "wait:queue"), ("go", "e", "B", 0, "wait:slot"), ("done", "a", 1),
      ("retry", "d", 1, "wait:queue"), ("retry", "c", 1, "load"), ("retry", "d", 1, "load")],
     {"loads": 4, "evictions": 1}),
    ("a request that gives up while waiting leaves the queue", {},
     [("go", "a", "A", 0, "load"), ("go", "b", "A", 0, "wait:slot"), ("done", "b", 0),
      ("go", "c", "A", 0, "wait:slot"), ("done", "a", 1), ("retry", "c", 1, "start")],
     {}),
]
# fmt: on


@pytest.mark.parametrize(("host_kw", "steps", "counters"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scheduler_cases(host_kw: dict[str, Any], steps: list[Step], counters: dict[str, int]) -> None:
    sched = HostScheduler(replace(HOST, **host_kw))
    play(sched, steps)
    got = sched.counters.as_dict()
    assert {k: got[k] for k in counters} == counters


def test_loading_model_makes_later_requests_wait_for_the_same_load() -> None:
    sched = HostScheduler(replace(HOST, num_parallel=2), time_scale=0.5)
    a, b = sched.submit("A", 0), sched.submit("A", 0.3)
    first, second = sched.try_start(a, 0), sched.try_start(b, 0.3)
    assert isinstance(first, Start) and isinstance(second, Start)
    assert first.ready_at == second.ready_at == 1.0  # load_s 2 * time_scale 0.5
    assert first.loaded and not second.loaded


def test_spilled_model_holds_whole_gpu_and_runs_slow() -> None:
    sched = HostScheduler(HOST)
    start = sched.try_start(sched.submit("X", 0), 0)
    assert isinstance(start, Start) and start.speed_factor == SPILL_SPEED_FACTOR
    state = sched.snapshot(0)
    assert state["memory_in_use_gb"] == 24 and state["resident"][0]["spilled"] is True


def test_snapshot_counts_waiting_and_in_flight() -> None:
    sched = HostScheduler(HOST)
    a, b = sched.submit("A", 0), sched.submit("A", 0)
    sched.try_start(a, 0)
    sched.try_start(b, 0)
    state = sched.snapshot(0)
    assert state["in_flight"] == 2 and state["waiting"] == {"A": 1}
    assert state["resident"][0] | {"expires_in_s": None} == {
        "model": "A",
        "size_gb": 10,
        "vram_gb": 10,
        "active": 1,
        "waiting": 1,
        "loading": True,
        "spilled": False,
        "expires_in_s": None,
    }
    sched.release(a, 1)
    sched.release(b, 1)  # never started: just leaves the queue
    assert sched.in_flight == 0 and sched.resident["A"].active == 0


def test_reset_unloads_and_forgets_running_requests() -> None:
    sched = HostScheduler(HOST)
    a = sched.submit("A", 0)
    sched.try_start(a, 0)
    sched.set_external(5)
    sched.reset()
    sched.release(a, 1)  # a request that outlived the reset must not break anything
    assert sched.resident == {} and sched.in_flight == 0 and sched.external_gb == 0
    assert sched.counters.as_dict()["loads"] == 0


def test_unknown_model_and_think_counts() -> None:
    sched = HostScheduler(HOST)
    with pytest.raises(UnknownModel):
        sched.submit("nope", 0)
    for think in (False, False, True, None, "high"):
        sched.counters.note_request("A", think)
    assert sched.counters.requests == 5
    assert sched.counters.think == {"A": {"false": 2, "true": 1, "absent": 1, "high": 1}}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        (0, 0.0),
        (42, 42.0),
        (1.5, 1.5),
        ("10", 10.0),
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("0", 0.0),
        (-1, NEVER),
        ("-1", NEVER),
        ("-1m", NEVER),
    ],
)
def test_parse_keep_alive(value: object, seconds: float) -> None:
    got = parse_keep_alive(value)
    assert got == seconds or (math.isinf(got) and math.isinf(seconds))


@pytest.mark.parametrize("value", ["soon", "5 m", "m5", "", True, [1]])
def test_parse_keep_alive_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(value)
