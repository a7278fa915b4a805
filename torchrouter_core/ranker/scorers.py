"""Scorers: each maps a candidate to [0, 1]; the cycle clamps and weights them from configuration.

A scorer is a :class:`~torchrouter_core.ranker.interfaces.Scorer`: it reads the profile (live warm state
applied) and the :class:`FleetSnapshot` (how busy each deployment is right now). Higher is better.
"""

from __future__ import annotations

from capability_matrix.model import Profile, WarmState
from torchrouter_core.ranker.interfaces import FleetSnapshot, Scorer

_WARM_SCORE = {WarmState.HOT: 1.0, WarmState.WARM: 0.8, WarmState.UNKNOWN: 0.3, WarmState.COLD: 0.0}


def warm(profile: Profile, fleet: FleetSnapshot) -> float:
    # Cloud deployments are always "loaded"; a cold local model costs a load of seconds to minutes.
    return 1.0 if not profile.is_local else _WARM_SCORE[profile.warm_state]


def quality(profile: Profile, fleet: FleetSnapshot) -> float:
    return profile.quality_score


def speed(profile: Profile, fleet: FleetSnapshot) -> float:
    return profile.speed_score


def idle(profile: Profile, fleet: FleetSnapshot) -> float:
    # A saturated deployment makes the next request wait in Ollama's own line, invisible to our queues;
    # weighted against `warm`, a busy warm model loses to an idle cold one, which is then loaded.
    return 1.0 - fleet.utilization(profile.key)


DEFAULT_WEIGHTS: dict[str, float] = {"warm": 0.3, "quality": 0.25, "speed": 0.15, "idle": 0.3}
SCORERS: dict[str, Scorer] = {"warm": warm, "quality": quality, "speed": speed, "idle": idle}
