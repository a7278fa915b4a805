"""The ranker, stage by stage (table-driven): usability rules, every filter, every scorer, the picker,
one cycle, and the hooks' selection step. Pure: no LiteLLM, no HTTP."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from capability_matrix import (
    HardwareClass,
    Host,
    HostMemory,
    LiveOverlay,
    LockoutState,
    Matrix,
    MemorySource,
    Profile,
    Provider,
    ResidentModel,
    WarmState,
)
from torchrouter_core import eviction, usability
from torchrouter_core.eviction import EvictionRules, Keep
from torchrouter_core.ledger import HostLedger, Lease
from torchrouter_core.memory import OLLAMA_MIN_MEMORY_GB
from torchrouter_core.ranker import (
    Filter,
    FleetSnapshot,
    NoCandidate,
    Ranking,
    RankOutcome,
    RequestNeeds,
    Scorer,
    filters,
    pickers,
    rank,
    scorers,
)
from torchrouter_core.ranker.observed import ObservedTimes
from torchrouter_core.ranker.select import _select_plain, select, snapshot
from torchrouter_core.usability import HostRoom

HOST = "box-10.0.0.1"
NOW = 1_000_000.0

BASE = Profile(
    key=f"{HOST}/ollama/base",
    lane="balanced",
    host_id=HOST,
    provider=Provider.OLLAMA,
    model="base",
    api_base="http://127.0.0.1:1",
    context_window=8192,
    supports_tools=True,
    reasoning=False,
    requires_think_false=False,
    hardware_class=HardwareClass.LOCAL_GPU,
    preemptible=False,
    lockout_state=LockoutState.NONE,
    warm_state=WarmState.WARM,
    vram_gb=10.0,
    speed_score=0.5,
    quality_score=0.5,
)
CLOUD = dataclasses.replace(
    BASE,
    key="cloud/openai/gpt",
    host_id="cloud",
    provider=Provider.OPENAI,
    model="gpt",
    hardware_class=HardwareClass.CLOUD_GPU,
    warm_state=WarmState.UNKNOWN,
    vram_gb=0.0,
)
ROOMY = {HOST: HostRoom(free_gb=24.0, model_slots=2)}


IMAGE = frozenset({"text", "image"})


def local(**changes: Any) -> Profile:
    return dataclasses.replace(BASE, **changes)


# --- usability rules (shared with lane capacity) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("profile", "room", "reason"),
    [
        (local(), ROOMY[HOST], None),
        (local(lockout_state=LockoutState.AUTH), ROOMY[HOST], "lockout:auth"),
        (local(lockout_state=LockoutState.CODEX), ROOMY[HOST], "lockout:codex"),
        (dataclasses.replace(CLOUD, lockout_state=LockoutState.BUDGET), None, "lockout:budget"),
        (local(warm_state=WarmState.UNKNOWN), ROOMY[HOST], "host_unreachable"),
        (CLOUD, None, None),  # cloud: never "unreachable" by the fleet probe, never short of room
        (local(warm_state=WarmState.COLD), ROOMY[HOST], None),
        (local(warm_state=WarmState.COLD, vram_gb=30.0), ROOMY[HOST], "no_room"),
        (local(warm_state=WarmState.COLD), HostRoom(24.0, 0), "no_room"),  # max_loaded_models reached
        (local(warm_state=WarmState.COLD), None, "no_room"),  # host not declared
        (local(warm_state=WarmState.HOT, vram_gb=30.0), HostRoom(0.0, 0), None),  # resident: no load needed
    ],
)
def test_usability_rules(profile: Profile, room: HostRoom | None, reason: str | None) -> None:
    assert usability.unusable(profile, {HOST: room} if room is not None else {}) == reason


def test_host_rooms_count_resident_models_once_and_use_measured_memory() -> None:
    matrix = Matrix(
        "1.0",
        {HOST: Host(HOST, "http://127.0.0.1:1", 24.0, 2, 3)},
        {
            "a": local(key="a", model="m1", warm_state=WarmState.WARM),
            "b": local(key="b", model="m1", warm_state=WarmState.HOT, lane="code"),  # same model, 2 lanes
            "c": local(key="c", model="m2", warm_state=WarmState.COLD),
        },
    )
    measured = LiveOverlay(memory={HOST: HostMemory(24.0, 20.0, MemorySource.OLLAMA_PS)})
    # m1 is resident once (two lanes, one copy), hot (served within the hot window): kept
    m1 = usability.Resident("m1", 10.0 + OLLAMA_MIN_MEMORY_GB, Keep.HOT)
    assert usability.host_rooms(matrix, measured) == {HOST: HostRoom(4.0, 2, (m1,))}
    assert usability.host_rooms(matrix, LiveOverlay()) == {HOST: HostRoom(24.0, 2, (m1,))}  # declared
    off = EvictionRules(enabled=False)  # no eviction planned: residents are not listed
    assert usability.host_rooms(matrix, measured, rules=off) == {HOST: HostRoom(4.0, 2)}


# --- filters ----------------------------------------------------------------------------------------------
FLEET = FleetSnapshot(rooms=ROOMY)


@pytest.mark.parametrize(
    ("flt", "profile", "needs", "fleet", "reason"),
    [
        (filters.lockout, local(), RequestNeeds(), FLEET, None),
        (filters.lockout, local(lockout_state=LockoutState.AUTH), RequestNeeds(), FLEET, "lockout:auth"),
        (filters.reachable, local(), RequestNeeds(), FLEET, None),
        (filters.reachable, local(warm_state=WarmState.UNKNOWN), RequestNeeds(), FLEET, "host_unreachable"),
        (filters.reachable, CLOUD, RequestNeeds(), FLEET, None),
        (filters.room, local(warm_state=WarmState.COLD), RequestNeeds(), FLEET, None),
        (filters.room, local(warm_state=WarmState.COLD, vram_gb=25.0), RequestNeeds(), FLEET, "no_room"),
        (filters.room, local(warm_state=WarmState.COLD, vram_gb=25.0), RequestNeeds(), FleetSnapshot(), None),
        (
            filters.context_window,
            local(),
            RequestNeeds(prompt_tokens=8000, max_output_tokens=192),
            FLEET,
            None,
        ),
        (
            filters.context_window,
            local(),
            RequestNeeds(8000, max_output_tokens=193),
            FLEET,
            "context_window",
        ),
        (filters.tools, local(supports_tools=False), RequestNeeds(), FLEET, None),
        (filters.tools, local(supports_tools=False), RequestNeeds(needs_tools=True), FLEET, "no_tools"),
        (filters.tools, local(), RequestNeeds(needs_tools=True), FLEET, None),
        (filters.modality, local(), RequestNeeds(), FLEET, None),
        (
            filters.modality,
            local(),
            RequestNeeds(modalities=frozenset({"text", "image"})),
            FLEET,
            "modality:image",
        ),
        (
            filters.modality,
            local(input_modalities=frozenset({"text", "image"})),
            RequestNeeds(modalities=frozenset({"text", "image"})),
            FLEET,
            None,
        ),
        (
            filters.modality,
            local(input_modalities=frozenset({"text", "image"})),
            RequestNeeds(modalities=frozenset({"text", "audio", "image"})),
            FLEET,
            "modality:audio",
        ),
    ],
)
def test_filters(
    flt: Filter, profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot, reason: str | None
) -> None:
    assert flt(profile, needs, fleet) == reason


def test_default_filters_are_every_filter() -> None:
    assert set(filters.DEFAULT_FILTERS) == {
        filters.modality,
        filters.lockout,
        filters.reachable,
        filters.breaker,
        filters.room,
        filters.context_window,
        filters.tools,
    }


def test_static_reasons_come_first() -> None:
    # A candidate that can never carry the request says so even when it is also locked out or has no room:
    # the classifier turns "never" into a 400 and "not now" into a 503.
    static = {filters.modality, filters.context_window, filters.tools}
    first = filters.DEFAULT_FILTERS[: len(static)]
    assert set(first) == static


# --- scorers ----------------------------------------------------------------------------------------------
BUSY = FleetSnapshot(in_flight={BASE.key: 1}, slots={BASE.key: 4})


@pytest.mark.parametrize(
    ("scorer", "profile", "fleet", "score"),
    [
        (scorers.warm, local(warm_state=WarmState.HOT), FleetSnapshot(), 1.0),
        (scorers.warm, local(warm_state=WarmState.WARM), FleetSnapshot(), 0.8),
        (scorers.warm, local(warm_state=WarmState.UNKNOWN), FleetSnapshot(), 0.3),
        (scorers.warm, local(warm_state=WarmState.COLD), FleetSnapshot(), 0.0),
        (scorers.warm, CLOUD, FleetSnapshot(), 1.0),  # cloud is always "loaded"
        (scorers.quality, local(quality_score=0.9), FleetSnapshot(), 0.9),
        (scorers.speed, local(speed_score=0.2), FleetSnapshot(), 0.2),
        (scorers.idle, local(), FleetSnapshot(), 1.0),
        (scorers.idle, local(), BUSY, 0.75),
        (scorers.idle, local(), FleetSnapshot(in_flight={BASE.key: 1}), 0.0),  # no known slots, busy: full
    ],
)
def test_scorers(scorer: Scorer, profile: Profile, fleet: FleetSnapshot, score: float) -> None:
    assert scorer(profile, fleet) == pytest.approx(score)


def test_every_weight_has_a_scorer() -> None:
    assert set(scorers.DEFAULT_WEIGHTS) <= set(scorers.SCORERS)
    assert all(set(w) <= set(scorers.SCORERS) for w in scorers.TIER_WEIGHTS.values())


# --- picker -----------------------------------------------------------------------------------------------
A, B, C = local(key="a"), local(key="b"), local(key="c")


@pytest.mark.parametrize(
    ("scored", "chosen"),
    [
        ([(A, 0.2), (B, 0.9), (C, 0.5)], B),
        ([(C, 0.5), (B, 0.5), (A, 0.1)], B),  # a tie breaks on the key: the same state, the same pick
        ([(A, 0.0)], A),
    ],
)
def test_highest_score(scored: list[tuple[Profile, float]], chosen: Profile) -> None:
    assert pickers.highest_score(scored) is chosen


# --- one cycle --------------------------------------------------------------------------------------------
def test_rank_filters_scores_and_picks() -> None:
    hot = local(key="hot", warm_state=WarmState.HOT, quality_score=0.4)
    cold = local(key="cold", warm_state=WarmState.COLD, quality_score=0.9)
    locked = local(key="locked", lockout_state=LockoutState.CODEX, quality_score=1.0)
    ranking = rank("balanced", [cold, hot, locked], RequestNeeds(), fleet=FLEET)
    assert ranking.chosen is hot and ranking.outcome is RankOutcome.ROUTED
    assert ranking.rejected == {"locked": "lockout:codex"}
    assert set(ranking.scores) == {"hot", "cold"} and all(0.0 <= s <= 1.0 for s in ranking.scores.values())
    assert set(ranking.timings_ms) == {"filter", "score", "pick"}


def test_rank_clamps_scores_and_applies_weights() -> None:
    # A scorer out of range is clamped; only the weighted scorers count.
    wild = local(key="wild", quality_score=7.0)
    ranking = rank("balanced", [wild], RequestNeeds(), weights={"quality": 1.0})
    assert ranking.scores == {"wild": 1.0}


def test_rank_with_nothing_left_is_a_typed_error_that_says_why() -> None:
    with pytest.raises(NoCandidate) as info:
        rank("code", [local(key="x", supports_tools=False)], RequestNeeds(needs_tools=True), fleet=FLEET)
    assert info.value.rejected == {"x": "no_tools"} and info.value.outcome is RankOutcome.NO_CANDIDATE
    assert "no_tools" in str(info.value)


# --- the hooks' selection step ----------------------------------------------------------------------------
def _matrix(*profiles: Profile) -> Matrix:
    return Matrix("1.0", {HOST: Host(HOST, "http://127.0.0.1:1", 24.0, 2, 2)}, {p.key: p for p in profiles})


def test_select_leaves_unknown_deployments_out_and_builds_the_event() -> None:
    warm = local(key="w", warm_state=WarmState.WARM)
    gone = local(key="u", warm_state=WarmState.UNKNOWN)  # its host stopped answering
    selection = select(
        "balanced",
        ["w", "u", "not-in-matrix", None],
        RequestNeeds(),
        matrix=_matrix(warm, gone),
        overlay=LiveOverlay(),
        in_flight={"w": 1},
    )
    assert selection.chosen is warm and selection.outcome is RankOutcome.ROUTED
    event = selection.event_fields()
    assert event["deployment"] == "w" and event["rejected"] == {"u": "host_unreachable"}
    assert event["unknown_deployments"] == ["not-in-matrix", None] and event["candidates"] == 2
    assert event["outcome"] == "routed"


def test_select_with_no_candidate_answers_the_reasons() -> None:
    selection = select(
        "balanced",
        ["x"],
        RequestNeeds(prompt_tokens=10_000),
        matrix=_matrix(local(key="x")),
        overlay=LiveOverlay(),
        in_flight={},
    )
    assert selection.chosen is None and selection.outcome is RankOutcome.NO_CANDIDATE
    assert selection.event_fields()["rejected"] == {"x": "context_window"}


# --- expected time to first token and the pinned order (issue #9) ------------------------------------------
OTHER = "box-10.0.0.2"
SLOTS2 = {"warm-idle": 2, "cold-free": 2, "warm-busy": 2, "cold-full": 2}


@pytest.mark.parametrize(
    ("profile", "fleet", "ttft_s"),
    [
        (local(), FleetSnapshot(), 0.0),  # warm, idle, no prompt
        (local(warm_state=WarmState.HOT), FleetSnapshot(prompt_tokens=1000), 1.0),  # 1000 / (2000 * 0.5)
        (local(warm_state=WarmState.COLD), FleetSnapshot(), 6.0),  # 2 s + 0.4 s/GB * 10 GB, declared
        (local(warm_state=WarmState.COLD), FleetSnapshot(load_s={BASE.key: 30.0}), 30.0),  # observed load
        (local(warm_state=WarmState.UNKNOWN), FleetSnapshot(), 6.0),  # not known resident: a load
        # 3 in flight on 2 slots: 2 ahead of us drain 2 at a time -> one service time of 2 s
        (local(), FleetSnapshot(in_flight={BASE.key: 3}, slots={BASE.key: 2}), 2.0),
        (
            local(),
            FleetSnapshot(in_flight={BASE.key: 3}, slots={BASE.key: 2}, service_s={BASE.key: 5.0}),
            5.0,
        ),
        (local(), FleetSnapshot(in_flight={BASE.key: 1}, slots={BASE.key: 2}), 0.0),  # a free slot
        (CLOUD, FleetSnapshot(), scorers.CLOUD_FIRST_TOKEN_S),
        # listed resident by /api/ps but still loading (a pick of ours started it 2 s ago, 4 s left)
        (local(), FleetSnapshot(loading_s={BASE.key: 4.0}), 4.0),
        (
            local(),
            FleetSnapshot(in_flight={BASE.key: 3}, slots={BASE.key: 2}, loading_s={BASE.key: 4.0}),
            6.0,
        ),
        # not listed yet, a load under way: what is left of it, not a whole second load
        (local(warm_state=WarmState.COLD), FleetSnapshot(loading_s={BASE.key: 1.5}), 1.5),
        # ... and once that load is overdue and the copy still not listed: a whole load again
        (local(warm_state=WarmState.COLD), FleetSnapshot(loading_s={BASE.key: 0.0}), 6.0),
    ],
)
def test_estimated_ttft(profile: Profile, fleet: FleetSnapshot, ttft_s: float) -> None:
    assert scorers.estimated_ttft_s(profile, fleet) == pytest.approx(ttft_s)
    assert scorers.ttft(profile, fleet) == pytest.approx(2.0 / (2.0 + ttft_s))


FULL = "box-10.0.0.3"
# a host whose free memory is taken by one idle model that saw some use: evicting it frees enough, for a price
VICTIM = usability.Resident("victim", 10.0, charge_s=3.0)
PINNED_ROOMS = {
    HOST: HostRoom(free_gb=4.0, model_slots=1),
    OTHER: HostRoom(free_gb=40.0, model_slots=2),
    FULL: HostRoom(free_gb=4.0, model_slots=0, resident=(VICTIM,)),
}


def _pinned(busy: int) -> Ranking:
    """Four candidates of equal quality: warm and idle; cold on a host with free memory; warm with ``busy``
    in flight on 2 slots; cold on a host whose memory is taken (it needs an eviction)."""
    candidates = [
        local(key="warm-idle"),
        local(key="cold-free", warm_state=WarmState.COLD, host_id=OTHER),
        local(key="warm-busy"),
        local(key="cold-full", warm_state=WarmState.COLD, host_id=FULL),
    ]
    fleet = FleetSnapshot(in_flight={"warm-idle": 0, "warm-busy": busy}, slots=SLOTS2, rooms=PINNED_ROOMS)
    return rank("balanced", candidates, RequestNeeds(), fleet=fleet, weights=scorers.TIER_WEIGHTS["R"])


@pytest.mark.parametrize("busy", [2, 4, 6, 7, 8, 12, 20])
def test_the_pinned_order(busy: int) -> None:
    """warm and idle > cold on a host with free memory > warm but saturated (until its wait exceeds the
    load elsewhere) > a load that needs an eviction (until the saturated wait exceeds that load, the unload
    and the evicted model's charge)."""
    ranking = _pinned(busy)
    s = ranking.scores
    assert ranking.chosen.key == "warm-idle" and ranking.rejected == {}
    assert s["warm-idle"] > s["cold-free"] > s["cold-full"]  # an eviction always ranks below a free load
    wait_s = max(0, busy - 2 + 1) * scorers.DEFAULT_SERVICE_S / 2
    load_s = scorers.load_estimate_s(local())  # 6 s for the 10 GB model
    evict_s = load_s + eviction.UNLOAD_S + VICTIM.charge_s  # 6 + 1.5 + 3 = 10.5 s
    assert (s["warm-busy"] > s["cold-free"]) is (wait_s < load_s)
    assert (s["warm-busy"] > s["cold-full"]) is (wait_s < evict_s)
    if load_s < wait_s < evict_s:  # busy 8: the whole pinned order
        assert s["warm-idle"] > s["cold-free"] > s["warm-busy"] > s["cold-full"]
    without_idle = rank(
        "balanced",
        [local(key="cold-free", warm_state=WarmState.COLD, host_id=OTHER), local(key="warm-busy")],
        RequestNeeds(),
        fleet=FleetSnapshot(in_flight={"warm-busy": busy}, slots=SLOTS2, rooms=PINNED_ROOMS),
        weights=scorers.TIER_WEIGHTS["R"],
    )
    assert without_idle.chosen.key == ("warm-busy" if wait_s < load_s else "cold-free")
    only_eviction = rank(
        "balanced",
        [local(key="warm-busy"), local(key="cold-full", warm_state=WarmState.COLD, host_id=FULL)],
        RequestNeeds(),
        fleet=FleetSnapshot(in_flight={"warm-busy": busy}, slots=SLOTS2, rooms=PINNED_ROOMS),
        weights=scorers.TIER_WEIGHTS["R"],
    )
    assert only_eviction.chosen.key == ("warm-busy" if wait_s < evict_s else "cold-full")
    # the event's TTFT of an eviction pick is its own (load + unload), the charge is the others'
    if only_eviction.chosen.key == "cold-full":
        assert only_eviction.ttft_s["cold-full"] == pytest.approx(load_s + eviction.UNLOAD_S)


@pytest.mark.parametrize(
    ("victim_keep", "reason"),
    [
        (None, None),  # idle: evicted
        (eviction.Keep.BUSY, "no_room"),  # requests in flight: never evicted, nothing else frees enough
        (eviction.Keep.HOT, "no_room"),
        (eviction.Keep.LOADED_RECENTLY, "no_room"),
        (eviction.Keep.EVICTED_RECENTLY, "no_room"),
        (eviction.Keep.RESERVED, "no_room"),
    ],
)
def test_the_room_filter_evicts_only_what_may_go(
    victim_keep: eviction.Keep | None, reason: str | None
) -> None:
    victim = dataclasses.replace(VICTIM, keep=victim_keep)
    fleet = FleetSnapshot(rooms={FULL: HostRoom(4.0, 0, (victim,))})
    cold = local(warm_state=WarmState.COLD, host_id=FULL)
    assert filters.room(cold, RequestNeeds(), fleet) == reason
    assert (fleet.placement(cold) == usability.Placement((victim,))) is (reason is None)


def test_a_resident_model_being_evicted_takes_no_work() -> None:
    fleet = FleetSnapshot(rooms={HOST: HostRoom(4.0, 0, evicting=frozenset({"base"}))})
    assert filters.room(local(), RequestNeeds(), fleet) == "evicting"
    assert filters.room(local(model="other"), RequestNeeds(), fleet) is None


# --- evictions through the hooks' selection step: busy models, hysteresis, the price ----------------------
def _evict_matrix(*profiles: Profile) -> Matrix:
    # 16 GB, two models at most: two 10 GB models never fit together
    host = Host(FULL, "http://127.0.0.1:1", 16.0, 2, 2)
    return Matrix("1.0", {FULL: host}, {p.key: p for p in profiles})


def _evict_overlay(resident: str | None, since: float | None, now: float) -> LiveOverlay:
    models = (
        {}
        if resident is None
        else {f"{resident}:latest": ResidentModel(f"{resident}:latest", 10.0, now + 300, since)}
    )
    return LiveOverlay(
        memory={FULL: HostMemory(16.0, 10.0 if resident else 0.0, MemorySource.OLLAMA_PS)},
        resident={FULL: models},
        observed_gb={(FULL, "a"): 10.0, (FULL, "b"): 10.0},
    )


def _ab(resident: str) -> tuple[Profile, Profile]:
    state = {m: WarmState.WARM if m == resident else WarmState.COLD for m in ("a", "b")}
    return (
        local(key="a", model="a", host_id=FULL, lane="fast-chat", warm_state=state["a"]),
        local(key="b", model="b", host_id=FULL, warm_state=state["b"]),
    )


def test_busy_models_are_never_evicted() -> None:
    a, b = _ab(resident="a")
    for in_flight, chosen in (({"a": 1}, None), ({"a": 0}, "b")):
        selection = select(
            "balanced",
            ["b"],
            RequestNeeds(),
            matrix=_evict_matrix(a, b),
            overlay=_evict_overlay("a", None, NOW),
            in_flight=in_flight,
            now=NOW,
        )
        assert (selection.chosen.key if selection.chosen else None) == chosen
        if chosen is None:
            assert selection.rejected == {"b": "no_room"}
        else:
            assert selection.placement is not None and [v.model for v in selection.placement.victims] == ["a"]
            event = selection.event_fields()
            assert event["eviction"]["victims"][0]["model"] == "a" and event["eviction"]["freed_gb"] == 10.0


def test_hysteresis_two_models_do_not_thrash_on_one_host() -> None:
    """b evicts a at t0; a request for a then finds b protected: loaded under 60 s ago, then for 300 s
    the model that evicted a; only after both may a push b out."""
    log = eviction.EvictionLog()
    a, b = _ab(resident="a")
    first = select(
        "balanced", ["b"], RequestNeeds(), matrix=_evict_matrix(a, b), overlay=_evict_overlay("a", None, NOW),
        in_flight={}, now=NOW, evicted_at=log.evicted_at,
    )  # fmt: skip
    assert first.chosen is not None and first.placement is not None and first.placement.victims
    log.record(FULL, "b", NOW)  # the hooks record an eviction once its reservation is granted
    a, b = _ab(resident="b")
    loaded_at = NOW + 2  # the next poll lists b
    for t, chosen in ((NOW + 30, None), (NOW + 100, None), (NOW + 299, None), (NOW + 301, "a")):
        again = select(
            "fast-chat", ["a"], RequestNeeds(), matrix=_evict_matrix(a, b),
            overlay=_evict_overlay("b", loaded_at, t), in_flight={}, now=t, evicted_at=log.evicted_at,
        )  # fmt: skip
        assert (again.chosen.key if again.chosen else None) == chosen, t
    room = snapshot(_evict_matrix(a, b), _evict_overlay("b", loaded_at, NOW + 30), ["a"], {}, now=NOW + 30,
                    evicted_at=log.evicted_at).rooms  # fmt: skip
    assert room is not None and room[FULL].resident[0].keep is eviction.Keep.LOADED_RECENTLY
    room = snapshot(_evict_matrix(a, b), _evict_overlay("b", loaded_at, NOW + 100), ["a"], {}, now=NOW + 100,
                    evicted_at=log.evicted_at).rooms  # fmt: skip
    assert room is not None and room[FULL].resident[0].keep is eviction.Keep.EVICTED_RECENTLY


def test_the_eviction_charge_steers_to_the_less_used_victim() -> None:
    """Two hosts, each must evict an idle 10 GB model to load b: the one whose victim was asked for
    recently costs a likely reload; the ranker evicts the idle-for-long one."""
    other = "box-10.0.0.4"
    host = Host(FULL, "http://127.0.0.1:1", 16.0, 2, 2)
    matrix = Matrix(
        "1.0",
        {FULL: host, other: dataclasses.replace(host, host_id=other)},
        {
            p.key: p
            for p in (
                local(key="a1", model="a", host_id=FULL, warm_state=WarmState.WARM),
                local(key="b1", model="b", host_id=FULL, warm_state=WarmState.COLD),
                local(key="a2", model="a", host_id=other, warm_state=WarmState.WARM),
                local(key="b2", model="b", host_id=other, warm_state=WarmState.COLD),
            )
        },
    )
    loaded = {h: {"a:latest": ResidentModel("a:latest", 10.0, NOW + 300, None)} for h in (FULL, other)}
    overlay = LiveOverlay(
        memory={h: HostMemory(16.0, 10.0, MemorySource.OLLAMA_PS) for h in (FULL, other)},
        resident=loaded,
        observed_gb={(h, m): 10.0 for h in (FULL, other) for m in ("a", "b")},
    )
    use = eviction.RecentUse()
    for i in range(20):  # a on FULL served 20 requests in the last minute
        use.record(FULL, "a", NOW - 60 + 3 * i)
    selection = select(
        "balanced", ["b1", "b2"], RequestNeeds(), matrix=matrix, overlay=overlay, in_flight={}, now=NOW,
        use=use,
    )  # fmt: skip
    assert selection.chosen is not None and selection.chosen.key == "b2"
    terms = selection.event_fields()
    assert terms["eviction"]["charge_s"] == 0.0  # nobody asked for a on the other host
    assert selection.ranking is not None and selection.ranking.scores["b1"] < selection.ranking.scores["b2"]


def test_quality_leans_by_tier() -> None:
    """A warm 7B (quality 0.5) against an idle warm 32B (quality 0.9) that is slower to first token on a long
    prompt: H takes the 32B, R the 7B."""
    small = local(key="small", speed_score=0.9, quality_score=0.5)
    big = local(key="big", speed_score=0.2, quality_score=0.9)
    fleet = FleetSnapshot(prompt_tokens=2000, slots={"small": 2, "big": 2})
    pick = {
        t: rank("b", [small, big], RequestNeeds(), fleet=fleet, weights=w).chosen.key
        for t, w in scorers.TIER_WEIGHTS.items()
    }
    assert pick["H"] == "big" and pick["R"] == "small"


def test_ranking_carries_terms_and_the_estimated_ttft() -> None:
    ranking = rank(
        "b", [local(key="a")], RequestNeeds(), fleet=FleetSnapshot(), weights={"ttft": 1.0, "quality": 1.0}
    )
    assert ranking.terms == {"a": {"ttft": 1.0, "quality": 0.5}} and ranking.ttft_s == {"a": 0.0}


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("H:ttft=0.4,quality=0.6", True),
        ("R:idle=1", True),
        ("X:ttft=1", False),
        ("H:fast=1", False),
        ("H:ttft=-1", False),
    ],
)
def test_parse_tier_weights(text: str, ok: bool) -> None:
    if ok:
        table = scorers.parse_tier_weights(text)
        assert set(table) == {"H", "R", "C"}
    else:
        with pytest.raises(ValueError, match="ranker weights"):
            scorers.parse_tier_weights(text)


@pytest.mark.parametrize(
    ("samples", "service", "load"),
    [
        ([(2.0, 9.0, True)], None, 9.0),  # a cold call teaches its load, not a service time (mostly load)
        ([(2.0, 9.0, True), (4.0, 1.0, False)], 4.0, 9.0),  # warm TTFTs do not teach load times
        ([(2.0, 9.0, False), (3.0, 1.0, False)], 2.3, None),  # the first sample as it is, then blended
        ([(2.0, None, False), (float("nan"), -1.0, True)], 2.0, None),  # bad samples ignored
    ],
)
def test_observed_times(
    samples: list[tuple[float, float | None, bool]], service: float | None, load: float | None
) -> None:
    observed = ObservedTimes(alpha=0.3)
    for service_s, ttft_s, cold in samples:
        observed.record("k", service_s=service_s, ttft_s=ttft_s, was_cold=cold)
    assert observed.service_s.get("k") == (None if service is None else pytest.approx(service))
    assert observed.load_s.get("k") == (None if load is None else pytest.approx(load))
    fleet = FleetSnapshot(service_s=observed.service_s, load_s=observed.load_s)
    cold_profile = local(key="k", warm_state=WarmState.COLD)
    expected = load if load is not None else scorers.load_estimate_s(cold_profile)
    assert scorers.estimated_ttft_s(cold_profile, fleet) == pytest.approx(expected)


def test_a_cold_call_s_load_is_ollama_s_load_duration_when_it_has_one() -> None:
    """An answer not streamed has its TTFT at its end (the whole call): Ollama's load_duration is the load."""
    observed = ObservedTimes(alpha=0.3)
    observed.record("k", service_s=30.0, ttft_s=30.0, was_cold=True, load_s=8.0)
    assert observed.load_s == {"k": 8.0} and "k" not in observed.service_s
    observed.record("k", service_s=None, ttft_s=None, was_cold=True, load_s=None)  # no load, no sample
    assert observed.load_s == {"k": 8.0}
    observed.record("k", service_s=None, ttft_s=10.0, was_cold=True)  # a stream: its first chunk's time
    assert observed.load_s == {"k": pytest.approx(8.6)}


def test_a_deployment_never_observed_takes_its_model_s_service_time_from_its_peers() -> None:
    """Service x speed is the model's work on any host: a 32B coder seen taking 10 s at speed 0.5 is priced
    at 5 s on a peer at speed 1.0 (not the flat 2 s prior); a peer's own first sample replaces that; a
    deployment with its own samples is never overwritten by its peers'; other models are not touched."""
    observed = ObservedTimes(alpha=0.5)
    peers = {"a": 0.5, "b": 1.0, "c": 0.25}
    observed.record("a", service_s=10.0, ttft_s=None, was_cold=False, model="coder", peers=peers)
    assert observed.service_s == {"a": 10.0, "b": 5.0, "c": 20.0}
    observed.record("b", service_s=3.0, ttft_s=None, was_cold=False, model="coder", peers=peers)
    # b's own sample replaces the prior (not blended with it); the model's work: 5 + 0.5 * (3 - 5) = 4
    assert observed.service_s["b"] == 3.0 and observed.model_work["coder"] == pytest.approx(4.0)
    assert observed.service_s["a"] == 10.0 and observed.service_s["c"] == pytest.approx(16.0)
    observed.record("x", service_s=1.0, ttft_s=None, was_cold=False, model="chat", peers={"x": 1.0})
    assert observed.service_s["c"] == pytest.approx(16.0)
    # a cold call's duration is mostly its load: no service time, for itself or its peers
    observed.record("c", service_s=62.0, ttft_s=60.0, was_cold=True, model="coder", peers=peers)
    assert "c" not in observed.own_service and observed.service_s["c"] == pytest.approx(16.0)
    # a bad sample teaches nothing, not even to its peers
    observed.record("c", service_s=float("nan"), ttft_s=None, was_cold=False, model="coder", peers=peers)
    assert "c" not in observed.own_service and observed.service_s["c"] == pytest.approx(16.0)


@pytest.mark.parametrize(
    ("samples", "per_token"),
    [
        ([(1000, 0.5, False)], 0.0005),  # Ollama's prompt_eval_duration over the tokens it evaluated
        ([(1000, 0.5, True)], 0.0005),  # a cold call's too: Ollama times the prompt apart from the load
        ([(1000, 0.5, False), (1000, 0.25, False)], 0.000425),  # blended as service times are (alpha 0.3)
        ([(64, 0.032, False)], 0.0005),  # the fewest tokens that teach
        ([(63, 0.0063, False)], None),  # fewer: its fixed costs, not the rate
        ([(1000, 0.0, False), (1000, float("nan"), False), (1000, -1.0, False)], None),  # no time, bad times
        ([], None),
    ],
)
def test_the_prompt_s_seconds_per_token_are_learnt_from_ollama_s_timings(
    samples: list[tuple[int, float, bool]], per_token: float | None
) -> None:
    observed = ObservedTimes(alpha=0.3)
    for tokens, seconds, cold in samples:
        observed.record("k", service_s=3.0, ttft_s=9.0, was_cold=cold, prompt=(tokens, seconds))
    assert observed.prompt_s_per_token.get("k") == (None if per_token is None else pytest.approx(per_token))
    fleet = FleetSnapshot(prompt_s_per_token=observed.prompt_s_per_token, prompt_tokens=6000)
    warm = local(key="k", warm_state=WarmState.WARM, speed_score=0.5)
    # idle and warm: the prompt alone, at the observed pace, else at the prior (2000 tok/s x speed_score)
    expected = 6000 * per_token if per_token is not None else 6000 / (scorers.PROMPT_TOKENS_PER_S * 0.5)
    assert scorers.estimated_ttft_s(warm, fleet) == pytest.approx(expected)


def test_a_cloud_profile_s_prompt_is_priced_at_the_prior_whatever_was_observed() -> None:
    fleet = FleetSnapshot(prompt_s_per_token={CLOUD.key: 1.0}, prompt_tokens=2000)
    prior = 2000 / (scorers.PROMPT_TOKENS_PER_S * max(CLOUD.speed_score, 0.05))
    assert scorers.estimated_ttft_s(CLOUD, fleet) == pytest.approx(scorers.CLOUD_FIRST_TOKEN_S + prior)


@pytest.mark.parametrize(
    ("events", "at", "left"),
    [
        ([("start", 100.0, 10.0)], 104.0, {"k": 6.0}),
        ([("start", 100.0, 10.0), ("start", 103.0, 10.0)], 104.0, {"k": 6.0}),  # a second pick: same load
        ([("start", 100.0, 10.0)], 112.0, {"k": 0.0}),  # overdue: due any moment
        ([("start", 100.0, 10.0)], 121.0, {}),  # past twice its time: forgotten
        ([("start", 100.0, 10.0), ("answered", 0.0, 0.0)], 104.0, {}),  # it answered: loaded
        ([("start", 100.0, 10.0), ("failed", 0.0, 0.0)], 104.0, {}),
        ([("start", 100.0, float("nan")), ("start", 100.0, 0.0)], 104.0, {}),  # no expected time, no load
        ([("start", 100.0, 10.0)], 40.0, {"k": 10.0}),  # the clock stepped back: never more than the load
    ],
)
def test_loads_in_progress(events: list[tuple[str, float, float]], at: float, left: dict[str, float]) -> None:
    observed = ObservedTimes()
    for kind, when, expected in events:
        if kind == "start":
            observed.started_load("k", when, expected)
        elif kind == "answered":
            observed.record("k", service_s=1.0, ttft_s=9.0, was_cold=True)
        else:
            observed.load_ended("k")
    assert observed.loading_s(at) == pytest.approx(left)
    assert observed.loading_s(None) == {}


def test_a_burst_does_not_herd_onto_a_copy_that_is_still_loading() -> None:
    """The first of a burst picked the cold copy on ``slow``, which /api/ps then lists while it loads: the
    next request weighs what is left of that load (8 s) and takes the copy on ``fast``, whose load (6 s)
    is shorter, where without the load in progress it would join the loading copy as if it were ready."""
    slow = local(key="slow", host_id=OTHER, api_base="http://10.0.0.2:11434")
    fast = local(key="fast", warm_state=WarmState.COLD)
    hosts = {h: Host(h, "http://127.0.0.1:1", 48.0, 2, 2) for h in (BASE.host_id, OTHER)}
    matrix = Matrix("1.0", hosts, {p.key: p for p in (slow, fast)})
    overlay = LiveOverlay(
        memory={h: HostMemory(48.0, 10.0, MemorySource.OLLAMA_PS) for h in hosts},
        resident={OTHER: {"base:latest": ResidentModel("base:latest", 10.0, None, None)}},
    )
    observed = ObservedTimes()
    common: dict[str, Any] = dict(matrix=matrix, overlay=overlay, in_flight={"slow": 1}, now=NOW)
    before = select("g", ["slow", "fast"], RequestNeeds(), observed=observed, **common)
    assert before.chosen is not None and before.chosen.key == "slow"  # looks warm with a free slot
    observed.started_load("slow", NOW - 2.0, 10.0)
    after = select("g", ["slow", "fast"], RequestNeeds(), observed=observed, **common)
    assert after.chosen is not None and after.chosen.key == "fast"
    assert after.ranking is not None and after.ranking.ttft_s["fast"] == pytest.approx(6.0)
    plain = _select_plain(
        "g", ["slow", "fast"], RequestNeeds(), observed=observed, reserved=None,
        weights=scorers.DEFAULT_WEIGHTS, breakers=None, rules=EvictionRules(), evicted_at=None, use=None,
        **common,
    )  # fmt: skip
    assert plain.chosen is not None and plain.chosen.key == "fast"


# --- the compiled cycle the hooks run answers exactly as the readable one ----------------------------------
def _random_case(rng: random.Random) -> dict[str, Any]:
    hosts = {
        f"h{h}": Host(f"h{h}", "http://127.0.0.1:1", float(rng.choice((16, 24, 48))), rng.randint(1, 4),
                      rng.randint(1, 4), gpu_overhead_gb=rng.choice((0.0, 0.0, 1.0)))
        for h in range(rng.randint(1, 6))
    }  # fmt: skip
    profiles: dict[str, Profile] = {}
    for i in range(rng.randint(1, 30)):
        cloud = rng.random() < 0.15
        host_id = (
            "cloud" if cloud else rng.choice([*hosts, "undeclared"] if rng.random() < 0.05 else list(hosts))
        )
        model = f"m{rng.randint(0, 6)}"
        key = f"{host_id}/{'openai' if cloud else 'ollama'}/{model}#{i}"
        profiles[key] = local(
            key=key,
            host_id=host_id,
            model=model,
            provider=Provider.OPENAI if cloud else Provider.OLLAMA,
            hardware_class=HardwareClass.CLOUD_GPU if cloud else HardwareClass.LOCAL_GPU,
            warm_state=rng.choice(
                [WarmState.COLD] * 3 + [WarmState.WARM] * 3 + [WarmState.HOT, WarmState.UNKNOWN]
            ),
            lockout_state=rng.choice([LockoutState.NONE] * 8 + list(LockoutState)),
            supports_tools=rng.random() < 0.8,
            input_modalities=rng.choice((frozenset({"text"}), IMAGE)),
            context_window=rng.choice((4096, 8192, 32768)),
            vram_gb=rng.choice((4.0, 6.5, 10.0, 19.0, 21.0)),
            speed_score=rng.random(),
            quality_score=rng.random(),
            num_parallel=rng.choice((None, None, 1, 2, 4)),
        )
    matrix = Matrix("1.0", hosts, profiles)
    now = NOW + rng.random() * 100
    resident: dict[str, dict[str, ResidentModel]] = {}
    observed: dict[tuple[str, str], float] = {}
    for p in profiles.values():
        if rng.random() < 0.5:
            observed[(p.host_id, p.model)] = rng.choice((3.0, 7.0, 12.0, 30.0))
        if p.is_local and p.warm_state in (WarmState.WARM, WarmState.HOT):
            name = f"{p.model}:latest"
            resident.setdefault(p.host_id, {})[name] = ResidentModel(
                name,
                5.0,
                rng.choice((None, now + rng.random() * 300)),
                rng.choice((None, now - rng.random() * 200)),
            )
    overlay = LiveOverlay(
        memory={h: HostMemory(host.gpu_memory_gb, rng.choice((rng.random(), 0.95)) * host.gpu_memory_gb,
                              MemorySource.OLLAMA_PS) for h, host in hosts.items() if rng.random() < 0.8},
        resident=resident,
        observed_gb=observed,
    )  # fmt: skip
    models = sorted({p.model for p in profiles.values()})
    reserved: dict[str, HostLedger] = {}
    for h in hosts:
        if rng.random() < 0.4:
            leases = [
                Lease(f"l{j}", h, rng.choice(models), rng.choice((4.0, 8.0)), now + 60,
                      tuple((m, 5.0) for m in rng.sample(models, rng.randint(0, min(2, len(models))))))
                for j in range(rng.randint(1, 3))
            ]  # fmt: skip
            reserved[h] = HostLedger.of(leases, {n.removesuffix(":latest") for n in resident.get(h, {})})
    keys = list(profiles)
    rng.shuffle(keys)
    use = eviction.RecentUse()
    for p in profiles.values():
        for _ in range(rng.randint(0, 3)):
            use.record(p.host_id, p.model, now - rng.random() * 100)
    observed_times = ObservedTimes()
    for key in keys:
        if rng.random() < 0.5:
            model = profiles[key].model
            peers = {k: p.speed_score for k, p in profiles.items() if p.model == model}
            spread = rng.random() < 0.5  # service times spread to peers never observed, or not
            observed_times.record(
                key,
                service_s=rng.random() * 5,
                ttft_s=rng.random() * 20,
                was_cold=True,
                model=model if spread else None,
                peers=peers if spread else None,
            )
        if rng.random() < 0.4:  # a prompt rate seen (some too short to teach one)
            observed_times.record(
                key,
                service_s=None,
                ttft_s=None,
                was_cold=False,
                prompt=(rng.choice((10, 500, 4000)), rng.random() * 3),
            )
        if rng.random() < 0.2:  # a load a pick started (some overdue, some forgotten)
            observed_times.started_load(key, now - rng.random() * 30, rng.choice((4.0, 10.0, 20.0)))
    scorer_names = ["ttft", "quality", "speed", "warm", "idle"]
    weights = (
        dict(scorers.TIER_WEIGHTS[rng.choice("HRC")])
        if rng.random() < 0.6
        else {n: rng.random() for n in rng.sample(scorer_names, rng.randint(1, 5))}
    )
    return {
        "group": "g",
        "deployment_keys": keys[: rng.randint(1, len(keys))] + ([None, "nope"] if rng.random() < 0.1 else []),
        "needs": RequestNeeds(
            prompt_tokens=rng.choice((0, 100, 3000, 9000)),
            max_output_tokens=rng.choice((0, 256)),
            needs_tools=rng.random() < 0.2,
            modalities=rng.choice((frozenset({"text"}), IMAGE)),
        ),
        "matrix": matrix,
        "overlay": overlay,
        "in_flight": {k: rng.randint(0, 5) for k in keys if rng.random() < 0.3},
        "reserved": reserved or None,
        "weights": weights,
        "observed": observed_times,
        "breakers": {k: "breaker_open" for k in keys if rng.random() < 0.1},
        "now": now,
        "rules": rng.choice(
            (EvictionRules(), EvictionRules(enabled=False), EvictionRules(min_residency_s=5))
        ),
        "evicted_at": {
            (p.host_id, p.model): now - rng.random() * 400 for p in profiles.values() if rng.random() < 0.2
        },
        "use": use,
    }


def test_the_compiled_cycle_answers_as_rank_does() -> None:
    """select() runs the compiled cycle (torchrouter_core/ranker/compiled.py); on 600 random fleets and
    requests it picks, scores, rejects and places exactly as rank() over the snapshot does."""
    rng = random.Random(2024)
    picked = evicting = 0
    for case_no in range(600):
        case = _random_case(rng)
        fast = select(**case)
        plain = _select_plain(**case)
        where = f"case {case_no}"
        assert (fast.outcome, fast.reason, fast.unknown, fast.candidates) == (
            plain.outcome,
            plain.reason,
            plain.unknown,
            plain.candidates,
        ), where
        assert dict(fast.rejected_now()) == dict(plain.rejected_now()), where
        if plain.ranking is None:
            assert fast.ranking is None, where
            continue
        assert fast.ranking is not None and fast.chosen is plain.chosen, where
        assert fast.ranking.scores == plain.ranking.scores and fast.ranking.terms == plain.ranking.terms, (
            where
        )
        assert fast.ranking.score_list == plain.ranking.score_list, where  # to the last bit, not rounded
        assert fast.ranking.ttft_s == plain.ranking.ttft_s and fast.placement == plain.placement, where
        assert fast.event_fields() | {"score_ms": 0} == plain.event_fields() | {"score_ms": 0}, where
        picked += 1
        fleet = snapshot(
            case["matrix"], case["overlay"], [], case["in_flight"], case["reserved"], now=case["now"],
            rules=case["rules"], evicted_at=case["evicted_at"], use=case["use"],
        )  # fmt: skip
        evicting += any(fleet.placement(case["matrix"].profiles[k]) not in (None, usability.FITS)
                        for k in fast.ranking.keys)  # fmt: skip
    assert picked > 300 and evicting > 20  # the cases reach picks and scored evictions, not only rejections
