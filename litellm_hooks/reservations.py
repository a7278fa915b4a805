"""The hooks' side of the VRAM ledger: reserve for a cold pick, renew while a stream runs, release once.

The rule is :mod:`torchrouter_core.ledger`'s; the backend (:class:`InProcessLedger`, or
``torchrouter.redis_ledger.RedisLedger`` when ``TORCHROUTER_LEDGER_REDIS_URL`` is set) comes from the
settings. What this adapter adds:

- **Which request holds what.** Each request gets a token in the pre-call hook (``ctx["lease_token"]``,
  copied by LiteLLM into every attempt's metadata); the worker keeps ``(token, deployment) -> lease``.
  A fallback or retry to another deployment holds its own lease; a retry on the same one reuses it.
- **Release, exactly once.** Whichever comes first of LiteLLM's success or failure log for that
  deployment, or the end of the stream wrapper (a finished stream, a stream cut midway, a client gone:
  the wrapper's ``finally``), pops the lease and releases it; later ones find nothing. A lease nobody
  releases (a worker killed mid-request) expires after ``TORCHROUTER_LEDGER_LEASE_S``.
- **Settling.** A released lease stays counted for two probe intervals unless the poll lists its model
  (see the ledger's "until the poll catches up").
- **Evictions.** A pick that must evict (the ranker's :class:`~torchrouter_core.usability.Placement`)
  names its victims and their ``size_vram`` in the reservation; the ledger grants it only if those
  models are no other live lease's victims and not being loaded themselves (never an overcommit).
- **Failures.** A ledger that cannot answer (Redis down) refuses: never overcommit. A failed release is
  logged and left to expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from capability_matrix.model import Matrix, Profile
from litellm_hooks.backend import BackendFaults
from litellm_hooks.settings import HooksSettings
from torchrouter_core.contract import HostReport
from torchrouter_core.ledger import (
    SETTLE_SUFFIX,
    HostLedger,
    InProcessLedger,
    Ledger,
    ReserveRequest,
    memory_claim,
)
from torchrouter_core.usability import FITS, HostRoom, Placement, resident_models

log = logging.getLogger("torchrouter.hooks.ledger")


@dataclass(frozen=True, slots=True)
class Held:
    lease_id: str
    host_id: str
    model: str
    gb: float
    expires_at: float  # worker-side bookkeeping only; the ledger's own lease is authoritative
    victims: tuple[tuple[str, float], ...] = ()  # (model, GB) this load evicts

    def event_fields(self) -> dict[str, Any]:
        """The trail's ``reservation`` (``route_selected``, ``prewarm``): host id, model, GB and the models
        its load evicts."""
        return {
            "host_id": self.host_id,
            "model": self.model,
            "gb": self.gb,
            "victims": [model for model, _ in self.victims],
        }


def host_reports(
    matrix: Matrix, view: Mapping[str, HostLedger], in_flight: Mapping[str, int]
) -> dict[str, HostReport]:
    """Host id -> what ``x-torchrouter-ledger`` reports: the ledger's live leases (held by requests still
    running; settling ones, released and kept counted by the hooks until the poll lists their model, are
    left out: their requests have ended, and the classifier's own poll sees the loaded model) plus requests
    in flight per host (summed over its profiles); hosts with nothing reserved and nothing in flight are
    left out."""
    busy: dict[str, int] = {}
    for key, count in in_flight.items():
        profile = matrix.profiles.get(key)
        if profile is not None and profile.is_local and count > 0:
            busy[profile.host_id] = busy.get(profile.host_id, 0) + count
    resident = resident_models(matrix)
    out: dict[str, HostReport] = {}
    for host in view.keys() | busy.keys():
        held = view.get(host)
        live = [lease for lease in held.leases if not lease.lease_id.endswith(SETTLE_SUFFIX)] if held else []
        mine = HostLedger.of(live, resident.get(host, frozenset())) if live else None
        reserved, leases, pending = (mine.reserved_gb, len(live), mine.pending_models) if mine else (0, 0, 0)
        if reserved or leases or busy.get(host, 0):
            out[host] = HostReport(float(reserved), leases, pending, busy.get(host, 0))
    return out


def own_report(matrix: Matrix, leases: Collection[Held], in_flight: Collection[str]) -> dict[str, HostReport]:
    """One request's own part of :func:`host_reports` (``x-torchrouter-own``): the leases it holds and its
    attempts in flight, per host. The classifier takes it off its mirror when that request's relay ends,
    so a finished request stops counting there."""
    out: dict[str, HostReport] = {}
    for held in leases:
        r = out.get(held.host_id, HostReport(0.0, 0, 0, 0))
        gb, count = r.reserved_gb + held.gb, r.leases + 1
        out[held.host_id] = HostReport(gb, count, r.pending_models + 1, r.in_flight)
    for key in in_flight:
        profile = matrix.profiles.get(key)
        if profile is not None and profile.is_local:
            r = out.get(profile.host_id, HostReport(0.0, 0, 0, 0))
            out[profile.host_id] = HostReport(r.reserved_gb, r.leases, r.pending_models, r.in_flight + 1)
    return out


def open_ledger(settings: HooksSettings) -> Ledger:
    if settings.ledger_redis_url:
        from torchrouter.redis_ledger import RedisLedger  # only when configured: redis stays optional

        return RedisLedger(settings.ledger_redis_url, ttl_s=settings.ledger_lease_s)
    return InProcessLedger(ttl_s=settings.ledger_lease_s)


@dataclass
class Reservations:
    ledger: Ledger
    settle_s: float  # how long a released load stays counted unless the poll lists it (2 probe intervals)
    held: dict[tuple[str, str], Held] = field(default_factory=dict)  # (token, deployment) -> lease
    renewed_at: dict[str, float] = field(default_factory=dict)  # token -> last renewal (monotonic)
    # Ledger calls that outlive a cancelled caller (a client that left mid-reserve or mid-release): kept
    # referenced until done, so the memory is always given back.
    background: set[asyncio.Task[object]] = field(default_factory=set)
    faults: BackendFaults = field(default_factory=BackendFaults)  # a ledger that does not answer, told once

    def of_token(self, token: str) -> list[Held]:
        """The leases one request (``token``) holds now."""
        return [h for (t, _), h in self.held.items() if t == token]

    # --- reads ----------------------------------------------------------------------------------------
    async def view(self, matrix: Matrix, now: float) -> dict[str, HostLedger]:
        try:
            view = await self.ledger.view(now, resident_models(matrix))
        except Exception as exc:  # a ledger we cannot read: rooms as the poll says; reserve still decides
            self.faults.failed("vram_ledger_view", "ranking on the probe's rooms alone", exc)
            return {}
        self.faults.ok("vram_ledger_view")
        return view

    # --- reserve / renew / release ----------------------------------------------------------------------
    async def reserve(
        self,
        token: str,
        profile: Profile,
        room: HostRoom | None,
        matrix: Matrix,
        now: float,
        *,
        placement: Placement = FITS,
        observed_gb: Mapping[tuple[str, str], float] | None = None,
    ) -> Held | Literal[False] | None:
        """``None``: the pick needs no reservation (resident, cloud) or already holds one;
        a :class:`Held`: granted; ``False``: refused (does not fit, or the ledger could not answer).
        ``room``: the host as the poll saw it (no reservations taken off: the ledger counts those);
        ``placement``: the ranker's, whose victims the load evicts; ``observed_gb``: every ``size_vram``
        seen (the live overlay's), which sizes the claim (:func:`torchrouter_core.memory.claim_gb`)."""
        claim = memory_claim(profile, observed_gb or {})
        if claim is None:
            return None
        key = (token, profile.key)
        if key in self.held:
            return None
        if room is None:
            return False
        resident = resident_models(matrix).get(profile.host_id, frozenset())
        # `room` is the host's room as the poll saw it (no reservations taken off): the ledger counts those.
        lease_id = f"{token}:{uuid.uuid4().hex[:8]}"
        victims = tuple((v.model, v.gb) for v in placement.victims)
        request = ReserveRequest(
            lease_id, profile.host_id, profile.model, claim, room.free_gb, room.model_slots, resident, victims
        )
        call: asyncio.Task[bool] = asyncio.ensure_future(self.ledger.reserve(request, now))
        try:
            granted = await asyncio.shield(call)
        except asyncio.CancelledError:
            # LiteLLM cancelled the call (its client left) while the ledger was answering: the reserve
            # may still be granted there, with no one here to release it. Give it back once it is.
            self._keep(call)
            call.add_done_callback(lambda done: self._undo(done, request.lease_id, request.host_id))
            raise
        except Exception as exc:
            self.faults.failed("vram_ledger_reserve", "every cold pick is refused (never overcommit)", exc)
            return False
        self.faults.ok("vram_ledger_reserve")
        if not granted:
            return False
        held = Held(lease_id, profile.host_id, profile.model, claim, now + self.ledger.ttl_s, victims)
        self.held[key] = held
        self._prune(now)
        return held

    async def renew(self, token: str, now: float) -> None:
        """Renew the token's leases, at most every third of a lease (called per stream chunk)."""
        mono = time.monotonic()
        if mono - self.renewed_at.get(token, mono - self.ledger.ttl_s) < self.ledger.ttl_s / 3:
            return
        self.renewed_at[token] = mono
        for (held_token, deployment), held in list(self.held.items()):
            if held_token == token:
                try:
                    await self.ledger.renew(held.lease_id, held.host_id, now)
                    self.faults.ok("vram_ledger_renew")
                except Exception as exc:
                    self.faults.failed("vram_ledger_renew", "the lease may expire mid-stream", exc)
                self.held[(held_token, deployment)] = Held(
                    held.lease_id, held.host_id, held.model, held.gb, now + self.ledger.ttl_s, held.victims
                )

    async def release(self, token: str, deployments: Collection[str] | None, now: float) -> int:
        """Release the token's leases for ``deployments`` (``None``: all of them); how many were held. The
        ledger calls finish even if the caller is cancelled meanwhile (they run shielded)."""
        keys = [k for k in self.held if k[0] == token and (deployments is None or k[1] in deployments)]
        calls = []
        for key in keys:
            held = self.held.pop(key, None)
            if held is None:  # another path released it between our scan and now
                continue
            calls.append(self._keep(self._release_one(held.lease_id, held.host_id, now)))
        if deployments is None or not any(k[0] == token for k in self.held):
            self.renewed_at.pop(token, None)
        if calls:
            await asyncio.shield(asyncio.gather(*calls))
        return len(calls)

    async def _release_one(self, lease_id: str, host_id: str, now: float) -> None:
        try:
            await self.ledger.release(lease_id, host_id, now, self.settle_s)
        except Exception as exc:
            self.faults.failed("vram_ledger_release", "the lease will expire", exc)
            return
        self.faults.ok("vram_ledger_release")

    def _keep(self, call: asyncio.Future[object] | object) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(call)  # type: ignore[arg-type]
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def _undo(self, call: asyncio.Task[bool], lease_id: str, host_id: str) -> None:
        """A reserve whose caller was cancelled: release it if the ledger granted it."""
        if call.cancelled() or call.exception() is not None or not call.result():
            return
        self._keep(self._release_one(lease_id, host_id, time.time()))

    def _prune(self, now: float) -> None:
        """Forget worker-side records of leases that have expired in the ledger (bounded memory)."""
        if len(self.held) < 1024:
            return
        for key, held in list(self.held.items()):
            if held.expires_at <= now:
                del self.held[key]
                self.renewed_at.pop(key[0], None)
