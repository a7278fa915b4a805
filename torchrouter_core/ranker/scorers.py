"""Scorers: each maps a candidate to [0, 1]; the cycle clamps and weights them from configuration.

A scorer reads the profile (live warm state applied) and the :class:`FleetLoad` the hooks keep:
how busy each deployment is right now. Higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from capability_matrix import Profile, WarmState


@dataclass(frozen=True)
class FleetLoad:
    """Requests in flight per profile key and the parallel slots behind each (from the host)."""

    in_flight: Mapping[str, int] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)

    def utilization(self, key: str) -> float:
        slots = self.slots.get(key, 0)
        busy = self.in_flight.get(key, 0)
        if slots <= 0:
            return 0.0 if busy == 0 else 1.0
        return busy / slots


Scorer = Callable[[Profile, FleetLoad], float]

_WARM_SCORE = {WarmState.HOT: 1.0, WarmState.WARM: 0.8, WarmState.UNKNOWN: 0.3, WarmState.COLD: 0.0}


def warm(profile: Profile, load: FleetLoad) -> float:
    # Cloud deployments are always "loaded"; a cold local model costs a load of seconds to minutes.
    return 1.0 if not profile.is_local else _WARM_SCORE[profile.warm_state]


def quality(profile: Profile, load: FleetLoad) -> float:
    return profile.quality_score


def speed(profile: Profile, load: FleetLoad) -> float:
    return profile.speed_score


def idle(profile: Profile, load: FleetLoad) -> float:
    # A saturated deployment makes the next request wait in Ollama's own line, invisible to our queues;
    # weighted against `warm`, a busy warm model loses to an idle cold one, which is then loaded.
    return 1.0 - load.utilization(profile.key)


DEFAULT_WEIGHTS: dict[str, float] = {"warm": 0.3, "quality": 0.25, "speed": 0.15, "idle": 0.3}
SCORERS: dict[str, Scorer] = {"warm": warm, "quality": quality, "speed": speed, "idle": idle}
