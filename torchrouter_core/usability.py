"""Whether a profile can take work now: the rules lane capacity and the ranker share (pure).

One rule per fact, each ``-> reason | None`` (``None``: usable on that count). The reason strings are
stable: they appear in ``route_selected`` events (``rejected``) and may become metric labels.

- :func:`locked_out` -- a lockout (``codex``, ``auth``, ``budget``) in force: ``"lockout:<state>"``.
- :func:`unreachable` -- a local profile whose host did not answer its last ``/api/ps`` poll, or was not
  observed yet (warm state ``unknown``): ``"host_unreachable"``. Work sent there waits on a connect timeout.
- :func:`cannot_load` -- a cold local profile whose model fits neither in the host's free memory (and a
  model slot under ``max_loaded_models``) nor after evicting idle resident models there
  (:func:`place`, rules in :mod:`torchrouter_core.eviction`): ``"no_room"``; a resident profile whose
  model a live reservation is evicting: ``"evicting"`` (work sent there would hold the eviction up).
  Other resident (warm, hot) profiles and cloud profiles always pass.

**One fit rule, one set of numbers.** :func:`host_rooms` derives what each host has left: free GPU memory
as Ollama counts it (the live overlay's, else the declared capacity) less the host's ``gpu_overhead_gb``
(Ollama's ``OLLAMA_GPU_OVERHEAD``); model slots left under ``max_loaded_models``; less what the VRAM
ledger (:mod:`torchrouter_core.ledger`) has reserved there for loads not yet listed by ``/api/ps``, plus
what its planned evictions free; and the resident models in Ollama's eviction order with why each must
stay, if it must. Every load is sized by :func:`torchrouter_core.memory.claim_gb` (observed ``size_vram``,
else declared + Ollama's minimum memory). ``torchrouter_core.capacity`` packs cold profiles into those
rooms across lanes; the ranker checks each candidate against them: both call :func:`place`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from capability_matrix.live import LiveOverlay, tagged
from capability_matrix.model import LockoutState, Matrix, Profile, WarmState
from torchrouter_core.eviction import DEFAULT_RULES, SKIPPED, EvictionRules, Keep, keep_reason
from torchrouter_core.ledger import EPS_GB, HostLedger
from torchrouter_core.memory import claim_gb

RESIDENT = (WarmState.WARM, WarmState.HOT)
_NO_OBSERVATIONS: Final[Mapping[tuple[str, str], float]] = MappingProxyType({})

# (a resident profile, its remaining keep-alive in seconds or None) -> what evicting it costs later requests
ChargeFn = Callable[[Profile, float | None], float]


@dataclass(frozen=True, slots=True)
class Resident:
    """A model resident on a host as the fit rule reads it: its memory (GB, observed ``size_vram``), why
    it must stay (``None``: it may be evicted; :class:`~torchrouter_core.eviction.Keep`), and the seconds
    its eviction would cost later requests (:func:`torchrouter_core.eviction.eviction_charge_s`)."""

    model: str
    gb: float
    keep: Keep | None = None
    charge_s: float = 0.0


@dataclass(frozen=True, slots=True)
class HostRoom:
    """What one host can still load: free GPU memory (GB, headroom and reservations taken off, planned
    evictions added), model slots (``max_loaded_models`` left), the resident models in Ollama's eviction
    order, the models whose load is already reserved there (``pending``: another request for one adds no
    memory) and those a live reservation is evicting."""

    free_gb: float
    model_slots: int
    resident: tuple[Resident, ...] = ()
    pending: frozenset[str] = frozenset()
    evicting: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a load goes on its host: in free memory (no victims), or after evicting ``victims`` (in the
    order Ollama unloads them)."""

    victims: tuple[Resident, ...] = ()

    @property
    def freed_gb(self) -> float:
        return sum(v.gb for v in self.victims)

    @property
    def charge_s(self) -> float:
        return sum(v.charge_s for v in self.victims)


FITS: Final = Placement()


def place(claim: float, room: HostRoom | None, model: str | None = None) -> Placement | None:
    """Where a load of ``claim`` GB (of ``model``) goes on a host with ``room``: :data:`FITS` (free memory
    and a model slot suffice, or the model's load is already reserved there), a :class:`Placement` with
    victims (evict idle residents in order until it fits, walking past busy and evicting ones, as Ollama
    does), or ``None`` (no room: it would have to pass a model that must stay, or even every evictable
    one would not free enough)."""
    if room is None:
        return None
    if model is not None and model in room.pending:
        return FITS
    free, slots = room.free_gb + EPS_GB, room.model_slots
    if claim <= free and slots >= 1:
        return FITS
    victims: list[Resident] = []
    for resident in room.resident:
        if resident.keep is not None:
            if resident.keep in SKIPPED:
                continue
            return None
        victims.append(resident)
        free += resident.gb
        slots += 1
        if claim <= free and slots >= 1:
            return Placement(tuple(victims))
    return None


def after(room: HostRoom, claim: float, placement: Placement, model: str) -> HostRoom:
    """The room left once ``model`` (``claim`` GB) is placed by ``placement``: its victims gone (their
    memory and model slots back), its claim and a slot taken, the model pending (a second profile of the
    same model adds nothing). A model already pending there changes nothing."""
    if model in room.pending:
        return room
    gone = {v.model for v in placement.victims}
    return HostRoom(
        max(0.0, room.free_gb + placement.freed_gb - claim),
        room.model_slots + len(gone) - 1,
        tuple(r for r in room.resident if r.model not in gone),
        room.pending | {model},
        room.evicting | gone,
    )


def resident_models(matrix: Matrix) -> dict[str, frozenset[str]]:
    """Host id -> the model names resident there (live warm state ``warm`` or ``hot``)."""
    resident: dict[str, set[str]] = {}
    for profile in matrix.profiles.values():
        if profile.is_local and profile.warm_state in RESIDENT:
            resident.setdefault(profile.host_id, set()).add(profile.model)
    return {host_id: frozenset(models) for host_id, models in resident.items()}


def host_rooms(
    matrix: Matrix,
    overlay: LiveOverlay,
    reserved: Mapping[str, HostLedger] | None = None,
    *,
    in_flight: Mapping[str, int] | None = None,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
    charge: ChargeFn | None = None,
    hosts: Collection[str] | None = None,
) -> dict[str, HostRoom]:
    """Host id -> its room now (every declared host, or only ``hosts``).

    Resident models are counted once per model name (Ollama loads one copy); ``reserved`` (host id -> the
    ledger's view, from :meth:`Ledger.view` with the same resident models) takes its GB and pending
    models off the room and adds back what its planned evictions free. For the eviction rules: requests
    in flight per profile key (``in_flight``: busy), the clock (``now``; ``None`` skips the time rules),
    when each ``(host, model)``'s load last evicted something (``evicted_at``) and the charge of evicting
    each resident (``charge``; ``None``: free). Residents are ordered as Ollama unloads them: the
    earliest ``expires_at`` in ``/api/ps`` first (least recently used), then by name."""
    by_host: dict[str, dict[str, list[Profile]]] = {}
    for profile in matrix.profiles.values():
        if profile.is_local and profile.warm_state in RESIDENT:
            by_host.setdefault(profile.host_id, {}).setdefault(profile.model, []).append(profile)
    observed = overlay.observed_gb or _NO_OBSERVATIONS
    rooms: dict[str, HostRoom] = {}
    for host_id, host in matrix.hosts.items():
        if hosts is not None and host_id not in hosts:
            continue
        memory = overlay.memory.get(host_id)
        free_gb = (memory.free_gb if memory is not None else host.gpu_memory_gb) - host.gpu_overhead_gb
        models = by_host.get(host_id, {})
        slots = host.max_loaded_models - len(models)
        held = reserved.get(host_id) if reserved is not None else None
        pending: frozenset[str] = frozenset()
        evicting: frozenset[str] = frozenset()
        if held is not None:
            free_gb += held.freed_gb - held.reserved_gb
            slots += len(held.evicting) - held.pending_models
            pending, evicting = held.pending, held.evicting
        residents: tuple[Resident, ...] = ()
        if rules.enabled and models:
            residents = _residents(
                host_id, models, overlay, observed, held, in_flight, now, rules, evicted_at, charge
            )
        rooms[host_id] = HostRoom(max(0.0, free_gb), slots, residents, pending, evicting)
    return rooms


def _residents(
    host_id: str,
    models: Mapping[str, list[Profile]],
    overlay: LiveOverlay,
    observed: Mapping[tuple[str, str], float],
    held: HostLedger | None,
    in_flight: Mapping[str, int] | None,
    now: float | None,
    rules: EvictionRules,
    evicted_at: Mapping[tuple[str, str], float] | None,
    charge: ChargeFn | None,
) -> tuple[Resident, ...]:
    listed = overlay.resident.get(host_id, {})
    rows: list[tuple[float, str, Resident]] = []
    for model, profiles in models.items():
        seen = listed.get(tagged(model))
        expires_at = seen.expires_at if seen is not None else None
        keep = keep_reason(
            busy=in_flight is not None and any(in_flight.get(p.key, 0) > 0 for p in profiles),
            evicting=held is not None and model in held.evicting,
            reserved=held is not None and model in held.leased,
            hot=any(p.warm_state is WarmState.HOT for p in profiles),
            since=seen.since if seen is not None else None,
            evicted_at=evicted_at.get((host_id, model)) if evicted_at is not None else None,
            now=now,
            rules=rules,
        )
        gb = claim_gb(profiles[0], observed)
        expires_in = None if expires_at is None or now is None else expires_at - now
        cost = charge(profiles[0], expires_in) if charge is not None and keep is None else 0.0
        order = expires_at if expires_at is not None else float("inf")
        rows.append((order, model, Resident(model, gb, keep, cost)))
    rows.sort(key=lambda row: (row[0], row[1]))
    return tuple(row[2] for row in rows)


def locked_out(profile: Profile) -> str | None:
    return None if profile.lockout_state is LockoutState.NONE else f"lockout:{profile.lockout_state.value}"


def unreachable(profile: Profile) -> str | None:
    return "host_unreachable" if profile.is_local and profile.warm_state is WarmState.UNKNOWN else None


def cannot_load(
    profile: Profile,
    room: HostRoom | None,
    observed_gb: Mapping[tuple[str, str], float] = _NO_OBSERVATIONS,
) -> str | None:
    if not profile.is_local:
        return None
    if profile.warm_state is not WarmState.COLD:
        return "evicting" if room is not None and profile.model in room.evicting else None
    if place(claim_gb(profile, observed_gb), room, profile.model) is None:
        return "no_room"
    return None


def unusable(
    profile: Profile,
    rooms: Mapping[str, HostRoom],
    observed_gb: Mapping[tuple[str, str], float] = _NO_OBSERVATIONS,
) -> str | None:
    """The first rule that rules ``profile`` out, in the order above; ``None`` when it is usable."""
    return (
        locked_out(profile)
        or unreachable(profile)
        or cannot_load(profile, rooms.get(profile.host_id), observed_gb)
    )
