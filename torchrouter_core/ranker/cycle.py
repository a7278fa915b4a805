"""One ranking cycle over a group's candidates: filter -> weighted score -> pick, each stage timed.

``rank()`` raises :class:`NoCandidate` when every candidate is filtered out; otherwise it returns a
:class:`Ranking` with every candidate's score and every rejection's reason. Scores are clamped to [0, 1]
and weighted here, not in the scorers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from capability_matrix.model import Profile
from torchrouter_core.ranker import filters, pickers, scorers
from torchrouter_core.ranker.interfaces import (
    Filter,
    FleetSnapshot,
    NoCandidate,
    Picker,
    Ranking,
    RequestNeeds,
)


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def rank(
    group: str,
    candidates: Sequence[Profile],
    needs: RequestNeeds,
    *,
    fleet: FleetSnapshot | None = None,
    weights: Mapping[str, float] = scorers.DEFAULT_WEIGHTS,
    active_filters: Sequence[Filter] = filters.DEFAULT_FILTERS,
    picker: Picker = pickers.highest_score,
) -> Ranking:
    t0 = time.perf_counter()
    rejected: dict[str, str] = {}
    kept: list[Profile] = []
    fleet = fleet or FleetSnapshot()
    for profile in candidates:
        for rule in active_filters:  # a plain loop: this runs per candidate per request
            reason = rule(profile, needs, fleet)
            if reason is not None:
                rejected[profile.key] = reason
                break
        else:
            kept.append(profile)
    t1 = time.perf_counter()
    if not kept:
        raise NoCandidate(group, rejected)
    total_weight = sum(weights.values()) or 1.0
    plan = [(name, scorers.SCORERS[name], w / total_weight) for name, w in weights.items()]
    columns: list[list[float]] = [[] for _ in plan]
    scored: list[tuple[Profile, float]] = []
    for p in kept:
        score = 0.0
        for column, (_, scorer, share) in zip(columns, plan, strict=True):
            value = _clamp(scorer(p, fleet))
            column.append(value)
            score += value * share
        scored.append((p, score))
    t2 = time.perf_counter()
    chosen = picker(scored)
    t3 = time.perf_counter()
    return Ranking(
        chosen=chosen,
        rejected=rejected,
        keys=[p.key for p, _ in scored],
        score_list=[score for _, score in scored],
        term_names=tuple(name for name, _, _ in plan),
        term_values=columns,
        timings_ms={"filter": (t1 - t0) * 1e3, "score": (t2 - t1) * 1e3, "pick": (t3 - t2) * 1e3},
        ttft_s={chosen.key: round(scorers.estimated_ttft_s(chosen, fleet), 4)},
    )
