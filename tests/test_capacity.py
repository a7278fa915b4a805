"""Lane limits from the live matrix (pure): residents count, cold models only where they would fit now."""

from __future__ import annotations

from typing import Any

import pytest

from capability_matrix import (
    HostMemory,
    LiveOverlay,
    LockoutState,
    MemorySource,
    WarmState,
    parse_matrix,
)
from torchrouter_core.capacity import lane_limits, parse_lane_caps
from torchrouter_core.ledger import HostLedger
from torchrouter_core.ranker import filters
from torchrouter_core.ranker.interfaces import FleetSnapshot, RequestNeeds
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
        # big resident (21 GB used): it counts; nothing cold fits in the 3 GB left.
        (
            {"small": COLD, "mid": COLD, "big": WarmState.WARM},
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
    assert limits(ov, {"fast-chat": 1, "code": 9}) == {"fast-chat": 1, "balanced": 0, "code": 2}


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
