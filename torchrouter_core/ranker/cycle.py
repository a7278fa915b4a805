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
        reason = next((r for f in active_filters if (r := f(profile, needs, fleet)) is not None), None)
        if reason is None:
            kept.append(profile)
        else:
            rejected[profile.key] = reason
    t1 = time.perf_counter()
    if not kept:
        raise NoCandidate(group, rejected)
    total_weight = sum(weights.values()) or 1.0
    terms = {p.key: {name: _clamp(scorers.SCORERS[name](p, fleet)) for name in weights} for p in kept}
    scored = [(p, sum(w * terms[p.key][name] for name, w in weights.items()) / total_weight) for p in kept]
    t2 = time.perf_counter()
    chosen = picker(scored)
    t3 = time.perf_counter()
    return Ranking(
        chosen=chosen,
        scores={p.key: round(s, 4) for p, s in scored},
        rejected=rejected,
        timings_ms={"filter": (t1 - t0) * 1e3, "score": (t2 - t1) * 1e3, "pick": (t3 - t2) * 1e3},
        terms={key: {name: round(v, 4) for name, v in t.items()} for key, t in terms.items()},
        ttft_s={chosen.key: round(scorers.estimated_ttft_s(chosen, fleet), 4)},
    )
