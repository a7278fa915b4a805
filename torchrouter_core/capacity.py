"""How many requests each local lane can run at once, derived from the live matrix (pure).

A lane's limit is the parallel slots (the profile's ``num_parallel``, else its host's: Ollama's
OLLAMA_NUM_PARALLEL) of
its usable profiles. Per host, in one pass across all lanes: a profile that is not locked out and is
resident (warm or hot) is usable; then cold ones, smallest first, while they fit in what is left of the
host's free GPU memory and under its ``max_loaded_models`` (they could be loaded now without evicting
anything, and two of them are never counted against the same free memory). A profile whose host is
unreachable or not yet observed (``unknown``) counts for nothing: work sent there would wait on a
connect timeout. An operator cap (``TORCHROUTER_LANE_LIMITS``) can only lower a derived limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from capability_matrix.live import LiveOverlay
from capability_matrix.model import Matrix, Profile, WarmState
from torchrouter_core.ledger import HostLedger
from torchrouter_core.usability import RESIDENT, HostRoom, cannot_load, host_rooms, locked_out, unreachable


def usable_profiles(
    matrix: Matrix,
    overlay: LiveOverlay,
    reserved: Mapping[str, HostLedger] | None = None,
    refused: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """Keys of the local profiles that can take work now (the rules of :mod:`torchrouter_core.usability`),
    cold ones packed per host so two of them never count against the same free memory; ``reserved`` (the
    VRAM ledger's view) is taken off each host's room first, as the ranker does. ``refused``: keys a
    circuit breaker refuses now (:mod:`torchrouter_core.breaker`); they count for nothing."""
    rooms = host_rooms(matrix, overlay, reserved)
    by_host: dict[str, list[Profile]] = defaultdict(list)
    for profile in matrix.profiles.values():
        if (
            profile.is_local
            and profile.host_id in rooms
            and profile.key not in refused
            and not (locked_out(profile) or unreachable(profile))
        ):
            by_host[profile.host_id].append(profile)
    usable: set[str] = set()
    for host_id, profiles in by_host.items():
        room = rooms[host_id]
        usable.update(p.key for p in profiles if p.warm_state in RESIDENT)
        for profile in sorted(
            (p for p in profiles if p.warm_state is WarmState.COLD), key=lambda p: p.vram_gb
        ):
            if cannot_load(profile, room) is None:
                usable.add(profile.key)
                room = HostRoom(room.free_gb - profile.vram_gb, room.model_slots - 1)
    return frozenset(usable)


def lane_limits(
    matrix: Matrix,
    overlay: LiveOverlay,
    lanes: tuple[str, ...],
    caps: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None = None,
    refused: frozenset[str] = frozenset(),
) -> dict[str, int]:
    usable = usable_profiles(matrix, overlay, reserved, refused)
    limits: dict[str, int] = {}
    for lane in lanes:
        slots = sum(
            p.num_parallel or matrix.hosts[p.host_id].num_parallel
            for p in matrix.in_lane(lane)
            if p.key in usable
        )
        cap = caps.get(lane)
        limits[lane] = slots if cap is None else min(slots, cap)
    return limits


def parse_lane_caps(text: str) -> dict[str, int]:
    """``"balanced=4,code=2"`` -> ``{"balanced": 4, "code": 2}``; raises ValueError naming the bad part."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        lane, sep, value = part.partition("=")
        if not sep or not lane.strip() or not value.strip().isdigit():
            raise ValueError(f"lane cap {part!r}: expected <lane>=<non-negative integer>")
        caps[lane.strip()] = int(value)
    return caps
