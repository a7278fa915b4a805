"""How many requests each local lane can run at once, derived from the live matrix (pure).

A lane's limit is the parallel slots (the profile's ``num_parallel``, else its host's: Ollama's
OLLAMA_NUM_PARALLEL) of its usable profiles. Per host, in one pass across all lanes: a profile that is
not locked out and is resident (warm or hot) is usable, unless a live reservation is evicting its model;
then cold ones, smallest claim first, each placed with the ranker's own rule
(:func:`torchrouter_core.usability.place`, the same rooms and the same sizes,
:func:`torchrouter_core.memory.claim_gb`): in what is left of the host's free memory and model slots,
else by evicting idle residents the eviction rules allow (:mod:`torchrouter_core.eviction`). What one
placement takes (memory, a slot, its victims) is gone for the next, so two cold profiles are never counted
against the same memory; a resident model and a cold one that would evict it both count (they are
alternatives: whichever lane asks first gets the memory, as the ranker decides). A profile whose host is
unreachable or not yet observed (``unknown``) counts for nothing: work sent there would wait on a connect
timeout. An operator cap (``TORCHROUTER_LANE_LIMITS``) can only lower a derived limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from capability_matrix.live import LiveOverlay
from capability_matrix.model import Matrix, Profile, WarmState
from torchrouter_core.eviction import DEFAULT_RULES, EvictionRules
from torchrouter_core.ledger import HostLedger
from torchrouter_core.memory import claim_gb
from torchrouter_core.usability import RESIDENT, after, host_rooms, locked_out, place, unreachable


def usable_profiles(
    matrix: Matrix,
    overlay: LiveOverlay,
    reserved: Mapping[str, HostLedger] | None = None,
    refused: frozenset[str] = frozenset(),
    *,
    in_flight: Mapping[str, int] | None = None,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
) -> frozenset[str]:
    """Keys of the local profiles that can take work now (the rules of :mod:`torchrouter_core.usability`),
    cold ones packed per host so two of them never count against the same memory; ``reserved`` (the
    VRAM ledger's view) is taken off each host's room first, as the ranker does. ``refused``: keys a
    circuit breaker refuses now (:mod:`torchrouter_core.breaker`); they count for nothing. ``in_flight``
    (per profile key), ``now``, ``rules`` and ``evicted_at``: the eviction rules' inputs, as the ranker
    gets them (:func:`torchrouter_core.usability.host_rooms`)."""
    rooms = host_rooms(
        matrix, overlay, reserved, in_flight=in_flight, now=now, rules=rules, evicted_at=evicted_at
    )
    observed = overlay.observed_gb
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
        usable.update(p.key for p in profiles if p.warm_state in RESIDENT and p.model not in room.evicting)
        cold = [(claim_gb(p, observed), p.key, p) for p in profiles if p.warm_state is WarmState.COLD]
        for claim, key, profile in sorted(cold, key=lambda row: (row[0], row[1])):
            placement = place(claim, room, profile.model)
            if placement is not None:
                usable.add(key)
                room = after(room, claim, placement, profile.model)
    return frozenset(usable)


def lane_limits(
    matrix: Matrix,
    overlay: LiveOverlay,
    lanes: tuple[str, ...],
    caps: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None = None,
    refused: frozenset[str] = frozenset(),
    *,
    in_flight: Mapping[str, int] | None = None,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, int]:
    """Lane -> requests it can run at once (parallel slots of its usable profiles, :func:`usable_profiles`
    with the same inputs), each at most its operator cap in ``caps``."""
    usable = usable_profiles(
        matrix, overlay, reserved, refused, in_flight=in_flight, now=now, rules=rules, evicted_at=evicted_at
    )
    limits: dict[str, int] = {}
    for lane in lanes:
        slots = sum(matrix.parallel_slots(p) for p in matrix.in_lane(lane) if p.key in usable)
        cap = caps.get(lane)
        limits[lane] = slots if cap is None else min(slots, cap)
    return limits


def parse_lane_caps(text: str) -> dict[str, int]:
    """``"balanced=4,code=2"`` -> ``{"balanced": 4, "code": 2}``; raises ValueError naming the bad part."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        lane, sep, value = part.partition("=")
        if not sep or not lane.strip() or not value.strip().isascii() or not value.strip().isdigit():
            raise ValueError(f"lane cap {part!r}: expected <lane>=<non-negative integer>")
        if lane.strip() in caps:
            raise ValueError(f"lane cap {lane.strip()!r} is given twice; give each lane once")
        caps[lane.strip()] = int(value)
    return caps
