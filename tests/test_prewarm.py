"""The prewarm rule (torchrouter_core.prewarm): when a group's demand calls for one more copy, and which copy
may be loaded (pure parts; the hooks' load end to end is in test_prewarm_fleet)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from capability_matrix import (
    Host,
    HostMemory,
    LiveOverlay,
    Matrix,
    MemorySource,
    Profile,
    ResidentModel,
    WarmState,
)
from tests.test_ranker import BASE, CLOUD
from torchrouter_core import prewarm
from torchrouter_core.prewarm import PrewarmRules, parse_prewarm_rules
from torchrouter_core.ranker import RequestNeeds
from torchrouter_core.ranker.select import select

A, B, C = "gpu-a", "gpu-b", "gpu-c"


def copy(host: str, state: WarmState, **changes: Any) -> Profile:
    fields = {"key": f"{host}/ollama/{changes.get('model', 'base')}", "host_id": host, "warm_state": state}
    return dataclasses.replace(BASE, **{**fields, **changes})


def matrix(*profiles: Profile, slots: int = 2, gb: float = 24.0) -> Matrix:
    hosts = {h: Host(h, f"http://127.0.0.1:1{i}", gb, slots, 3) for i, h in enumerate((A, B, C))}
    return Matrix("1.0", hosts, {p.key: p for p in profiles})


WARM_A, COLD_B, COLD_C = copy(A, WarmState.WARM), copy(B, WarmState.COLD), copy(C, WarmState.COLD)
FLEET = matrix(WARM_A, COLD_B, COLD_C, CLOUD)
KEYS = [WARM_A.key, COLD_B.key, COLD_C.key, CLOUD.key]


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("", PrewarmRules()),
        ("  ", PrewarmRules()),
        ("off", PrewarmRules(enabled=False)),
        ("No", PrewarmRules(enabled=False)),
        ("share=1", PrewarmRules(share=1.0)),
        (" share = 0.5 ", PrewarmRules(share=0.5)),
        ("share=4", PrewarmRules(share=4.0)),  # the most: a line of three times the slots first
    ],
)
def test_parse_prewarm_rules(text: str, rules: PrewarmRules) -> None:
    assert parse_prewarm_rules(text) == rules


@pytest.mark.parametrize(
    "text",
    ["share=0", "share=-0.5", "share=4.01", "share=1000", "share=inf", "share=nan", "share", "0.75", "x=1"],
)
def test_parse_prewarm_rules_refuses_and_says_what_it_expects(text: str) -> None:
    with pytest.raises(ValueError, match="prewarm"):
        parse_prewarm_rules(text)


@pytest.mark.parametrize(
    ("in_flight", "loading", "expected"),
    [
        ({}, set(), (0, 2)),  # one warm copy: its 2 slots
        ({WARM_A.key: 3}, set(), (3, 2)),
        ({WARM_A.key: 2, COLD_B.key: 1}, set(), (3, 2)),  # in flight on a cold copy: demand, no slots
        ({WARM_A.key: 2}, {COLD_B.key}, (2, 4)),  # a copy loading counts its slots already
        ({CLOUD.key: 9, "not-in-matrix": 4}, set(), (0, 2)),  # the cloud and unknown keys count for neither
    ],
)
def test_pressure_is_requests_in_flight_against_the_slots_of_resident_or_loading_copies(
    in_flight: dict[str, int], loading: set[str], expected: tuple[int, int]
) -> None:
    assert prewarm.pressure(FLEET, [*KEYS, "not-in-matrix"], in_flight, loading) == expected


def test_pressure_reads_each_copys_own_num_parallel_before_its_hosts() -> None:
    fleet = matrix(copy(A, WarmState.HOT, num_parallel=4), copy(B, WarmState.WARM), slots=1)
    assert prewarm.pressure(fleet, [f"{A}/ollama/base", f"{B}/ollama/base"], {}, set()) == (0, 5)


@pytest.mark.parametrize(
    ("rules", "demand", "slots", "wanted"),
    [
        (PrewarmRules(), 1, 2, False),  # 1 <= 1.5
        (PrewarmRules(), 2, 2, True),  # 2 > 1.5
        (PrewarmRules(share=1.0), 2, 2, False),  # nobody waits yet
        (PrewarmRules(share=1.0), 3, 2, True),
        (PrewarmRules(), 5, 0, False),  # nothing resident: the pick itself loads the first copy
        (PrewarmRules(), 1, 1, False),  # one request on a one-slot copy: no burst
        (PrewarmRules(share=0.1), 1, 2, False),
        (PrewarmRules(), 2, 1, True),
        (PrewarmRules(enabled=False), 9, 2, False),
    ],
)
def test_wanted(rules: PrewarmRules, demand: int, slots: int, wanted: bool) -> None:
    assert prewarm.wanted(rules, demand, slots) is wanted


def test_set_aside_leaves_out_resident_loading_cloud_and_unknown_copies() -> None:
    assert prewarm.set_aside(FLEET, [*KEYS, "nope"], {COLD_C.key}) == {
        WARM_A.key: "prewarm:resident",
        COLD_C.key: "prewarm:loading",
        CLOUD.key: "prewarm:cloud",
        "nope": "prewarm:unknown",
    }


@pytest.mark.parametrize(
    ("chosen", "ok"),
    [
        (COLD_B, True),
        (WARM_A, False),  # resident already
        (copy(B, WarmState.HOT), False),
        (CLOUD, False),
        (None, False),
    ],
)
def test_candidate(chosen: Profile | None, ok: bool) -> None:
    assert prewarm.candidate(chosen) is (chosen if ok else None)


def _prewarm_pick(
    fleet: Matrix, keys: list[str], loading: set[str], overlay: LiveOverlay | None = None
) -> Profile | None:
    """The hooks' steps, pure: rank with resident and loading copies set aside, keep a cold pick that fits."""
    selection = select(
        "balanced",
        keys,
        RequestNeeds(),
        matrix=fleet,
        overlay=overlay or LiveOverlay(),
        in_flight={},
        now=1_000_000.0,
        breakers=prewarm.set_aside(fleet, keys, loading),
    )
    return prewarm.candidate(selection.chosen)


def test_the_prewarm_pick_is_the_best_cold_copy_in_free_memory() -> None:
    fast_c = dataclasses.replace(COLD_C, quality_score=0.9)  # the better of the two cold copies
    fleet = matrix(WARM_A, COLD_B, fast_c, CLOUD)
    assert _prewarm_pick(fleet, KEYS, set()) is fast_c
    # a copy already loading is not loaded twice: the other cold one is taken
    assert _prewarm_pick(fleet, KEYS, {fast_c.key}) is COLD_B
    # nothing at all when every copy is resident or loading
    assert _prewarm_pick(fleet, KEYS, {fast_c.key, COLD_B.key}) is None


def _other_on_b(in_flight: dict[str, int]) -> tuple[Matrix, list[str], LiveOverlay, dict[str, int]]:
    """gpu-b holds an idle (or busy) 20 GB model of another group, listed by /api/ps long ago: the 20 GB copy
    there needs it evicted; gpu-c is too small for the copy at all."""
    other = copy(B, WarmState.WARM, model="other", lane="code", vram_gb=20.0)
    big = [copy(A, WarmState.WARM, vram_gb=20.0), copy(B, WarmState.COLD, vram_gb=20.0)]
    small_c = copy(C, WarmState.COLD, vram_gb=30.0)
    listed = LiveOverlay(
        memory={B: HostMemory(24.0, 20.0, MemorySource.OLLAMA_PS)},
        resident={B: {"other:latest": ResidentModel("other:latest", 20.0, 1_000_300.0, 900_000.0)}},
        observed_gb={(B, "other"): 20.0},
    )
    return matrix(*big, other, small_c), [p.key for p in (*big, small_c)], listed, in_flight


@pytest.mark.parametrize(("busy", "victims"), [(False, ["other"]), (True, None)])
def test_the_prewarm_evicts_only_what_a_requests_pick_may_evict(
    busy: bool, victims: list[str] | None
) -> None:
    fleet, keys, overlay, _ = _other_on_b({})
    in_flight = {f"{B}/ollama/other": 1} if busy else {}
    selection = select(
        "balanced",
        keys,
        RequestNeeds(),
        matrix=fleet,
        overlay=overlay,
        in_flight=in_flight,
        now=1_000_000.0,
        breakers=prewarm.set_aside(fleet, keys, set()),
    )
    chosen = prewarm.candidate(selection.chosen)
    if victims is None:  # a model with requests in flight is never evicted: nothing to prewarm
        assert chosen is None and selection.rejected_now()[f"{B}/ollama/base"] == "no_room"
        return
    assert chosen is fleet.profiles[f"{B}/ollama/base"] and selection.placement is not None
    assert [v.model for v in selection.placement.victims] == victims
