"""The ranker's interfaces in one place: what a cycle reads, what its plugins are, what it answers.

- :class:`RequestNeeds` -- what the request needs of a deployment, computed once in the classifier and
  carried to the hooks by :mod:`torchrouter_core.contract`.
- :class:`FleetSnapshot` -- the fleet state one cycle reads: requests in flight per deployment, the
  parallel slots behind each, and what each host can still load
  (:class:`~torchrouter_core.usability.HostRoom`).
- :class:`Filter`, :class:`Scorer`, :class:`Picker` -- the three plugin kinds (``filters.py``,
  ``scorers.py``, ``pickers.py``).
- :class:`RankOutcome` -- how a cycle ended, a closed set fit for a metric label.
- :class:`Ranking` (a pick) and :class:`NoCandidate` (every candidate filtered out; carries why).

The shape (filter -> weighted score in [0, 1] -> pick, a typed "nothing left" error, an outcome enum)
follows kubernetes-sigs/gateway-api-inference-extension's endpoint-picker scheduler.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from capability_matrix.model import Profile, WarmState
from torchrouter_core.eviction import UNLOAD_S
from torchrouter_core.memory import claim_gb
from torchrouter_core.usability import FITS, HostRoom, Placement, place


@dataclass(frozen=True, slots=True)
class RequestNeeds:
    """``prompt_tokens``: approximate tokens of the messages and tool schemas (chars / 4);
    ``max_output_tokens``: the output the request may ask for (0: not given); ``needs_tools``: tools or
    legacy ``functions`` were offered; ``modalities``: the inputs the model must read (``text``, ``image``,
    ``audio``, ``file``; :func:`torchrouter_core.needs.input_modalities`)."""

    prompt_tokens: int = 0
    max_output_tokens: int = 0
    needs_tools: bool = False
    modalities: frozenset[str] = frozenset({"text"})


@dataclass(frozen=True)
class FleetSnapshot:
    """Requests in flight per profile key, the parallel slots behind each (from its host), and each host's
    room (host id -> :class:`HostRoom`, residents and their eviction rules included; ``rooms`` ``None``:
    room is not checked); for the expected time to first token: observed service seconds per request,
    cold-load seconds and prompt seconds per token (``prompt_s_per_token``), per profile key (absent: the
    defaults in :mod:`.scorers`), and the request's prompt tokens; every ``size_vram`` seen (``(host id,
    model)`` -> GB: what a load claims, :func:`torchrouter_core.memory.claim_gb`) and the seconds each
    evicted model adds (``unload_s``)."""

    in_flight: Mapping[str, int] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)
    rooms: Mapping[str, HostRoom] | None = None
    service_s: Mapping[str, float] = field(default_factory=dict)
    load_s: Mapping[str, float] = field(default_factory=dict)
    prompt_s_per_token: Mapping[str, float] = field(default_factory=dict)
    # Profile key -> seconds left of a load a pick started that has not answered yet (ObservedTimes):
    # the copy may be listed resident already, but answers only after it.
    loading_s: Mapping[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    # Profile key -> why it is refused for this request: its circuit breaker or its host's
    # (torchrouter_core.breaker), or ``already_tried`` (an earlier attempt of the same request used it).
    breakers: Mapping[str, str] = field(default_factory=dict)
    observed_gb: Mapping[tuple[str, str], float] = field(default_factory=dict)
    unload_s: float = UNLOAD_S
    # id(profile) -> (profile, its placement): the same candidate is placed once per cycle
    _placements: dict[int, tuple[Profile, Placement | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def placement(self, profile: Profile) -> Placement | None:
        """Where a pick of ``profile`` would load its model (:func:`torchrouter_core.usability.place`):
        :data:`~torchrouter_core.usability.FITS` for a resident or cloud profile, or when rooms are not
        checked; ``None`` when a cold one has no room, even by evicting. Memoised per snapshot."""
        if not profile.is_local or profile.warm_state is not WarmState.COLD or self.rooms is None:
            return FITS
        memo = self._placements.get(id(profile))
        if memo is not None and memo[0] is profile:
            return memo[1]
        found = place(claim_gb(profile, self.observed_gb), self.rooms.get(profile.host_id), profile.model)
        self._placements[id(profile)] = (profile, found)
        return found

    def utilization(self, key: str) -> float:
        """In flight / slots, 0 when idle; a deployment with no known slots is full once anything runs."""
        slots = self.slots.get(key, 0)
        busy = self.in_flight.get(key, 0)
        if slots <= 0:
            return 0.0 if busy == 0 else 1.0
        return busy / slots


class Filter(Protocol):
    """Drops a candidate that cannot carry the request: a short stable reason, or ``None`` to keep it."""

    def __call__(self, profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot, /) -> str | None: ...


class Scorer(Protocol):
    """How good a candidate is, in [0, 1] (higher is better); the cycle clamps and weights it."""

    def __call__(self, profile: Profile, fleet: FleetSnapshot, /) -> float: ...


class Picker(Protocol):
    """Chooses one candidate from the scored ones (never empty)."""

    def __call__(self, scored: Sequence[tuple[Profile, float]], /) -> Profile: ...


class RankOutcome(StrEnum):
    """How a ranking ended (a closed set: safe as a metric label and an event field)."""

    ROUTED = "routed"  # a deployment was picked
    NO_CANDIDATE = "no_candidate"  # every candidate was filtered out (LiteLLM then falls back)
    HOOK_ERROR = "hook_error"  # the hooks failed and let LiteLLM choose among every deployment


@dataclass(frozen=True)
class Ranking:
    """A pick and how it came about. The kept candidates in columns, aligned: ``keys``, their weighted
    ``score_list`` and, per term named in ``term_names``, the clamped values (``term_values``, one column
    per term: a 1,000-candidate cycle allocates no per-candidate containers). ``scored``, ``scores`` and
    ``terms`` are the same as rows and rounded dicts, built on first read; ``ttft_s``: the pick's
    estimated seconds to first token (its own: no eviction charge)."""

    chosen: Profile
    rejected: Mapping[str, str]
    keys: Sequence[str] = ()
    score_list: Sequence[float] = ()
    term_names: tuple[str, ...] = ()
    term_values: Sequence[Sequence[float]] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    outcome: RankOutcome = RankOutcome.ROUTED
    ttft_s: Mapping[str, float] = field(default_factory=dict)  # key -> estimated time to first token

    def row(self, i: int) -> tuple[str, float, tuple[float, ...]]:
        """The ``i``-th kept candidate: ``(key, weighted score, clamped value per term)``."""
        return self.keys[i], self.score_list[i], tuple(column[i] for column in self.term_values)

    @functools.cached_property
    def scored(self) -> list[tuple[str, float, tuple[float, ...]]]:
        """Every kept candidate as a :meth:`row`, in candidate order."""
        return [self.row(i) for i in range(len(self.keys))]

    @functools.cached_property
    def scores(self) -> Mapping[str, float]:
        """Key -> weighted score, rounded to 4 places, every kept candidate."""
        return {key: round(score, 4) for key, score in zip(self.keys, self.score_list, strict=True)}

    @functools.cached_property
    def terms(self) -> Mapping[str, Mapping[str, float]]:
        """Key -> term -> clamped value, rounded to 4 places, every kept candidate."""
        names = self.term_names
        return {
            key: {n: round(v, 4) for n, v in zip(names, values, strict=True)}
            for key, _, values in self.scored
        }

    def best_indices(self, n: int) -> list[int]:
        """Where the ``n`` best kept candidates are in the columns, in pick order (highest score first,
        ties by key)."""
        keys, scores = self.keys, self.score_list
        order = sorted(range(len(keys)), key=keys.__getitem__)  # two stable C sorts: score, then key
        order.sort(key=scores.__getitem__, reverse=True)
        return order[:n]

    def best(self, n: int) -> list[tuple[str, float, tuple[float, ...]]]:
        """The ``n`` best kept candidates as rows, in pick order (highest score first, ties by key)."""
        return [self.row(i) for i in self.best_indices(n)]


class NoCandidate(Exception):
    """Every candidate was filtered out; ``rejected`` says why for each (profile key -> reason)."""

    outcome = RankOutcome.NO_CANDIDATE

    def __init__(self, group: str, rejected: Mapping[str, str]) -> None:
        reasons = ", ".join(f"{key}: {why}" for key, why in sorted(rejected.items())) or "no deployments"
        super().__init__(f"no deployment in group {group!r} can take this request ({reasons})")
        self.group = group
        self.rejected = dict(rejected)
