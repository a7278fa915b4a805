"""Evictions as the last resort (issue #9), piece by piece and table-driven: who must stay and why, what an
eviction costs, Ollama's unload order, the fit rule that walks it (``place``), the rooms it reads
(``host_rooms``) and what one placement leaves for the next (``after``). Pure: no LiteLLM, no HTTP."""

from __future__ import annotations

import dataclasses
import math
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
from capability_matrix.live import HostObservation, LoadedModel, next_since, observed_sizes
from torchrouter_core.eviction import (
    EvictionLog,
    EvictionRules,
    Keep,
    RecentUse,
    eviction_charge_s,
    keep_reason,
    parse_eviction_rules,
)
from torchrouter_core.ledger import HostLedger, Lease
from torchrouter_core.memory import OLLAMA_MIN_MEMORY_GB, claim_gb
from torchrouter_core.usability import (
    FITS,
    HostRoom,
    Placement,
    Resident,
    ResidentInfo,
    after,
    host_rooms,
    place,
)

NOW = 1_000_000.0
HOST = "box-10.0.0.1"
GIB = 1 << 30


# --- who must stay -----------------------------------------------------------------------------------------
def _keep(**changes: Any) -> Keep | None:
    base: dict[str, Any] = dict(
        busy=False, evicting=False, reserved=False, hot=False, since=None, evicted_at=None, now=NOW
    )
    return keep_reason(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),  # idle, loaded before anyone watched, never evicted anything: may go
        ({"busy": True}, Keep.BUSY),  # requests in flight: never
        ({"evicting": True, "busy": True}, Keep.EVICTING),  # already going: counted once
        ({"reserved": True}, Keep.RESERVED),  # its own load's lease is live (or settling)
        ({"hot": True}, Keep.HOT),
        ({"since": NOW - 59.0}, Keep.LOADED_RECENTLY),  # listed 59 s ago: under the 60 s minimum
        ({"since": NOW - 60.0}, None),
        ({"evicted_at": NOW - 299.0}, Keep.EVICTED_RECENTLY),  # it evicted another 299 s ago
        ({"evicted_at": NOW - 300.0}, None),
        ({"since": NOW - 1.0, "evicted_at": NOW - 1.0, "now": None}, None),  # no clock: no time rules
        ({"busy": True, "hot": True, "since": NOW - 1.0}, Keep.BUSY),  # the first reason in order wins
    ],
)
def test_keep_reason(changes: dict[str, Any], expected: Keep | None) -> None:
    assert _keep(**changes) == expected


def test_keep_reason_reads_the_rules_numbers() -> None:
    rules = EvictionRules(min_residency_s=5.0, hold_s=10.0)
    assert _keep(since=NOW - 6.0, rules=rules) is None
    assert _keep(evicted_at=NOW - 9.0, rules=rules) is Keep.EVICTED_RECENTLY


# --- what an eviction costs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate", "reload_s", "expires_in", "charge"),
    [
        (0.0, 10.0, 300.0, 0.0),  # nobody asked for it: free to evict
        (1.0, 0.0, 300.0, 0.0),
        (1.0, 10.0, 300.0, 10.0 * (1 - math.exp(-300.0))),  # in steady use: about a reload
        (0.01, 10.0, 100.0, 10.0 * (1 - math.exp(-1.0))),  # one request per 100 s, 100 s of keep-alive left
        (0.01, 10.0, None, 10.0 * (1 - math.exp(-3.0))),  # never unloads: the 300 s horizon
        (0.01, 10.0, 9999.0, 10.0 * (1 - math.exp(-3.0))),  # clamped to the horizon
        (0.01, 10.0, -5.0, 0.0),  # its keep-alive already ran out: it goes anyway
    ],
)
def test_eviction_charge(rate: float, reload_s: float, expires_in: float | None, charge: float) -> None:
    assert eviction_charge_s(rate, reload_s, expires_in) == pytest.approx(charge)


def test_recent_use_counts_decay_and_the_eviction_log_forgets() -> None:
    use = RecentUse(window_s=100.0)
    assert use.rate("h", "m", NOW) == 0.0
    for i in range(10):
        use.record("h", "m", NOW + i)
    assert use.rate("h", "m", NOW + 9) == pytest.approx(sum(math.exp(-k / 100) for k in range(10)) / 100)
    assert use.rate("h", "m", NOW + 109) == pytest.approx(use.rate("h", "m", NOW + 9) * math.exp(-1.0))
    assert use.rate("h", "other", NOW) == 0.0
    log = EvictionLog(hold_s=10.0)
    log.record("h", "a", NOW)
    log.record("h", "b", NOW + 11)  # a's entry is older than the hold: dropped
    assert log.evicted_at == {("h", "b"): NOW + 11}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", EvictionRules()),
        ("off", EvictionRules(enabled=False)),
        ("min_residency_s=5, hold_s=30", EvictionRules(min_residency_s=5.0, hold_s=30.0)),
        ("unload_s=0", EvictionRules(unload_s=0.0)),
        ("hold_s=-1", None),
        ("hold=30", None),
        ("hold_s", None),
    ],
)
def test_parse_eviction_rules(text: str, expected: EvictionRules | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="eviction rule"):
            parse_eviction_rules(text)
    else:
        assert parse_eviction_rules(text) == expected


# --- the fit rule: free memory first, then Ollama's unload order ------------------------------------------
A, B, C = Resident("a", 8.0), Resident("b", 6.0), Resident("c", 10.0)


@pytest.mark.parametrize(
    ("claim", "room", "model", "expected"),
    [
        (4.0, HostRoom(4.0, 1), "x", FITS),  # exactly fits free memory and a slot
        (4.0, HostRoom(3.9, 1, (A,)), "x", Placement((A,))),  # 0.1 GB short: evict the first idle one
        (4.0, HostRoom(4.0, 0, (A, B)), "x", Placement((A,))),  # memory fine, no model slot: evict one
        (12.0, HostRoom(0.0, 0, (A, B)), "x", Placement((A, B))),  # both, in order
        (15.0, HostRoom(0.0, 0, (A, B)), "x", None),  # even both free only 14 GB
        (99.0, HostRoom(0.0, 0, (A,), pending=frozenset({"x"})), "x", FITS),  # its load is reserved already
        # busy ones are walked past, never taken (Ollama never unloads a runner with requests in flight)
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.BUSY), B)), "x", Placement((B,))),
        (9.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.BUSY), B)), "x", None),
        # one already going for another load is walked past too: its memory is counted once, for that load
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.EVICTING), B)), "x", Placement((B,))),
        # an idle model that must stay stops the plan: Ollama would unload it next, so nothing is planned
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.HOT), B)), "x", None),
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.LOADED_RECENTLY), B)), "x", None),
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.EVICTED_RECENTLY), B)), "x", None),
        (6.0, HostRoom(0.0, 0, (dataclasses.replace(A, keep=Keep.RESERVED), B)), "x", None),
        # ... but one that must stay after the point where the load fits does not matter
        (8.0, HostRoom(0.0, 0, (A, dataclasses.replace(C, keep=Keep.HOT))), "x", Placement((A,))),
        (1.0, None, "x", None),  # an undeclared host
    ],
)
def test_place(claim: float, room: HostRoom | None, model: str, expected: Placement | None) -> None:
    assert place(claim, room, model) == expected


def test_placement_sums_and_after() -> None:
    a, b = Resident("a", 8.0, charge_s=2.0), Resident("b", 6.0, charge_s=0.5)
    placement = Placement((a, b))
    assert (placement.freed_gb, placement.charge_s) == (14.0, 2.5)
    room = HostRoom(1.0, 0, (a, b, C))
    left = after(room, 12.0, placement, "x")
    assert left == HostRoom(3.0, 1, (C,), frozenset({"x"}), frozenset({"a", "b"}))
    assert after(left, 12.0, FITS, "x") is left  # another profile of the pending model: nothing more


# --- the rooms the rule reads ------------------------------------------------------------------------------
def _profile(model: str, warm: WarmState, vram: float, lane: str = "balanced") -> Profile:
    return Profile(
        key=f"{HOST}/ollama/{model}" + ("" if lane == "balanced" else f"#{lane}"),
        lane=lane,
        host_id=HOST,
        provider=Provider.OLLAMA,
        model=model,
        api_base="http://127.0.0.1:1",
        context_window=8192,
        supports_tools=True,
        reasoning=False,
        requires_think_false=False,
        hardware_class=HardwareClass.LOCAL_GPU,
        preemptible=False,
        lockout_state=LockoutState.NONE,
        warm_state=warm,
        vram_gb=vram,
        speed_score=0.5,
        quality_score=0.5,
    )


def _matrix(*profiles: Profile, overhead: float = 0.0) -> Matrix:
    host = Host(HOST, "http://127.0.0.1:1", 48.0, 2, 4, gpu_overhead_gb=overhead)
    return Matrix("1.0", {HOST: host}, {p.key: p for p in profiles})


WARM, HOT, COLD = WarmState.WARM, WarmState.HOT, WarmState.COLD
PROFILES = (
    _profile("old", WARM, 4.0),
    _profile("new", WARM, 4.0),
    _profile("busy", WARM, 4.0),
    _profile("hot", HOT, 4.0),
    _profile("cold", COLD, 4.0),
)


def _overlay(used: float, **models: tuple[float, float | None, float | None]) -> LiveOverlay:
    """``name=(size_vram GB, expires_at, since)`` as the last poll listed them."""
    return LiveOverlay(
        memory={HOST: HostMemory(48.0, used, MemorySource.OLLAMA_PS)},
        resident={
            HOST: {
                f"{n}:latest": ResidentModel(f"{n}:latest", gb, exp, since)
                for n, (gb, exp, since) in models.items()
            }
        },
        observed_gb={(HOST, n): gb for n, (gb, _, _) in models.items()},
    )


def test_host_rooms_list_residents_in_ollamas_order_with_why_each_stays() -> None:
    overlay = _overlay(
        40.0,
        old=(9.0, NOW + 10, None),  # expires first: Ollama's first victim
        new=(9.0, NOW + 200, NOW - 5),  # listed 5 s ago
        busy=(9.0, NOW + 100, None),
        hot=(9.0, NOW + 50, None),
    )
    rooms = host_rooms(
        _matrix(*PROFILES, overhead=1.0),
        overlay,
        in_flight={f"{HOST}/ollama/busy": 1},
        now=NOW,
        charge=lambda p, expires_in: 100.0 + (expires_in or 0.0),
    )
    room = rooms[HOST]
    assert room.free_gb == pytest.approx(48.0 - 40.0 - 1.0)  # Ollama's OLLAMA_GPU_OVERHEAD kept free
    assert room.model_slots == 0  # 4 loaded of 4
    assert [(r.model, r.gb, r.keep, r.charge_s) for r in room.resident] == [
        ("old", 9.0, None, 110.0),  # observed size_vram, charged with its remaining keep-alive
        ("hot", 9.0, Keep.HOT, 0.0),
        ("busy", 9.0, Keep.BUSY, 0.0),
        ("new", 9.0, Keep.LOADED_RECENTLY, 0.0),
    ]
    # the cold 4 GB model: 7 GB free but no model slot -> evict "old" (Ollama's first idle one)
    assert place(claim_gb(PROFILES[4], overlay.observed_gb), room, "cold") == Placement((room.resident[0],))
    # a cold 20 GB one would have to pass "hot" and "new": no room
    assert place(20.0, room, "cold") is None


def test_host_rooms_take_the_ledger_off_and_give_planned_evictions_back() -> None:
    overlay = _overlay(18.0, old=(9.0, NOW + 10, None), new=(9.0, NOW + 20, None))
    matrix = _matrix(PROFILES[0], PROFILES[1], PROFILES[4])
    # a live lease loads "x" (20 GB) by evicting "old"; another lease's model is "new" (settling: kept)
    leases = (
        Lease("l1", HOST, "x", 20.0, NOW + 60, (("old", 9.0),)),
        Lease("l2", HOST, "new", 9.0, NOW + 60),
    )
    held = HostLedger.of(leases, {"old", "new"})
    assert (held.reserved_gb, held.freed_gb, held.pending, held.evicting, held.leased) == (
        20.0,
        9.0,
        frozenset({"x"}),
        frozenset({"old"}),
        frozenset({"x", "new"}),
    )
    room = host_rooms(matrix, overlay, {HOST: held}, now=NOW)[HOST]
    assert room.free_gb == pytest.approx(48.0 - 18.0 - 20.0 + 9.0)
    assert room.model_slots == 4 - 2 - 1 + 1
    assert [(r.model, r.keep) for r in room.resident] == [("old", Keep.EVICTING), ("new", Keep.RESERVED)]
    assert (room.pending, room.evicting) == (frozenset({"x"}), frozenset({"old"}))


def test_host_rooms_with_evictions_off_list_no_residents() -> None:
    overlay = _overlay(9.0, old=(9.0, NOW + 10, None))
    room = host_rooms(_matrix(PROFILES[0]), overlay, now=NOW, rules=EvictionRules(enabled=False))[HOST]
    assert room.resident == () and place(48.0, room, "x") is None


def test_the_evicted_recently_rule_reads_the_eviction_log() -> None:
    overlay = _overlay(9.0, old=(9.0, NOW + 10, None))
    log = EvictionLog()
    log.record(HOST, "old", NOW - 100)  # "old"'s own load evicted something 100 s ago
    room = host_rooms(_matrix(PROFILES[0]), overlay, now=NOW, evicted_at=log.evicted_at)[HOST]
    assert room.resident[0].keep is Keep.EVICTED_RECENTLY


# --- sizes: observed size_vram once seen, declared + Ollama's minimum memory before ------------------------
def test_claims_and_what_the_poll_teaches() -> None:
    cold = PROFILES[4]
    assert claim_gb(cold, {}) == pytest.approx(4.0 + 457 / 1024)
    assert abs(OLLAMA_MIN_MEMORY_GB - 0.4463) < 1e-4
    first = {HOST: HostObservation(HOST, True, (LoadedModel("cold:latest", 11 * GIB, NOW + 300),), NOW)}
    sizes = observed_sizes({}, first)
    assert sizes == {(HOST, "cold:latest"): 11.0, (HOST, "cold"): 11.0}
    assert claim_gb(cold, sizes) == 11.0  # declared 4 GB, observed 11: the observation wins
    # unloaded since: the size is kept for its next load there
    assert observed_sizes(sizes, {HOST: HostObservation(HOST, True, (), NOW + 5)}) == sizes


def test_since_starts_with_the_first_poll_and_forgets_unloads() -> None:
    def poll(at: float, *names: str, reachable: bool = True) -> dict[str, HostObservation]:
        loaded = tuple(LoadedModel(n, GIB, None) for n in names)
        return {HOST: HostObservation(HOST, reachable, loaded, at)}

    since = next_since({}, poll(NOW, "a:1"))
    assert since == {HOST: {"a:1": None}}  # loaded before this process watched
    since = next_since(since, poll(NOW + 2, "a:1", "b"))
    assert since == {HOST: {"a:1": None, "b:latest": NOW + 2}}
    assert next_since(since, poll(NOW + 4, reachable=False)) == since  # unreachable: kept
    assert next_since(since, poll(NOW + 4, "b")) == {HOST: {"b:latest": NOW + 2}}  # a unloaded: forgotten


def test_a_residents_keep_reason_per_request_is_keep_reasons() -> None:
    """ResidentInfo.now inlines keep_reason on the hot path: the same answer for every combination."""
    import itertools

    profile = PROFILES[0]
    rules = EvictionRules()
    for busy, evicting, leased, hot, since, evicted, now in itertools.product(
        (False, True), (False, True), (False, True), (False, True),
        (None, NOW - 10, NOW - 100), (None, NOW - 10, NOW - 1000), (None, NOW),
    ):  # fmt: skip
        info = ResidentInfo("old", 9.0, NOW + 5, since, hot, (profile.key,), profile)
        held = HostLedger(
            0.0,
            (),
            evicting=frozenset({"old"} if evicting else ()),
            leased=frozenset({"old"} if leased else ()),
        )
        log = {(HOST, "old"): evicted} if evicted is not None else None
        got = info.now(HOST, held, {profile.key: int(busy)}, now, rules, log, lambda p, e: 7.0).keep
        want = keep_reason(
            busy=busy, evicting=evicting, reserved=leased, hot=hot, since=since, evicted_at=evicted, now=now,
            rules=rules,
        )  # fmt: skip
        assert got == want, (busy, evicting, leased, hot, since, evicted, now)
