"""How many requests each local lane can run at once, derived from the live matrix (pure).

A lane's limit is the parallel slots (each host's ``num_parallel``, Ollama's OLLAMA_NUM_PARALLEL) of
its usable profiles: those not locked out whose model is resident on a reachable host (warm or hot),
plus those that are cold but fit in their host's free GPU memory now (they can be loaded without
evicting anything). A profile whose host is unreachable or not yet observed (``unknown``) counts for
nothing: work sent there would wait on a connect timeout. Each lane is counted on its own, so two
lanes may both count the same free memory; the ranker and the VRAM ledger (next stage) arbitrate.
An operator cap (``TORCHROUTER_LANE_LIMITS``) can only lower a derived limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from capability_matrix import LiveOverlay, LockoutState, Matrix, WarmState

_RESIDENT = (WarmState.WARM, WarmState.HOT)


def lane_limit(matrix: Matrix, overlay: LiveOverlay, lane: str, *, cap: int | None = None) -> int:
    slots = 0
    for profile in matrix.in_lane(lane):
        if profile.lockout_state is not LockoutState.NONE or not profile.is_local:
            continue
        host = matrix.hosts.get(profile.host_id)
        if host is None:
            continue
        if profile.warm_state in _RESIDENT:
            slots += host.num_parallel
        elif profile.warm_state is WarmState.COLD:
            memory = overlay.memory.get(profile.host_id)
            free_gb = memory.free_gb if memory is not None else host.gpu_memory_gb
            if profile.vram_gb <= free_gb:
                slots += host.num_parallel
    return slots if cap is None else min(slots, cap)


def parse_lane_caps(text: str) -> dict[str, int]:
    """``"balanced=4,code=2"`` -> ``{"balanced": 4, "code": 2}``; raises ValueError naming the bad part."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        lane, sep, value = part.partition("=")
        if not sep or not lane.strip() or not value.strip().isdigit():
            raise ValueError(f"lane cap {part!r}: expected <lane>=<non-negative integer>")
        caps[lane.strip()] = int(value)
    return caps


def lane_limits(
    matrix: Matrix, overlay: LiveOverlay, lanes: tuple[str, ...], caps: Mapping[str, int]
) -> dict[str, int]:
    return {lane: lane_limit(matrix, overlay, lane, cap=caps.get(lane)) for lane in lanes}
