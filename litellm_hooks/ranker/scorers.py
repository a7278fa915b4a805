"""Scorers: each maps a profile to [0, 1]; the cycle clamps and weights them from configuration."""

from __future__ import annotations

from collections.abc import Callable

from capability_matrix import Profile, WarmState

Scorer = Callable[[Profile], float]

_WARM_SCORE = {WarmState.HOT: 1.0, WarmState.WARM: 0.8, WarmState.UNKNOWN: 0.3, WarmState.COLD: 0.0}


def warm(profile: Profile) -> float:
    # Cloud deployments are always "loaded"; a cold local model costs a load of seconds to minutes.
    return 1.0 if not profile.is_local else _WARM_SCORE[profile.warm_state]


def quality(profile: Profile) -> float:
    return profile.quality_score


def speed(profile: Profile) -> float:
    return profile.speed_score


DEFAULT_WEIGHTS: dict[str, float] = {"warm": 0.4, "quality": 0.35, "speed": 0.25}
SCORERS: dict[str, Scorer] = {"warm": warm, "quality": quality, "speed": speed}
