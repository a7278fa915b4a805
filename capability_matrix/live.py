"""The live overlay: what the fleet looks like now, derived by pure functions from observations.

This module owns the run-time rules of the matrix: warm state from Ollama's `/api/ps` (plus when a profile
last served), GPU memory per host and which source it came from, and the lockout rules (budget, auth; `codex`
only ever comes from the file). `LiveOverlay` bundles the result; `Matrix.with_live(overlay)` applies it.
No I/O here: `probe.py` gathers `HostObservation`s, callers pass `now`.

Every timestamp here (`observed_at`, `expires_at`, `last_served`, `now`) is Unix time in seconds, as from
`time.time()`, because Ollama's `expires_at` is wall-clock time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from capability_matrix.model import BYTES_PER_GB, LockoutState, Matrix, WarmState

HOT_WINDOW_S = 30.0


class MemorySource(StrEnum):
    """Where a host's GPU memory figures came from, best first."""

    NVML = "nvml"  # the driver, for the host this process runs on
    OLLAMA_PS = "ollama_ps"  # used = sum of size_vram of loaded models; total = declared capacity
    DECLARED = "declared"  # nothing measured: declared capacity, usage unknown


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One entry of `/api/ps`: a model resident on a host."""

    name: str
    size_vram_bytes: int
    expires_at: float | None  # when Ollama will unload it if idle; None when it did not say


@dataclass(frozen=True, slots=True)
class ResidentModel:
    """A model the last poll of its host lists as loaded, as the fit rule reads it: ``size_vram`` (GB),
    Ollama's ``expires_at`` (when it unloads if it stays idle; ``None`` when not said) and ``since``, when
    a poll first listed it (``None``: the first poll of the host this process made listed it, so it was
    loaded before anyone here watched)."""

    name: str
    gb: float
    expires_at: float | None
    since: float | None


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One NVML read of this machine's GPUs; `reason` says why it is unavailable."""

    available: bool
    devices: tuple[GpuDevice, ...] = ()
    reason: str = ""

    @classmethod
    def unavailable(cls, reason: str) -> GpuReading:
        return cls(available=False, reason=reason)


@dataclass(frozen=True, slots=True)
class HostObservation:
    """What one poll of a host saw; `reachable` False: we cannot tell what is loaded (`error` says why)."""

    host_id: str
    reachable: bool
    loaded: tuple[LoadedModel, ...]
    observed_at: float
    error: str = ""
    gpu: GpuReading | None = None  # only for the host this process runs on, when a GPU reader is configured


@dataclass(frozen=True, slots=True)
class HostMemory:
    total_gb: float
    used_gb: float | None  # None when nothing measured it
    source: MemorySource
    nvml_unavailable: str | None = None  # NVML was asked for this host and could not answer: why

    @property
    def free_gb(self) -> float:
        return max(0.0, self.total_gb - (self.used_gb or 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "total_gb": round(self.total_gb, 3),
            "used_gb": None if self.used_gb is None else round(self.used_gb, 3),
            "free_gb": round(self.free_gb, 3),
            "source": self.source.value,
            **({"nvml_unavailable": self.nvml_unavailable} if self.nvml_unavailable else {}),
        }


@dataclass(frozen=True, slots=True)
class Lockout:
    state: LockoutState
    reason: str


@dataclass(frozen=True, slots=True)
class LiveOverlay:
    """Run-time state for one matrix: warm states (local profiles), live lockouts, GPU memory per host,
    the models each host lists as loaded (host id -> tagged model name -> :class:`ResidentModel`), and
    every ``size_vram`` seen (``(host id, model)`` -> GB, kept after the model unloads: the claim of its
    next load there; :func:`torchrouter_core.memory.claim_gb`)."""

    warm_states: Mapping[str, WarmState] = field(default_factory=dict)
    lockouts: Mapping[str, Lockout] = field(default_factory=dict)
    memory: Mapping[str, HostMemory] = field(default_factory=dict)
    observed_at: float | None = None
    resident: Mapping[str, Mapping[str, ResidentModel]] = field(default_factory=dict)
    observed_gb: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("warm_states", "lockouts", "memory", "resident", "observed_gb"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def lockout_states(self) -> Mapping[str, LockoutState]:
        return {key: lockout.state for key, lockout in self.lockouts.items()}

    def to_json(self) -> dict[str, Any]:
        """For `/capability-matrix`: where the GPU figures came from, and why profiles are locked out."""
        return {
            "observed_at": self.observed_at,
            "hosts": {host_id: m.to_json() for host_id, m in self.memory.items()},
            "lockouts": {k: {"state": v.state.value, "reason": v.reason} for k, v in self.lockouts.items()},
        }


# --- warm state ------------------------------------------------------------------------------------------


def derive_warm_states(
    matrix: Matrix,
    observations: Mapping[str, HostObservation],
    last_served: Mapping[str, float],
    now: float,
    hot_window_s: float = HOT_WINDOW_S,
    *,
    in_flight: Collection[str] = frozenset(),
    max_age_s: float | None = None,
) -> dict[str, WarmState]:
    """Warm state of every local profile (cloud profiles keep their declared state, so they are absent).

    hot: resident, and served within `hot_window_s` or with a request in flight (`in_flight` holds keys);
    residency is always the last `/api/ps` poll's: an answer after the poll does not make a model the poll
    did not list resident (it may have been evicted since; the VRAM ledger's settling lease covers the
    memory of a load the poll has not seen yet);
    warm: resident; cold: host reachable, model not resident (or its keep-alive has expired);
    unknown: host unreachable, never observed, or observed more than `max_age_s` ago.
    """
    resident = {host_id: _resident_names(obs, now) for host_id, obs in observations.items()}
    states: dict[str, WarmState] = {}
    for p in matrix.profiles.values():
        if not p.is_local:
            continue
        obs = observations.get(p.host_id)
        if obs is None or not obs.reachable or (max_age_s is not None and now - obs.observed_at > max_age_s):
            states[p.key] = WarmState.UNKNOWN
        elif tagged(p.model) not in resident[p.host_id]:
            states[p.key] = WarmState.COLD
        elif p.key in in_flight or now - last_served.get(p.key, -math.inf) <= hot_window_s:
            states[p.key] = WarmState.HOT
        else:
            states[p.key] = WarmState.WARM
    return states


def _resident_names(obs: HostObservation, now: float) -> frozenset[str]:
    if not obs.reachable:
        return frozenset()
    return frozenset(tagged(m.name) for m in obs.loaded if m.expires_at is None or m.expires_at > now)


def tagged(model: str) -> str:
    """Ollama lists `llama3` as `llama3:latest`; compare names with the tag made explicit."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


# --- what each host has loaded, and since when --------------------------------------------------------------


def next_since(
    previous: Mapping[str, Mapping[str, float | None]],
    observations: Mapping[str, HostObservation],
) -> dict[str, dict[str, float | None]]:
    """Host id -> tagged model name -> when a poll first listed it, after one round of ``observations``.

    A model listed by the first poll of its host gets ``None`` (loaded before this process watched); one
    that appears later gets that poll's ``observed_at``; one no longer listed is forgotten (its next load
    starts over). An unreachable host keeps what was known."""
    out = {host: dict(models) for host, models in previous.items()}
    for host_id, obs in observations.items():
        if not obs.reachable:
            continue
        before = previous.get(host_id)
        names = {tagged(m.name) for m in obs.loaded}
        if before is None:
            out[host_id] = dict.fromkeys(names)
        else:
            out[host_id] = {n: before.get(n, obs.observed_at) for n in names}
    return out


def observed_sizes(
    previous: Mapping[tuple[str, str], float], observations: Mapping[str, HostObservation]
) -> dict[tuple[str, str], float]:
    """``(host id, model)`` -> the last ``size_vram`` (GB) seen, updated with one round of observations;
    a model listed as ``name:latest`` is recorded under ``name`` too (the matrix may omit the tag)."""
    out = dict(previous)
    for host_id, obs in observations.items():
        for loaded in obs.loaded:
            gb = loaded.size_vram_bytes / BYTES_PER_GB
            if gb > 0:
                out[(host_id, loaded.name)] = gb
                if loaded.name.endswith(":latest"):
                    out[(host_id, loaded.name.removesuffix(":latest"))] = gb
    return out


def derive_resident(
    observations: Mapping[str, HostObservation],
    since: Mapping[str, Mapping[str, float | None]],
    now: float,
) -> dict[str, dict[str, ResidentModel]]:
    """Host id -> tagged model name -> :class:`ResidentModel`, for reachable hosts, models whose
    keep-alive has not run out (as warm states count them)."""
    out: dict[str, dict[str, ResidentModel]] = {}
    for host_id, obs in observations.items():
        if not obs.reachable:
            continue
        first = since.get(host_id, {})
        out[host_id] = {
            tagged(m.name): ResidentModel(
                tagged(m.name), m.size_vram_bytes / BYTES_PER_GB, m.expires_at, first.get(tagged(m.name))
            )
            for m in obs.loaded
            if m.expires_at is None or m.expires_at > now
        }
    return out


# --- GPU memory ------------------------------------------------------------------------------------------


def derive_host_memory(matrix: Matrix, observations: Mapping[str, HostObservation]) -> dict[str, HostMemory]:
    """GPU memory per declared host: NVML where it read this host, else `/api/ps` usage, else declared.

    With both NVML and a poll, used memory is the larger of the driver's figure and the sum of the loaded
    models' ``size_vram``, so free memory is Ollama's own: the smaller of what the driver reports and total
    minus the loaded models' predicted sizes (``server/sched.go`` ``updateFreeSpace``: "picking the
    smallest free value seems prudent", the driver's figure lags an unload)."""
    memory: dict[str, HostMemory] = {}
    for host_id, host in matrix.hosts.items():
        obs = observations.get(host_id)
        gpu = obs.gpu if obs is not None else None
        if gpu is not None and gpu.available and gpu.devices:
            used = sum(d.used_bytes for d in gpu.devices) / BYTES_PER_GB
            if obs is not None and obs.reachable:
                used = max(used, sum(m.size_vram_bytes for m in obs.loaded) / BYTES_PER_GB)
            memory[host_id] = HostMemory(
                total_gb=sum(d.total_bytes for d in gpu.devices) / BYTES_PER_GB,
                used_gb=used,
                source=MemorySource.NVML,
            )
        else:
            why = (gpu.reason or "no GPU found") if gpu is not None else None
            if obs is not None and obs.reachable:
                used = sum(m.size_vram_bytes for m in obs.loaded) / BYTES_PER_GB
                memory[host_id] = HostMemory(host.gpu_memory_gb, used, MemorySource.OLLAMA_PS, why)
            else:
                memory[host_id] = HostMemory(host.gpu_memory_gb, None, MemorySource.DECLARED, why)
    return memory


# --- lockouts --------------------------------------------------------------------------------------------


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def budget_lockout(
    daily_spend_usd: float, budget_usd: float | None, day: date, locked_day: date | None
) -> date | None:
    """The UTC day a budget lockout is in force for, or None.

    Set when `daily_spend_usd` (the spend of `day`) reaches `budget_usd`; it holds for the rest of that UTC
    day and clears on the next one. No budget (None), no lockout.
    """
    if locked_day == day:
        return day
    if budget_usd is not None and daily_spend_usd >= budget_usd:
        return day
    return None


def auth_lockout(locked: bool, status: int | None) -> bool:
    """Next auth-lockout state after a provider answered `status` (None: no HTTP answer at all).

    401/403 locks; a success (2xx) clears; anything else (429, 5xx, connection errors) says nothing about the
    credentials and leaves it as it was. An operator clears it by passing the profile out of the lock set.
    """
    if status in (401, 403):
        return True
    if status is not None and 200 <= status < 300:
        return False
    return locked


def sharing_credentials(matrix: Matrix, key: str) -> tuple[str, ...]:
    """Profiles that share `key`'s provider and api_base: a 401 from one is a bad key for all of them."""
    p = matrix.profiles[key]
    return tuple(
        k for k, q in matrix.profiles.items() if q.provider == p.provider and q.api_base == p.api_base
    )


def next_auth_lockouts(
    matrix: Matrix, current: Mapping[str, str], key: str, status: int | None
) -> dict[str, str]:
    """The auth lockouts (profile key -> why) after profile `key`'s provider answered `status`.

    A 401/403 locks every profile behind the same credentials (:func:`sharing_credentials`), keeping the
    reason of any already locked; a success from a locked profile clears them all; anything else
    (:func:`auth_lockout` says what counts) leaves the book as it was.
    """
    was_locked = key in current
    locked = auth_lockout(was_locked, status)
    if status in (401, 403):
        return {**dict.fromkeys(sharing_credentials(matrix, key), f"provider answered {status}"), **current}
    if was_locked and not locked:
        shared = set(sharing_credentials(matrix, key))
        return {k: why for k, why in current.items() if k not in shared}
    return dict(current)


def resolve_lockouts(
    matrix: Matrix, *, auth: Mapping[str, str] = MappingProxyType({}), budget_reason: str | None = None
) -> dict[str, Lockout]:
    """Live lockouts per profile key.

    `auth` maps locked keys to a reason; `budget_reason` (given when the budget lockout is in force) locks
    every cloud profile. Auth wins over budget: it needs an operator, budget only waits for the next day.
    """
    lockouts: dict[str, Lockout] = {}
    for p in matrix.profiles.values():
        if p.key in auth:
            lockouts[p.key] = Lockout(LockoutState.AUTH, auth[p.key])
        elif budget_reason is not None and not p.is_local:
            lockouts[p.key] = Lockout(LockoutState.BUDGET, budget_reason)
    return lockouts


# --- everything together ---------------------------------------------------------------------------------


def build_overlay(
    matrix: Matrix,
    observations: Mapping[str, HostObservation],
    *,
    now: float,
    last_served: Mapping[str, float] = MappingProxyType({}),
    in_flight: Collection[str] = frozenset(),
    hot_window_s: float = HOT_WINDOW_S,
    max_age_s: float | None = None,
    auth: Mapping[str, str] = MappingProxyType({}),
    budget_reason: str | None = None,
    since: Mapping[str, Mapping[str, float | None]] = MappingProxyType({}),
    observed_gb: Mapping[tuple[str, str], float] | None = None,
) -> LiveOverlay:
    """One overlay from one round of observations and the current lockout inputs; ``since`` and
    ``observed_gb`` are what the process kept across rounds (:func:`next_since`, :func:`observed_sizes`;
    ``observed_gb`` ``None``: this round's sizes only)."""
    return LiveOverlay(
        warm_states=derive_warm_states(
            matrix, observations, last_served, now, hot_window_s, in_flight=in_flight, max_age_s=max_age_s
        ),
        lockouts=resolve_lockouts(matrix, auth=auth, budget_reason=budget_reason),
        memory=derive_host_memory(matrix, observations),
        observed_at=max((o.observed_at for o in observations.values()), default=None),
        resident=derive_resident(observations, since, now),
        observed_gb=observed_sizes({}, observations) if observed_gb is None else observed_gb,
    )
