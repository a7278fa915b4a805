"""The VRAM ledger: memory reserved for cold loads the ranker has picked, so no host is overcommitted.

The rule (pure, here; both backends apply exactly it):

- **Who reserves.** A request whose picked deployment is a *local profile in warm state ``cold``* (the
  last ``/api/ps`` poll of a reachable host does not list its model) reserves that model's memory claim
  on that host before the call (:func:`memory_claim`: the ``size_vram`` Ollama reported the last time
  this host had the model loaded, else the declared ``vram_gb`` plus Ollama's minimum memory;
  :func:`torchrouter_core.memory.claim_gb`). Resident (``warm``/``hot``) and cloud deployments use no new
  memory and reserve nothing. A load that needs an eviction names its *victims* (resident models and their
  ``size_vram``, in the order Ollama unloads them; :func:`torchrouter_core.usability.place`).
- **What is counted.** A host's reserved memory is, over the distinct models with a live lease there that
  the last poll does *not* list as resident, the largest claim among that model's leases (Ollama loads
  one copy however many requests wait for it). Once the poll lists the model, its memory is in the
  poll's ``used`` figure and the lease stops counting, so nothing is counted twice. A host's *freed*
  memory is the ``size_vram`` of the distinct victims of its live leases that the poll still lists (once
  the poll no longer lists one, its memory is in the poll's free figure).
- **When it fits.** ``reserved (with the new lease) <= free + freed (with the new lease's victims)``,
  free being the host's free memory as the poll saw it (GB, headroom taken off), and the distinct pending
  models fit in the host's model slots plus the victims (``max_loaded_models`` minus resident models).
  So ``reserved + resident models that are no victim <= capacity`` at every grant: never an overcommit.
  A victim may be named by one live lease only (its memory is counted once), and never when it is the
  model of a live lease on that host (just loaded, or loading) or the request's own model; a request that
  breaks either is refused. Otherwise the reservation is refused: the candidate does not fit and the
  ranker tries the next one.
- **How long.** A lease lives ``ttl_s`` seconds from its grant or last renewal (a running stream renews
  it); it is released exactly once, by whichever of success, failure, timeout, cancellation or a cut
  stream comes first (a second release is a no-op answering ``False``), and a lease never heard from
  again (its worker died) expires and stops counting.
- **Until the poll catches up.** A released lease whose model the poll may not list yet (the load
  finished after the last ``/api/ps``) stays counted as a *settling* lease (id ``<lease id>~settle``,
  victims kept) for ``settle_s`` (two probe intervals), so memory just filled is not granted again before
  the poll shows it; it stops counting as soon as the poll lists the model, like any lease.

:class:`LedgerBook` is the pure state (takes ``now``, returns values); :class:`Ledger` is the interface
the hooks call, with :class:`InProcessLedger` (one LiteLLM worker) here and the Redis backend at the edge
(``torchrouter.redis_ledger``), which runs the same rule in one Lua script so that two workers cannot
take the same memory.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from capability_matrix.model import Profile, WarmState
from torchrouter_core.memory import claim_gb

EPS_GB = 1e-9
DEFAULT_LEASE_TTL_S = 60.0
SETTLE_SUFFIX = "~settle"


@dataclass(frozen=True, slots=True)
class Lease:
    """One reservation: ``gb`` of GPU memory on ``host_id`` for loading ``model``, until ``expires_at``
    (Unix seconds), evicting ``victims`` (``(model, size_vram GB)``, in unload order) to make room."""

    lease_id: str
    host_id: str
    model: str
    gb: float
    expires_at: float
    victims: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """What a reservation asks for and against what: the host's ``free_gb`` (total minus used, from the
    last poll), its ``model_slots`` left (``max_loaded_models`` minus resident models) and the models the
    poll lists as ``resident`` there; ``victims``: the resident models this load evicts (``(model, GB)``)."""

    lease_id: str
    host_id: str
    model: str
    gb: float
    free_gb: float
    model_slots: int
    resident: frozenset[str] = frozenset()
    victims: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class HostLedger:
    """One host's view of the ledger (the counting rule above): reserved GB and how many distinct models
    they are for (models the poll lists as resident are not counted), its live leases, the GB its planned
    evictions free (victims the poll still lists), and by name: the pending models, the victims
    (``evicting``) and every model with a live lease (``leased``: never a victim). A view mirrored from
    the hooks' header (the classifier's) carries the counts only: the names are empty there."""

    reserved_gb: float
    leases: tuple[Lease, ...]
    pending_models: int = 0
    freed_gb: float = 0.0
    pending: frozenset[str] = frozenset()
    evicting: frozenset[str] = frozenset()
    leased: frozenset[str] = frozenset()

    @classmethod
    def of(cls, leases: Collection[Lease], resident: Collection[str]) -> HostLedger:
        pending = pending_by_model(leases, resident)
        victims = victims_by_model(leases, resident)
        return cls(
            float(sum(pending.values())),
            tuple(leases),
            len(pending),
            float(sum(victims.values())),
            frozenset(pending),
            frozenset(victims),
            frozenset(lease.model for lease in leases),
        )


def memory_claim(profile: Profile, observed_gb: Mapping[tuple[str, str], float]) -> float | None:
    """GB a pick of ``profile`` (live warm state applied) must reserve, or ``None`` when it needs none.

    ``observed_gb`` maps ``(host_id, model)`` to the ``size_vram`` (GB) seen for it in ``/api/ps``; it
    wins over the declared ``vram_gb`` plus Ollama's minimum memory (declared sizes miss real use by
    several times: DESIGN "Facts"; :func:`torchrouter_core.memory.claim_gb`, the one sizing rule).
    """
    if not profile.is_local or profile.warm_state is not WarmState.COLD:
        return None
    return claim_gb(profile, observed_gb)


def pending_by_model(leases: Collection[Lease], resident: Collection[str]) -> dict[str, float]:
    """Model -> the largest claim among its leases, for models not resident (the counting rule)."""
    pending: dict[str, float] = {}
    for lease in leases:
        if lease.model not in resident and lease.gb > pending.get(lease.model, -1.0):
            pending[lease.model] = lease.gb
    return pending


def victims_by_model(leases: Collection[Lease], resident: Collection[str]) -> dict[str, float]:
    """Model -> its ``size_vram``, for the victims of ``leases`` the poll still lists (each counted once)."""
    victims: dict[str, float] = {}
    for lease in leases:
        for model, gb in lease.victims:
            if model in resident:
                victims[model] = gb
    return victims


def admits(request: ReserveRequest, held: Collection[Lease]) -> bool:
    """Whether ``request`` fits beside the live leases ``held`` on its host (the fit rule above)."""
    pending = pending_by_model(held, request.resident)
    if request.model not in request.resident:
        pending[request.model] = max(pending.get(request.model, 0.0), request.gb)
    victims = victims_by_model(held, request.resident)
    leased = {lease.model for lease in held}
    for model, gb in request.victims:
        if model not in request.resident:  # gone since the plan: its memory is in the poll's free figure
            continue
        if model in victims or model in leased or model == request.model:
            return False
        victims[model] = gb
    fits = sum(pending.values()) <= request.free_gb + sum(victims.values()) + EPS_GB
    return fits and len(pending) <= max(0, request.model_slots + len(victims))


@dataclass
class LedgerBook:
    """The ledger's state in one process, pure: every method takes ``now`` (Unix seconds)."""

    leases: dict[str, Lease] = field(default_factory=dict)
    peak_gb: dict[str, float] = field(default_factory=dict)  # host -> most ever reserved at once

    def expire(self, now: float) -> list[Lease]:
        gone = [lease for lease in self.leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self.leases[lease.lease_id]
        return gone

    def on_host(self, host_id: str, now: float) -> list[Lease]:
        self.expire(now)
        return [lease for lease in self.leases.values() if lease.host_id == host_id]

    def reserve(self, request: ReserveRequest, now: float, ttl_s: float) -> bool:
        """Grant (``True``) or refuse (``False``). Granting an id already held renews it."""
        held = [lease for lease in self.on_host(request.host_id, now) if lease.lease_id != request.lease_id]
        if not admits(request, held):
            return False
        self.leases[request.lease_id] = Lease(
            request.lease_id, request.host_id, request.model, request.gb, now + ttl_s, request.victims
        )
        reserved = sum(pending_by_model([*held, self.leases[request.lease_id]], request.resident).values())
        self.peak_gb[request.host_id] = max(self.peak_gb.get(request.host_id, 0.0), reserved)
        return True

    def release(self, lease_id: str, now: float = 0.0, settle_s: float = 0.0) -> bool:
        """``True`` the first time a held lease is released; ``False`` for unknown, expired or released.
        With ``settle_s`` > 0 the memory stays counted as a settling lease until ``now + settle_s``."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return False
        if settle_s > 0 and not lease_id.endswith(SETTLE_SUFFIX):
            settle_id = lease_id + SETTLE_SUFFIX
            self.leases[settle_id] = Lease(
                settle_id, lease.host_id, lease.model, lease.gb, now + settle_s, lease.victims
            )
        return True

    def renew(self, lease_id: str, now: float, ttl_s: float) -> bool:
        self.expire(now)
        lease = self.leases.get(lease_id)
        if lease is None:
            return False
        self.leases[lease_id] = Lease(
            lease.lease_id, lease.host_id, lease.model, lease.gb, now + ttl_s, lease.victims
        )
        return True

    def view(self, now: float, resident: Mapping[str, Collection[str]]) -> dict[str, HostLedger]:
        """Host id -> its ledger, for every host with a live lease (``resident``: host -> model names)."""
        self.expire(now)
        by_host: dict[str, list[Lease]] = {}
        for lease in self.leases.values():
            by_host.setdefault(lease.host_id, []).append(lease)
        return {host: HostLedger.of(leases, resident.get(host, ())) for host, leases in by_host.items()}


class Ledger(Protocol):
    """The interface the hooks use; both backends implement the rule of this module.

    ``reserve`` answers whether the lease was granted; ``release`` whether this call released it (exactly
    one caller ever gets ``True``); ``renew`` whether the lease was still live. Times are Unix seconds.
    """

    ttl_s: float

    async def reserve(self, request: ReserveRequest, now: float) -> bool: ...

    async def release(self, lease_id: str, host_id: str, now: float, settle_s: float = 0.0) -> bool: ...

    async def renew(self, lease_id: str, host_id: str, now: float) -> bool: ...

    async def view(self, now: float, resident: Mapping[str, Collection[str]]) -> dict[str, HostLedger]: ...

    async def peaks(self) -> dict[str, float]: ...

    async def close(self) -> None: ...


class InProcessLedger:
    """The ledger for one LiteLLM worker: a :class:`LedgerBook` in memory (no I/O, never fails)."""

    def __init__(self, ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.book = LedgerBook()

    async def reserve(self, request: ReserveRequest, now: float) -> bool:
        return self.book.reserve(request, now, self.ttl_s)

    async def release(self, lease_id: str, host_id: str, now: float, settle_s: float = 0.0) -> bool:
        return self.book.release(lease_id, now, settle_s)

    async def renew(self, lease_id: str, host_id: str, now: float) -> bool:
        return self.book.renew(lease_id, now, self.ttl_s)

    async def view(self, now: float, resident: Mapping[str, Collection[str]]) -> dict[str, HostLedger]:
        return self.book.view(now, resident)

    async def peaks(self) -> dict[str, float]:
        return dict(self.book.peak_gb)

    async def close(self) -> None:
        return None
