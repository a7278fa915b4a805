"""Loading one more copy of a model before requests line up for it: the prewarm rule (pure: values in, values
out; the hooks do the load, :mod:`litellm_hooks.prewarm`).

A greedy ranker places each request on its own: a burst of code requests lines up behind the two slots of the
one coder that is resident, each one finding the line shorter than a cold load elsewhere, until the line is
longer than a load and the next request pays for the load itself. Loading a copy as soon as a group's demand
nears its resident slots lets the later requests of the burst find it warm (or its load under way, priced as
such).

**The rule.** After a local pick, a model group's *demand* is the requests in flight on its local deployments
(this worker's count, the new one included) and its *resident slots* are the parallel slots of every copy that
is resident (warm or hot in the last ``/api/ps``) or loading (a pick or a prewarm started its load and it has
not answered yet): each copy's ``num_parallel``, else its host's, as Ollama gives each loaded model
``OLLAMA_NUM_PARALLEL`` slots. When ``demand > share * slots`` (default ``share = 0.75``), at least two
requests are in flight (one is no burst: an agent's calls one after another never load a second copy of a
one-slot model) and no prewarm of the group is under way in this worker, one more copy is loaded: the ranker
ranks the group's deployments for the same request with every resident or loading copy set aside
(:func:`set_aside`) and every deployment whose breaker or host's breaker is open or half-open (a prewarm is no
trial), and its pick is taken if it is local and cold (:func:`candidate`), placed as the ranker placed it: in
free memory, or after evicting idle models exactly as a request's own pick could (the eviction rules of
:mod:`torchrouter_core.eviction`: never a model with requests in flight, none served within the hot window,
loaded less than ``min_residency_s`` ago or whose own load evicted another less than ``hold_s`` ago, the
charge of each victim's recent use priced in the ranking; ``TORCHROUTER_EVICTION=off`` plans no eviction, for
a prewarm either). Its memory is reserved in the VRAM ledger like any cold pick's (a refused reservation means
it does not fit, and nothing loads).

**Why these numbers.** The fleet benchmark (``benchmarks/bench_fleet.py``, the fleet
``benchmarks/fleets/hard``, seed 7; BENCHMARKS.md) measured TorchRouter's p95 at 1.52-2.07x the lower bound
without prewarm (four runs), 1.28-1.31x with this rule (six runs), 1.46x with ``share = 1.0`` (a copy only
once a request would wait) and 1.39x with ``share = 0.5``; a prewarm limited to free memory made it worse
(1.71x at 0.75, 1.62x at 1.0): it filled the free memory early with copies that were not the ones a later
burst needed, and left the burst fewer evictable hosts. The pure-simulation replay
(``benchmarks/fleet_reference.py``) agrees in direction: its greedy informed router goes from 1.52x to 1.16x
(seeds 1-3: 1.24-1.30x) with a like rule (share 0.75, evicting only idle models unused for a minute), and to
1.35x (1.27-1.36x) with one limited to free memory.

With no slots resident there is nothing to add to: the pick itself loads the first copy.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from capability_matrix.model import Matrix, Profile
from torchrouter_core.env import finite_float
from torchrouter_core.usability import RESIDENT

SHARE: Final = 0.75  # demand above this share of the resident slots loads one more copy
MAX_SHARE: Final = 4.0  # above it the line is three times the slots before a copy loads: that is "off"
MIN_DEMAND: Final = 2  # one request in flight is no burst: an agent's calls one after another need no copy


@dataclass(frozen=True, slots=True)
class PrewarmRules:
    """``enabled``: whether the hooks prewarm at all; ``share``: the demand, as a share of the resident
    slots, above which one more copy is loaded (in (0, 4]; 1.0: only once a request would wait for a slot)."""

    enabled: bool = True
    share: float = SHARE


def parse_prewarm_rules(text: str) -> PrewarmRules:
    """``TORCHROUTER_PREWARM``: ``"off"``, or ``"share=0.75"`` (empty: the defaults) -> :class:`PrewarmRules`.
    Raises ValueError naming the bad part (a share must be in (0, :data:`MAX_SHARE`])."""
    text = text.strip()
    if not text:
        return PrewarmRules()
    if text.lower() in ("off", "false", "0", "no"):
        return PrewarmRules(enabled=False)
    name, eq, raw = (x.strip() for x in text.partition("="))
    number = finite_float(raw)
    if not eq or name != "share" or number is None or "," in raw:
        raise ValueError(f"prewarm {text!r}: expected off, or share=<number in (0, 4]>")
    if not 0 < number <= MAX_SHARE:
        raise ValueError(
            f"prewarm {text!r}: share must be > 0 and at most {MAX_SHARE:g} (demand above share x resident"
            " slots; to never prewarm, say off)"
        )
    return PrewarmRules(share=number)


def pressure(
    matrix: Matrix, keys: Iterable[str], in_flight: Mapping[str, int], loading: Collection[str]
) -> tuple[int, int]:
    """``(demand, slots)`` of a model group: requests in flight on its local deployments among ``keys``, and
    the parallel slots of those that are resident or in ``loading``. Keys not in the matrix, and cloud
    profiles, count for neither."""
    demand = slots = 0
    for key in keys:
        profile = matrix.profiles.get(key)
        if profile is None or not profile.is_local:
            continue
        demand += in_flight.get(key, 0)
        if profile.warm_state in RESIDENT or key in loading:
            slots += matrix.parallel_slots(profile)
    return demand, slots


def wanted(rules: PrewarmRules, demand: int, slots: int) -> bool:
    """Whether to load one more copy: enabled, some copy resident (else the pick loads the first), at least
    :data:`MIN_DEMAND` requests in flight and ``demand > share * slots``."""
    return rules.enabled and slots > 0 and demand >= MIN_DEMAND and demand > rules.share * slots


def set_aside(matrix: Matrix, keys: Iterable[str], loading: Collection[str]) -> dict[str, str]:
    """Profile key -> why the prewarm's ranking leaves it out: ``prewarm:resident`` (warm or hot),
    ``prewarm:loading``, ``prewarm:cloud`` (nothing to load) or ``prewarm:unknown`` (not in the matrix)."""
    out: dict[str, str] = {}
    for key in keys:
        profile = matrix.profiles.get(key)
        if profile is None:
            out[key] = "prewarm:unknown"
        elif not profile.is_local:
            out[key] = "prewarm:cloud"
        elif key in loading:
            out[key] = "prewarm:loading"
        elif profile.warm_state in RESIDENT:
            out[key] = "prewarm:resident"
    return out


def candidate(chosen: Profile | None) -> Profile | None:
    """The ranker's pick for a prewarm, if it is one to load: local and not resident (its placement, free
    memory or the evictions the rules allow, is the ranker's). ``None`` otherwise."""
    if chosen is None or not chosen.is_local or chosen.warm_state in RESIDENT:
        return None
    return chosen
