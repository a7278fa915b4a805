"""Scorers: each maps a candidate to [0, 1]; the cycle clamps and weights them from configuration.

A scorer is a :class:`~torchrouter_core.ranker.interfaces.Scorer`: it reads the profile (live warm state
applied) and the :class:`FleetSnapshot` (how busy each deployment is right now). Higher is better.
"""

from __future__ import annotations

from collections.abc import Mapping

from capability_matrix.model import Profile, WarmState
from torchrouter_core.env import finite_float, non_negative
from torchrouter_core.ranker.interfaces import FleetSnapshot, Scorer

# Defaults before anything is observed. Load time: 2 s + 0.4 s per GB, the simulated fleet's model of
# Ollama's cold loads (DESIGN "Facts": 10 s to minutes in the field against ~1.5 s warm).
DEFAULT_SERVICE_S = 2.0  # one request's service time on a slot
LOAD_BASE_S, LOAD_S_PER_GB = 2.0, 0.4
PROMPT_TOKENS_PER_S = 2000.0  # prompt processing at speed_score 1.0 (scaled down by a lower speed_score)
CLOUD_FIRST_TOKEN_S = 0.5  # a cloud call's network and queueing before its first token
TTFT_REFERENCE_S = 2.0  # the time-to-first-token at which the ttft score is one half

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


def load_estimate_s(profile: Profile) -> float:
    """Seconds to load ``profile``'s model cold before any observation: the matrix's ``load_time_s`` when
    the profile has one, else 2 s + 0.4 s per GB of ``vram_gb`` (the short end of Ollama's loads: a fast
    NVMe, page cache warm)."""
    if profile.load_time_s is not None:
        return profile.load_time_s
    return LOAD_BASE_S + LOAD_S_PER_GB * profile.vram_gb


def prompt_prior_s_per_token(profile: Profile) -> float:
    """Seconds a prompt token takes before any is observed: ``1 / (PROMPT_TOKENS_PER_S * speed_score)``
    (``speed_score`` floored at 0.05)."""
    return 1.0 / (PROMPT_TOKENS_PER_S * max(profile.speed_score, 0.05))


def estimated_ttft_s(profile: Profile, fleet: FleetSnapshot) -> float:
    """Expected seconds to the first token: the wait for a slot + a cold load + evictions + prompt.

    Wait: with ``b`` requests in flight on ``n`` slots, ``max(0, b - n + 1) * service / n`` (the line ahead
    drains ``n`` at a time); service is the observed mean (its own, else its model's on other hosts scaled
    by speed: :class:`~torchrouter_core.ranker.observed.ObservedTimes`), else ``DEFAULT_SERVICE_S``. Load:
    what is left of a load a pick started and that has not answered yet (``fleet.loading_s``; for a copy
    not listed yet, only while some is left), else none when the last ``/api/ps`` lists the model (warm,
    hot), else the observed load time, else :func:`load_estimate_s`.
    Evictions: ``fleet.unload_s`` per model the load must unload first (:meth:`FleetSnapshot.placement`).
    Prompt: ``prompt_tokens`` x the seconds per prompt token observed on the deployment
    (``fleet.prompt_s_per_token``, Ollama's own timings), else x :func:`prompt_prior_s_per_token` (a cloud
    profile: always).
    """
    prior = prompt_prior_s_per_token(profile)
    if not profile.is_local:
        return CLOUD_FIRST_TOKEN_S + fleet.prompt_tokens * prior
    prompt = fleet.prompt_tokens * fleet.prompt_s_per_token.get(profile.key, prior)
    slots = max(1, fleet.slots.get(profile.key, 1))
    ahead = max(0, fleet.in_flight.get(profile.key, 0) - slots + 1)
    wait = ahead * fleet.service_s.get(profile.key, DEFAULT_SERVICE_S) / slots
    resident = profile.warm_state in (WarmState.WARM, WarmState.HOT)
    loading = fleet.loading_s.get(profile.key)
    if resident:  # listed by /api/ps; a load a pick started may still be running (0 once it is due)
        load = 0.0 if loading is None else loading
    elif loading:  # not listed yet, part of a load under way left; overdue (0): priced as a whole load
        load = loading
    else:
        load = fleet.load_s.get(profile.key, load_estimate_s(profile))
    placement = fleet.placement(profile) if profile.warm_state is WarmState.COLD else None
    evict = fleet.unload_s * len(placement.victims) if placement is not None else 0.0
    return wait + load + evict + prompt


def eviction_charge_s(profile: Profile, fleet: FleetSnapshot) -> float:
    """Seconds later requests are expected to lose to reloading what a pick of ``profile`` evicts (the
    sum of its victims' charges, :func:`torchrouter_core.eviction.eviction_charge_s`); 0 without one."""
    if profile.warm_state is not WarmState.COLD:
        return 0.0
    placement = fleet.placement(profile)
    return placement.charge_s if placement is not None else 0.0


def expected_cost_s(profile: Profile, fleet: FleetSnapshot) -> float:
    """What the ``ttft`` score compares: this request's expected time to first token plus what its
    evictions are expected to cost later requests."""
    return estimated_ttft_s(profile, fleet) + eviction_charge_s(profile, fleet)


def ttft(profile: Profile, fleet: FleetSnapshot) -> float:
    # 1 at zero, 1/2 at TTFT_REFERENCE_S, falling as 1/t: a saturated warm deployment loses to a cold one
    # on a host with free memory exactly when its wait exceeds that load, and to a load that needs an
    # eviction only when its wait exceeds that load, the unloads and the evicted models' charge.
    return TTFT_REFERENCE_S / (TTFT_REFERENCE_S + expected_cost_s(profile, fleet))


SCORERS: dict[str, Scorer] = {"warm": warm, "quality": quality, "speed": speed, "idle": idle, "ttft": ttft}

# Weights by tier (H leans on quality, R on speed, C between); the hooks read overrides from
# TORCHROUTER_RANKER_WEIGHTS (parse_tier_weights). A request with no tier gets DEFAULT_WEIGHTS.
TIER_WEIGHTS: dict[str, dict[str, float]] = {
    "H": {"ttft": 0.5, "quality": 0.5},
    "R": {"ttft": 0.85, "quality": 0.15},
    "C": {"ttft": 0.65, "quality": 0.35},
}
DEFAULT_WEIGHTS: dict[str, float] = {"ttft": 0.7, "quality": 0.3}


def weights_for(
    tier: str | None, table: Mapping[str, Mapping[str, float]] = TIER_WEIGHTS
) -> Mapping[str, float]:
    return table.get(tier or "", DEFAULT_WEIGHTS)


def parse_tier_weights(text: str) -> dict[str, dict[str, float]]:
    """``"H:ttft=0.4,quality=0.6;R:ttft=0.9,quality=0.1"`` -> per-tier weights (tiers not named keep
    :data:`TIER_WEIGHTS`). Raises ValueError naming the bad part (an unknown scorer, a negative weight)."""
    table = {tier: dict(w) for tier, w in TIER_WEIGHTS.items()}
    tiers_seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(";"))):
        tier, sep, body = part.partition(":")
        if not sep or tier.strip() not in ("H", "R", "C"):
            raise ValueError(f"ranker weights {part!r}: expected <H|R|C>:<scorer>=<weight>,...")
        if tier.strip() in tiers_seen:
            raise ValueError(f"ranker weights: tier {tier.strip()!r} is given twice; give each tier once")
        tiers_seen.add(tier.strip())
        weights: dict[str, float] = {}
        for item in filter(None, (i.strip() for i in body.split(","))):
            name, eq, value = item.partition("=")
            number = finite_float(value)
            if not eq or name.strip() not in SCORERS or number is None or not non_negative(number):
                raise ValueError(
                    f"ranker weights {item!r}: expected <scorer>=<finite weight >= 0>, "
                    f"scorers {sorted(SCORERS)}"
                )
            if name.strip() in weights:
                raise ValueError(
                    f"ranker weights: {tier.strip()}:{name.strip()} is given twice; give each scorer once"
                )
            weights[name.strip()] = number
        table[tier.strip()] = weights
    return table
