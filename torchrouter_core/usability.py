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

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from capability_matrix.live import LiveOverlay, tagged
from capability_matrix.model import Host, LockoutState, Matrix, Profile, WarmState
from torchrouter_core.eviction import DEFAULT_RULES, SKIPPED, EvictionRules, Keep
from torchrouter_core.ledger import EPS_GB, HostLedger
from torchrouter_core.memory import claim_gb

RESIDENT = (WarmState.WARM, WarmState.HOT)
_NO_MODELS: Final[Mapping[str, list[Profile]]] = MappingProxyType({})
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
    by_host = resident_profiles(matrix)
    rooms: dict[str, HostRoom] = {}
    for host_id, host in matrix.hosts.items():
        if hosts is not None and host_id not in hosts:
            continue
        rooms[host_id] = host_room(
            host,
            by_host.get(host_id, _NO_MODELS),
            overlay,
            reserved.get(host_id) if reserved is not None else None,
            in_flight=in_flight,
            now=now,
            rules=rules,
            evicted_at=evicted_at,
            charge=charge,
        )
    return rooms


def resident_profiles(matrix: Matrix) -> dict[str, dict[str, list[Profile]]]:
    """Host id -> resident model name -> its profiles there (one per lane that serves it)."""
    by_host: dict[str, dict[str, list[Profile]]] = {}
    for profile in matrix.profiles.values():
        if profile.is_local and profile.warm_state in RESIDENT:
            by_host.setdefault(profile.host_id, {}).setdefault(profile.model, []).append(profile)
    return by_host


def host_room(
    host: Host,
    models: Mapping[str, list[Profile]],
    overlay: LiveOverlay,
    held: HostLedger | None,
    *,
    in_flight: Mapping[str, int] | None = None,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
    charge: ChargeFn | None = None,
) -> HostRoom:
    """One host's room (:func:`host_rooms` for one host): ``models`` are its resident models and their
    profiles (:func:`resident_profiles`), ``held`` the ledger's view of it."""
    host_id = host.host_id
    memory = overlay.memory.get(host_id)
    free_gb = (memory.free_gb if memory is not None else host.gpu_memory_gb) - host.gpu_overhead_gb
    slots = host.max_loaded_models - len(models)
    pending: frozenset[str] = frozenset()
    evicting: frozenset[str] = frozenset()
    if held is not None:
        free_gb += held.freed_gb - held.reserved_gb
        slots += len(held.evicting) - held.pending_models
        pending, evicting = held.pending, held.evicting
    residents: tuple[Resident, ...] = ()
    if rules.enabled and models:
        residents = tuple(
            info.now(host_id, held, in_flight, now, rules, evicted_at, charge)
            for info in resident_infos(host_id, models, overlay)
        )
    return HostRoom(max(0.0, free_gb), slots, residents, pending, evicting)


@dataclass(frozen=True)
class ResidentInfo:
    """What a live matrix and overlay say of one resident model (the rest of its :class:`Resident` is per
    request, :meth:`now`): its ``size_vram`` (GB), Ollama's ``expires_at`` and when a poll first listed it
    (``since``), whether any of its profiles is hot, its profiles' keys, and one profile (for the charge)."""

    model: str
    gb: float
    expires_at: float | None
    since: float | None
    hot: bool
    keys: tuple[str, ...]
    profile: Profile

    def now(
        self,
        host_id: str,
        held: HostLedger | None,
        in_flight: Mapping[str, int] | None,
        now: float | None,
        rules: EvictionRules,
        evicted_at: Mapping[tuple[str, str], float] | None,
        charge: ChargeFn | None,
    ) -> Resident:
        """The model as the fit rule reads it for this request: why it must stay (:meth:`keep`), and its
        charge when it may go."""
        keep = self.keep(host_id, held, in_flight, now, rules, evicted_at)
        if keep is not None:
            return Resident(self.model, self.gb, keep, 0.0)
        return self.victim(now, charge)

    def keep(
        self,
        host_id: str,
        held: HostLedger | None,
        in_flight: Mapping[str, int] | None,
        now: float | None,
        rules: EvictionRules,
        evicted_at: Mapping[tuple[str, str], float] | None,
    ) -> Keep | None:
        """Why the model must stay for this request (requests in flight, the ledger, the clock), or
        ``None``. :func:`~torchrouter_core.eviction.keep_reason`'s rule, inline: this runs per resident per
        request on the hot path (same order; tests/test_eviction.py holds the two to the same answers)."""
        model = self.model
        if held is not None and model in held.evicting:
            return Keep.EVICTING
        if in_flight:
            for key in self.keys:
                if in_flight.get(key, 0) > 0:
                    return Keep.BUSY
        if held is not None and model in held.leased:
            return Keep.RESERVED
        if self.hot:
            return Keep.HOT
        if now is not None:
            since = self.since
            if since is not None and now - since < rules.min_residency_s:
                return Keep.LOADED_RECENTLY
            if evicted_at:
                at = evicted_at.get((host_id, model))
                if at is not None and now - at < rules.hold_s:
                    return Keep.EVICTED_RECENTLY
        return None

    def victim(self, now: float | None, charge: ChargeFn | None) -> Resident:
        """The model as an eviction's victim: its charge from its remaining keep-alive (``charge`` ``None``:
        free, and the one :class:`Resident` is shared)."""
        if charge is None:
            return self.free_victim
        expires_in = None if self.expires_at is None or now is None else self.expires_at - now
        return Resident(self.model, self.gb, None, charge(self.profile, expires_in))

    @functools.cached_property
    def free_victim(self) -> Resident:
        return Resident(self.model, self.gb, None, 0.0)


def resident_infos(
    host_id: str, models: Mapping[str, list[Profile]], overlay: LiveOverlay
) -> tuple[ResidentInfo, ...]:
    """The host's resident models in Ollama's unload order (earliest ``expires_at`` first, then by name;
    one without an ``expires_at`` last), sized by :func:`claim_gb` (the observed ``size_vram``)."""
    listed = overlay.resident.get(host_id, {})
    observed = overlay.observed_gb or _NO_OBSERVATIONS
    rows: list[tuple[float, str, ResidentInfo]] = []
    for model, profiles in models.items():
        seen = listed.get(tagged(model))
        expires_at = seen.expires_at if seen is not None else None
        info = ResidentInfo(
            model,
            claim_gb(profiles[0], observed),
            expires_at,
            seen.since if seen is not None else None,
            any(p.warm_state is WarmState.HOT for p in profiles),
            tuple(p.key for p in profiles),
            profiles[0],
        )
        rows.append((expires_at if expires_at is not None else float("inf"), model, info))
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
