"""Lane limits from the live matrix (pure): residents count, cold models only where they would fit now."""

from __future__ import annotations

from typing import Any

import pytest

from capability_matrix import (
    HostMemory,
    LiveOverlay,
    LockoutState,
    MemorySource,
    ResidentModel,
    WarmState,
    parse_matrix,
)
from torchrouter_core.capacity import lane_limits, parse_lane_caps, usable_profiles
from torchrouter_core.ledger import HostLedger
from torchrouter_core.ranker import filters
from torchrouter_core.ranker.interfaces import FleetSnapshot, RequestNeeds
from torchrouter_core.ranker.select import snapshot
from torchrouter_core.usability import cannot_load, host_rooms

HOST = "box-10.0.0.1"
LANES = ("fast-chat", "balanced", "code")


def profile(lane: str, model: str, vram: float) -> dict[str, Any]:
    return {
        "lane": lane, "host_id": HOST, "provider": "ollama", "model": model, "api_base": "http://127.0.0.1:1",
        "context_window": 8192, "supports_tools": True, "reasoning": False, "requires_think_false": False,
        "hardware_class": "local_gpu", "preemptible": False, "lockout_state": "none", "warm_state": "unknown",
        "vram_gb": vram, "speed_score": 0.5, "quality_score": 0.5,
    }  # fmt: skip


MATRIX = parse_matrix(
    {
        "schema_version": "1.0",
        "hosts": {
            HOST: {
                "api_base": "http://127.0.0.1:1",
                "gpu_memory_gb": 24,
                "num_parallel": 2,
                "max_loaded_models": 2,
            }
        },
        "profiles": {
            f"{HOST}/ollama/small": profile("fast-chat", "small", 6),
            f"{HOST}/ollama/mid": profile("code", "mid", 10),
            f"{HOST}/ollama/big": profile("balanced", "big", 21),
        },
    }
)


def overlay(warm: dict[str, WarmState], used_gb: float | None = None) -> LiveOverlay:
    memory = {
        HOST: HostMemory(
            24.0, used_gb, MemorySource.OLLAMA_PS if used_gb is not None else MemorySource.DECLARED
        )
    }
    return LiveOverlay(warm_states={f"{HOST}/ollama/{m}": s for m, s in warm.items()}, memory=memory)


def limits(ov: LiveOverlay, caps: dict[str, int] | None = None) -> dict[str, int]:
    return lane_limits(MATRIX.with_live(ov), ov, LANES, caps or {})


COLD = WarmState.COLD


@pytest.mark.parametrize(
    ("warm", "used_gb", "expected"),
    [
        # Nothing observed yet (host unknown): no capacity anywhere.
        ({}, None, {"fast-chat": 0, "balanced": 0, "code": 0}),
        # All cold, 24 GB free, two models at most: the two smallest fit together (6 + 10); 21 would not.
        ({"small": COLD, "mid": COLD, "big": COLD}, None, {"fast-chat": 2, "balanced": 0, "code": 2}),
        # big resident and idle (21 GB used): it counts; nothing cold fits in the 3 GB left, but evicting big
        # (idle, loaded before anyone watched) makes room for both small and mid (issue #9: evictions).
        (
            {"small": COLD, "mid": COLD, "big": WarmState.WARM},
            21.0,
            {"fast-chat": 2, "balanced": 2, "code": 2},
        ),
        # the same with big hot (served within the hot window): it stays, and nothing cold fits.
        (
            {"small": COLD, "mid": COLD, "big": WarmState.HOT},
            21.0,
            {"fast-chat": 0, "balanced": 2, "code": 0},
        ),
        # small hot (6 used): one more model may load, the smaller cold one (mid, 10 GB).
        ({"small": WarmState.HOT, "mid": COLD, "big": COLD}, 6.0, {"fast-chat": 2, "balanced": 0, "code": 2}),
    ],
)
def test_lane_limits(warm: dict[str, WarmState], used_gb: float | None, expected: dict[str, int]) -> None:
    assert limits(overlay(warm, used_gb)) == expected


def test_locked_out_profiles_count_for_nothing_and_caps_only_lower() -> None:
    ov = overlay({"small": WarmState.WARM, "mid": WarmState.WARM, "big": COLD}, 16.0)
    locked = MATRIX.with_live(ov)
    locked = type(locked)(
        locked.schema_version,
        locked.hosts,
        {
            k: (
                p
                if p.model != "mid"
                else __import__("dataclasses").replace(p, lockout_state=LockoutState.CODEX)
            )
            for k, p in locked.profiles.items()
        },
    )
    assert lane_limits(locked, ov, LANES, {})["code"] == 0
    # big (21 GB, cold) fits only by evicting both idle residents: it counts, as the ranker would place it
    assert limits(ov, {"fast-chat": 1, "code": 9}) == {"fast-chat": 1, "balanced": 2, "code": 2}


def test_parse_lane_caps() -> None:
    assert parse_lane_caps("balanced=4, code=2") == {"balanced": 4, "code": 2}
    with pytest.raises(ValueError, match="fast-chat"):
        parse_lane_caps("fast-chat=-1")


# -- the VRAM ledger: lane capacity and the ranker take the same reservations off the same rooms ------------
@pytest.mark.parametrize(
    ("reserved_gb", "pending", "expected"),
    [
        (0.0, 0, {"fast-chat": 2, "balanced": 0, "code": 2}),
        # 14 GB reserved for a load not yet listed: 10 GB left, one model slot; only the 6 GB one fits
        (14.0, 1, {"fast-chat": 2, "balanced": 0, "code": 0}),
        # 20 GB reserved: 4 GB left, nothing cold fits
        (20.0, 1, {"fast-chat": 0, "balanced": 0, "code": 0}),
        # memory left but both model slots pending
        (1.0, 2, {"fast-chat": 0, "balanced": 0, "code": 0}),
    ],
)
def test_reservations_shrink_lane_capacity_and_the_rankers_rooms_alike(
    reserved_gb: float, pending: int, expected: dict[str, int]
) -> None:
    ov = overlay({"small": COLD, "mid": COLD, "big": COLD})
    live = MATRIX.with_live(ov)
    reserved = {HOST: HostLedger(reserved_gb, (), pending)}
    assert lane_limits(live, ov, LANES, {}, reserved=reserved) == expected
    rooms = host_rooms(live, ov, reserved)
    usable_for_ranker = {
        p.lane
        for p in live.profiles.values()
        if filters.room(p, RequestNeeds(), FleetSnapshot(rooms=rooms)) is None
    }
    # the ranker's room filter (one candidate at a time) keeps a superset of what capacity packs together
    assert {lane for lane, n in expected.items() if n} <= usable_for_ranker
    assert all(
        cannot_load(p, rooms[HOST]) is not None
        for p in live.profiles.values()
        if p.lane not in usable_for_ranker
    )


# -- one fit rule: lane capacity and the ranker agree, on the same rooms and the same sizes (issue #9) -------
NOW = 1_000_000.0
RESIDENT_KEY = f"{HOST}/ollama/r"
COLD_KEY = f"{HOST}/ollama/c"


def _one_cold(declared: float) -> Any:
    """A 24 GB host with one resident model r (10 GB) and one cold model c."""
    return parse_matrix(
        {
            "schema_version": "1.0",
            "hosts": {
                HOST: {
                    "api_base": "http://127.0.0.1:1",
                    "gpu_memory_gb": 24,
                    "num_parallel": 2,
                    "max_loaded_models": 2,
                }
            },
            "profiles": {
                RESIDENT_KEY: profile("fast-chat", "r", 10),
                COLD_KEY: profile("code", "c", declared),
            },
        }
    )


def _overlay_with(r_warm: WarmState, since: float | None, observed_c: float | None) -> LiveOverlay:
    observed = {(HOST, "r"): 10.0, **({(HOST, "c"): observed_c} if observed_c is not None else {})}
    return LiveOverlay(
        warm_states={RESIDENT_KEY: r_warm, COLD_KEY: COLD},
        memory={HOST: HostMemory(24.0, 10.0, MemorySource.OLLAMA_PS)},
        resident={HOST: {"r:latest": ResidentModel("r:latest", 10.0, NOW + 300, since)}},
        observed_gb=observed,
    )


@pytest.mark.parametrize(
    ("declared", "observed_c", "r_warm", "since", "busy", "pending", "fits"),
    [
        (6.0, None, WarmState.WARM, None, 0, False, True),  # fits the 14 GB free
        (6.0, 30.0, WarmState.WARM, None, 0, False, False),  # declared 6, but Ollama said 30 GB: never
        (13.8, None, WarmState.WARM, None, 0, False, True),  # 13.8 + 0.45 GB minimum memory <= 14
        (13.8, 14.5, WarmState.WARM, None, 0, False, True),  # observed 14.5 > 14 free: by evicting r
        (20.0, None, WarmState.WARM, None, 0, False, True),  # only by evicting r (idle): both count it
        (20.0, None, WarmState.WARM, None, 1, False, False),  # r is busy: never evicted
        (20.0, None, WarmState.HOT, None, 0, False, False),  # r served within the hot window
        (20.0, None, WarmState.WARM, NOW - 10, 0, False, False),  # r loaded 10 s ago
        (20.0, None, WarmState.WARM, NOW - 61, 0, False, True),
        (20.0, 25.0, WarmState.WARM, None, 0, False, False),  # observed 25 GB: not even on an empty host
        (20.0, None, WarmState.HOT, None, 0, True, True),  # its load is reserved already: nothing more
    ],
)
def test_lane_capacity_and_the_ranker_agree(
    declared: float,
    observed_c: float | None,
    r_warm: WarmState,
    since: float | None,
    busy: int,
    pending: bool,
    fits: bool,
) -> None:
    ov = _overlay_with(r_warm, since, observed_c)
    live = _one_cold(declared).with_live(ov)
    in_flight = {RESIDENT_KEY: busy}
    reserved = {HOST: HostLedger(14.0, (), 1, pending=frozenset({"c"}))} if pending else None
    if pending:  # the reserved load took the room it needs: 14 GB reserved of 14 free
        assert host_rooms(live, ov, reserved, now=NOW)[HOST].free_gb == 0.0
    fleet = snapshot(live, ov, list(live.profiles), in_flight, reserved, now=NOW)
    ranker_says = filters.room(live.profiles[COLD_KEY], RequestNeeds(), fleet) is None
    usable = usable_profiles(live, ov, reserved, in_flight=in_flight, now=NOW)
    assert ranker_says is (COLD_KEY in usable) is fits
    limits = lane_limits(live, ov, LANES, {}, reserved, in_flight=in_flight, now=NOW)
    assert limits["code"] == (2 if fits else 0) and limits["fast-chat"] == 2  # r is resident either way


def test_capacity_packs_two_cold_models_against_distinct_victims_only() -> None:
    """Two cold 20 GB models and one idle 10 GB resident: the first placed takes r as its victim; the
    second has nothing left to evict, so only one counts (the ranker would place either, one at a time)."""
    doc = {
        "schema_version": "1.0",
        "hosts": {
            HOST: {
                "api_base": "http://127.0.0.1:1",
                "gpu_memory_gb": 24,
                "num_parallel": 2,
                "max_loaded_models": 2,
            }
        },
        "profiles": {
            RESIDENT_KEY: profile("fast-chat", "r", 10),
            f"{HOST}/ollama/c1": profile("code", "c1", 20),
            f"{HOST}/ollama/c2": profile("balanced", "c2", 20),
        },
    }
    ov = LiveOverlay(
        warm_states={RESIDENT_KEY: WarmState.WARM, f"{HOST}/ollama/c1": COLD, f"{HOST}/ollama/c2": COLD},
        memory={HOST: HostMemory(24.0, 10.0, MemorySource.OLLAMA_PS)},
        resident={HOST: {"r:latest": ResidentModel("r:latest", 10.0, NOW + 300, None)}},
    )
    live = parse_matrix(doc).with_live(ov)
    assert lane_limits(live, ov, LANES, {}, now=NOW) == {"fast-chat": 2, "balanced": 0, "code": 2}
