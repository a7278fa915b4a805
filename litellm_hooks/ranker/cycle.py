"""One ranking cycle over a group's candidates."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from capability_matrix import Profile
from litellm_hooks.ranker import filters, pickers, scorers
from litellm_hooks.ranker.scorers import FleetLoad


@dataclass(frozen=True)
class RequestNeeds:
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    needs_tools: bool = False
    modalities: frozenset[str] = frozenset({"text"})  # what the model must read (classifier.feasibility)


@dataclass(frozen=True)
class Ranking:
    chosen: Profile
    scores: Mapping[str, float]
    rejected: Mapping[str, str]
    timings_ms: Mapping[str, float] = field(default_factory=dict)


class NoCandidate(Exception):
    """Every candidate was filtered out; ``rejected`` says why for each."""

    def __init__(self, group: str, rejected: Mapping[str, str]) -> None:
        reasons = ", ".join(f"{key}: {why}" for key, why in sorted(rejected.items())) or "no deployments"
        super().__init__(f"no deployment in group {group!r} can take this request ({reasons})")
        self.group = group
        self.rejected = dict(rejected)


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def rank(
    group: str,
    candidates: Sequence[Profile],
    needs: RequestNeeds,
    *,
    load: FleetLoad | None = None,
    weights: Mapping[str, float] = scorers.DEFAULT_WEIGHTS,
    active_filters: Sequence[filters.Filter] = filters.DEFAULT_FILTERS,
) -> Ranking:
    t0 = time.perf_counter()
    rejected: dict[str, str] = {}
    kept: list[Profile] = []
    for profile in candidates:
        reason = next((r for f in active_filters if (r := f(profile, needs)) is not None), None)
        if reason is None:
            kept.append(profile)
        else:
            rejected[profile.key] = reason
    t1 = time.perf_counter()
    if not kept:
        raise NoCandidate(group, rejected)
    load = load or FleetLoad()
    total_weight = sum(weights.values()) or 1.0
    scored = [
        (p, sum(w * _clamp(scorers.SCORERS[name](p, load)) for name, w in weights.items()) / total_weight)
        for p in kept
    ]
    t2 = time.perf_counter()
    chosen = pickers.highest_score(scored)
    t3 = time.perf_counter()
    return Ranking(
        chosen=chosen,
        scores={p.key: round(s, 4) for p, s in scored},
        rejected=rejected,
        timings_ms={"filter": (t1 - t0) * 1e3, "score": (t2 - t1) * 1e3, "pick": (t3 - t2) * 1e3},
    )
