"""Service and cold-load times the ranker learns per deployment (pure: values in, values out).

Moving averages (weight ``alpha`` for each new sample) of a request's service time (end - start of a
successful call) and of a cold load (time to first token of a call whose pick was ``cold``: the load
dominates it), per profile key; :func:`~torchrouter_core.ranker.scorers.estimated_ttft_s` reads them
through :class:`~torchrouter_core.ranker.interfaces.FleetSnapshot`. Keys are the matrix's profile keys
(bounded by it); a sample that is not a finite non-negative number is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ObservedTimes:
    alpha: float = 0.3
    service_s: dict[str, float] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)

    def _blend(self, book: dict[str, float], key: str, sample: float | None) -> None:
        if sample is None or not math.isfinite(sample) or sample < 0:
            return
        old = book.get(key)
        book[key] = sample if old is None else old + self.alpha * (sample - old)

    def record(self, key: str, *, service_s: float | None, ttft_s: float | None, was_cold: bool) -> None:
        """One successful call on ``key``: its service time, and its TTFT as a load sample when cold."""
        self._blend(self.service_s, key, service_s)
        if was_cold:
            self._blend(self.load_s, key, ttft_s)
