"""The capability matrix as values: hosts, profiles and the immutable `Matrix` that holds them.

This module owns the in-memory shape of the fleet contract and nothing else: no files, no I/O, no validation
(that is `loader.py`). Everything here is frozen, so a `Matrix` can be shared between the request path and a
background reload without locks; a reload swaps the whole object.

Memory is in GB meaning GiB (2**30 bytes), as Ollama and the GPU vendors count it; `BYTES_PER_GB` converts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

BYTES_PER_GB = 1 << 30


class WarmState(StrEnum):
    """How quickly a profile can answer: declared in the file, derived from `/api/ps` at run time."""

    COLD = "cold"  # host up, model not resident: the next request pays a load (10 s to minutes)
    WARM = "warm"  # resident in GPU memory
    HOT = "hot"  # resident and serving now (or within the hot window)
    UNKNOWN = "unknown"  # host unreachable or never observed


class LockoutState(StrEnum):
    """Why a profile must not be picked. `NONE` means it may."""

    NONE = "none"
    CODEX = "codex"  # operator lockout, only ever set in the file
    AUTH = "auth"  # the provider answered 401/403
    BUDGET = "budget"  # daily cloud spend passed the configured budget


class HardwareClass(StrEnum):
    LOCAL_GPU = "local_gpu"
    CLOUD_GPU = "cloud_gpu"
    OFFLOAD = "offload"  # local, partly in system RAM: vram_gb is the GPU-resident part only


class Provider(StrEnum):
    OLLAMA = "ollama"  # a local fleet host, native API (LiteLLM `ollama_chat/`)
    OPENAI = "openai"  # a cloud, OpenAI-compatible API (LiteLLM `openai/`)


@dataclass(frozen=True, slots=True)
class Host:
    """A local GPU host as declared by the operator: the capacity used when NVML or `/api/ps` cannot tell."""

    host_id: str
    api_base: str
    gpu_memory_gb: float
    num_parallel: int
    max_loaded_models: int
    # Ollama's OLLAMA_GPU_OVERHEAD on this host (GB kept free on the GPU; Ollama's default 0)
    gpu_overhead_gb: float = 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    """One model on one host, or a cloud model: one LiteLLM deployment, keyed `<host>/<provider>/<model>`."""

    key: str
    lane: str
    host_id: str
    provider: Provider
    model: str
    api_base: str
    context_window: int
    supports_tools: bool
    reasoning: bool
    requires_think_false: bool
    hardware_class: HardwareClass
    preemptible: bool
    lockout_state: LockoutState
    warm_state: WarmState
    vram_gb: float
    speed_score: float
    quality_score: float
    # What the model can read (MODALITIES); text only unless the matrix says more.
    input_modalities: frozenset[str] = frozenset({"text"})
    num_parallel: int | None = None  # Ollama's parallel slots for this model; None: the host's num_parallel
    load_time_s: float | None = None  # seconds to load cold here, before one is observed; None: from vram_gb

    @property
    def is_local(self) -> bool:
        return self.provider == Provider.OLLAMA

    def to_json(self) -> dict[str, Any]:
        """The profile as `/capability-matrix` shows it: every field but the key (which is the map's key)."""
        return {
            "lane": self.lane,
            "host_id": self.host_id,
            "provider": self.provider.value,
            "model": self.model,
            "api_base": self.api_base,
            "context_window": self.context_window,
            "supports_tools": self.supports_tools,
            "reasoning": self.reasoning,
            "requires_think_false": self.requires_think_false,
            "hardware_class": self.hardware_class.value,
            "preemptible": self.preemptible,
            "lockout_state": self.lockout_state.value,
            "warm_state": self.warm_state.value,
            "vram_gb": self.vram_gb,
            "speed_score": self.speed_score,
            "quality_score": self.quality_score,
            "input_modalities": sorted(self.input_modalities),
            **({"num_parallel": self.num_parallel} if self.num_parallel is not None else {}),
            **({"load_time_s": self.load_time_s} if self.load_time_s is not None else {}),
        }


# Input modalities a profile may declare: the kinds of OpenAI content part a model can read.
MODALITIES = ("text", "image", "audio", "file")


def profile_key(host_id: str, provider: str, model: str) -> str:
    return f"{host_id}/{provider}/{model}"


class LiveState(Protocol):
    """What `Matrix.with_live` needs from a live overlay (`live.LiveOverlay` is one)."""

    @property
    def warm_states(self) -> Mapping[str, WarmState]: ...

    @property
    def lockout_states(self) -> Mapping[str, LockoutState]: ...


@dataclass(frozen=True, slots=True)
class Matrix:
    """The whole fleet contract. Immutable: mappings are read-only views, helpers are precomputed."""

    schema_version: str
    hosts: Mapping[str, Host]
    profiles: Mapping[str, Profile]
    _by_lane: Mapping[str, tuple[Profile, ...]] = field(init=False, repr=False, compare=False)
    _host_of: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _local_by_model: Mapping[str, tuple[Profile, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Copy into private dicts so a caller keeping the dicts it passed in cannot change us.
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))
        object.__setattr__(self, "profiles", MappingProxyType(dict(self.profiles)))
        by_lane: dict[str, list[Profile]] = {}
        by_model: dict[str, list[Profile]] = {}
        for profile in self.profiles.values():
            by_lane.setdefault(profile.lane, []).append(profile)
            if profile.is_local:
                by_model.setdefault(profile.model, []).append(profile)
        object.__setattr__(
            self, "_by_lane", MappingProxyType({lane: tuple(ps) for lane, ps in sorted(by_lane.items())})
        )
        object.__setattr__(
            self, "_host_of", MappingProxyType({k: p.host_id for k, p in self.profiles.items()})
        )
        object.__setattr__(
            self, "_local_by_model", MappingProxyType({m: tuple(ps) for m, ps in by_model.items()})
        )

    def lanes(self) -> tuple[str, ...]:
        """Every lane named by a profile, sorted."""
        return tuple(self._by_lane)

    def in_lane(self, lane: str) -> tuple[Profile, ...]:
        """The lane's profiles in file order; empty for an unknown lane."""
        return self._by_lane.get(lane, ())

    def parallel_slots(self, profile: Profile) -> int:
        """Requests ``profile`` runs at once: its ``num_parallel``, else its host's (Ollama's
        ``OLLAMA_NUM_PARALLEL`` per loaded model); 0 when its host is not declared (a cloud profile)."""
        host = self.hosts.get(profile.host_id)
        return profile.num_parallel or (host.num_parallel if host is not None else 0)

    def host_of(self) -> Mapping[str, str]:
        """Profile key -> its host id (precomputed: the breakers read it on every request)."""
        return self._host_of

    def local_with_model(self, model: str) -> tuple[Profile, ...]:
        """The local profiles serving ``model``, on any host, in file order; empty when none."""
        return self._local_by_model.get(model, ())

    def with_live(self, overlay: LiveState) -> Matrix:
        """A copy with run-time warm and lockout states applied.

        Warm state: the overlay's value replaces the declared one where it has one (cloud profiles keep
        theirs). Lockout: one declared in the file is a floor the overlay cannot lift (an operator's `codex`
        stays); a live `auth` or `budget` lockout applies where the file says `none`.
        """
        warm, locks = overlay.warm_states, overlay.lockout_states
        profiles: dict[str, Profile] = {}
        for key, p in self.profiles.items():
            new_warm = warm.get(key, p.warm_state)
            new_lock = (
                locks.get(key, p.lockout_state) if p.lockout_state == LockoutState.NONE else p.lockout_state
            )
            if new_warm != p.warm_state or new_lock != p.lockout_state:
                p = dataclasses.replace(p, warm_state=new_warm, lockout_state=new_lock)
            profiles[key] = p
        return Matrix(self.schema_version, self.hosts, profiles)

    def to_json(self) -> dict[str, Any]:
        """The body of `GET /capability-matrix`: schema_version, count and the profile map."""
        return {
            "schema_version": self.schema_version,
            "count": len(self.profiles),
            "profiles": {key: p.to_json() for key, p in self.profiles.items()},
        }
