"""One routing step inside LiteLLM, as a pure function: from the group's deployments to one pick.

The hooks hand over what LiteLLM gave them (the deployments' ids, i.e. profile keys) and what they keep
(the live matrix and overlay, requests in flight, the ledger's view, observed times, the eviction inputs);
:func:`select` runs the cycle and answers a :class:`Selection` whose :meth:`Selection.event_fields` is the
``route_selected`` event. Deployments the matrix does not know are left out and listed.

The cycle it runs is the compiled one (:mod:`.compiled`: what the live matrix decides worked out once per
matrix and overlay, only survivors scored); :func:`_select_plain` runs the readable :func:`rank` over a
:class:`FleetSnapshot` (:func:`snapshot`) with the same inputs, and the two answer exactly alike (the
random fleets of ``tests/test_ranker.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from capability_matrix.live import LiveOverlay
from capability_matrix.model import Matrix, Profile
from torchrouter_core.eviction import DEFAULT_RULES, EvictionRules, RecentUse, eviction_charge_s
from torchrouter_core.ledger import HostLedger
from torchrouter_core.ranker import scorers
from torchrouter_core.ranker.compiled import BUILT_IN, decide
from torchrouter_core.ranker.cycle import rank
from torchrouter_core.ranker.interfaces import FleetSnapshot, NoCandidate, Ranking, RankOutcome, RequestNeeds
from torchrouter_core.ranker.observed import ObservedTimes
from torchrouter_core.usability import ChargeFn, Placement, host_rooms

_NONE: Mapping[str, float] = MappingProxyType({})
EVENT_TOP_N = 8  # route_selected carries the scores and terms of this many best candidates (and the pick)


@dataclass(frozen=True)
class Selection:
    group: str
    outcome: RankOutcome
    ranking: Ranking | None = None
    rejected: Mapping[str, str] = field(default_factory=dict)
    unknown: tuple[str | None, ...] = ()
    reason: str | None = None
    candidates: int = 0
    placement: Placement | None = None  # the pick's: free memory, or which models it evicts

    @property
    def chosen(self) -> Profile | None:
        return self.ranking.chosen if self.ranking is not None else None

    @property
    def score_ms(self) -> float:
        return round(sum(self.ranking.timings_ms.values()), 3) if self.ranking is not None else 0.0

    def _best_scores(self) -> dict[str, Any]:
        """``scores`` and ``score_terms`` of the :data:`EVENT_TOP_N` best candidates (every one when
        fewer; the pick is always first), rounded to 4 places; ``scored``: how many were scored."""
        ranking = self.ranking
        assert ranking is not None
        keys, score_list = ranking.keys, ranking.score_list
        named = tuple(zip(ranking.term_names, ranking.term_values, strict=True))
        scores: dict[str, float] = {}
        terms: dict[str, dict[str, float]] = {}
        for i in ranking.best_indices(EVENT_TOP_N):
            key = keys[i]
            scores[key] = round(score_list[i], 4)
            terms[key] = {name: round(column[i], 4) for name, column in named}
        return {"scores": scores, "score_terms": terms, "scored": len(keys)}

    def rejected_now(self) -> Mapping[str, str]:
        """Every candidate filtered out, and why (whether or not one was picked)."""
        return self.ranking.rejected if self.ranking is not None else self.rejected

    def event_fields(self) -> dict[str, Any]:
        """The ``route_selected`` event's own fields (the caller adds who the request is)."""
        chosen = self.chosen
        if chosen is None or self.ranking is None:
            return {
                "group": self.group,
                "outcome": self.outcome.value,
                "deployment": None,
                "rejected": dict(self.rejected),
                "unknown_deployments": list(self.unknown),
                "reason": self.reason,
            }
        return {
            "group": self.group,
            "outcome": self.outcome.value,
            "deployment": chosen.key,
            "host_id": chosen.host_id,
            "model": chosen.model,
            "warm_state": chosen.warm_state.value,
            "candidates": self.candidates,
            **self._best_scores(),
            "estimated_ttft_ms": round(self.ranking.ttft_s.get(chosen.key, 0.0) * 1e3, 1),
            "eviction": eviction_fields(self.placement),
            "rejected": dict(self.ranking.rejected),
            "unknown_deployments": list(self.unknown),
            "score_ms": self.score_ms,
        }


def eviction_fields(placement: Placement | None) -> dict[str, Any] | None:
    if placement is None or not placement.victims:
        return None
    return {
        "victims": [
            {"model": v.model, "gb": round(v.gb, 3), "charge_s": round(v.charge_s, 3)}
            for v in placement.victims
        ],
        "freed_gb": round(placement.freed_gb, 3),
        "charge_s": round(placement.charge_s, 3),
    }


def charge_of(use: RecentUse | None, observed: ObservedTimes | None, now: float | None) -> ChargeFn | None:
    """The eviction charge the hooks price a resident model with: its recent request rate (``use``) and
    its reload time (observed cold loads of that deployment, else :func:`scorers.load_estimate_s`)."""
    if use is None or now is None:
        return None
    reload_of = observed.load_time_s if observed is not None else scorers.load_estimate_s

    def charge(profile: Profile, expires_in_s: float | None) -> float:
        rate = use.rate(profile.host_id, profile.model, now)
        if rate <= 0.0:  # unused lately: no charge (eviction_charge_s's first rule), no reload time needed
            return 0.0
        return eviction_charge_s(rate, reload_of(profile), expires_in_s)

    return charge


def snapshot(
    matrix: Matrix,
    overlay: LiveOverlay,
    keys: Sequence[str],
    in_flight: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None = None,
    prompt_tokens: int = 0,
    observed: ObservedTimes | None = None,
    breakers: Mapping[str, str] | None = None,
    *,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
    use: RecentUse | None = None,
) -> FleetSnapshot:
    """The fleet as the ranker reads it, for the candidates ``keys`` (all in ``matrix``); ``reserved`` is
    the VRAM ledger's view (host id -> reservations), taken off each host's room; ``now``, ``rules``,
    ``evicted_at`` and ``use`` feed the eviction rules and charges (:func:`host_rooms`)."""
    slots = {key: matrix.parallel_slots(matrix.profiles[key]) for key in keys}
    rooms = host_rooms(
        matrix,
        overlay,
        reserved,
        in_flight=in_flight,
        now=now,
        rules=rules,
        evicted_at=evicted_at,
        charge=charge_of(use, observed, now),
    )
    return FleetSnapshot(
        in_flight=in_flight,
        slots=slots,
        rooms=rooms,
        prompt_tokens=prompt_tokens,
        service_s=observed.service_s if observed is not None else {},
        load_s=observed.load_s if observed is not None else {},
        prompt_s_per_token=observed.prompt_s_per_token if observed is not None else {},
        loading_s=observed.loading_s(now) if observed is not None else {},
        breakers=breakers or {},
        observed_gb=overlay.observed_gb,
        unload_s=rules.unload_s,
    )


def select(
    group: str,
    deployment_keys: Sequence[str | None],
    needs: RequestNeeds,
    *,
    matrix: Matrix,
    overlay: LiveOverlay,
    in_flight: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None = None,
    weights: Mapping[str, float] = scorers.DEFAULT_WEIGHTS,
    observed: ObservedTimes | None = None,
    breakers: Mapping[str, str] | None = None,
    now: float | None = None,
    rules: EvictionRules = DEFAULT_RULES,
    evicted_at: Mapping[tuple[str, str], float] | None = None,
    use: RecentUse | None = None,
) -> Selection:
    """One routing step. ``breakers``: profile key -> why its circuit breaker refuses it now (absent:
    admitted); ``now`` (Unix seconds), ``rules``, ``evicted_at`` and ``use``: the eviction rules' inputs
    (:func:`snapshot`). The :class:`Selection`'s ``placement`` says whether the pick loads into free memory
    or evicts. Raises nothing of its own: nothing left is a :class:`Selection` with ``no_candidate``."""
    if not BUILT_IN.issuperset(weights):  # a scorer the compiled cycle does not know: the plain one
        return _select_plain(
            group, deployment_keys, needs, matrix=matrix, overlay=overlay, in_flight=in_flight,
            reserved=reserved, weights=weights, observed=observed, breakers=breakers, now=now, rules=rules,
            evicted_at=evicted_at, use=use,
        )  # fmt: skip
    decision = decide(
        group,
        deployment_keys,
        needs,
        matrix=matrix,
        overlay=overlay,
        in_flight=in_flight,
        reserved=reserved,
        weights=weights,
        service_s=observed.service_s if observed is not None else _NONE,
        load_s=observed.load_s if observed is not None else _NONE,
        loading_s=observed.loading_s(now) if observed is not None else None,
        prompt_s_per_token=observed.prompt_s_per_token if observed is not None else None,
        breakers=breakers,
        now=now,
        rules=rules,
        evicted_at=evicted_at,
        charge=charge_of(use, observed, now),
    )
    if decision.ranking is None:
        assert decision.no_candidate is not None
        exc = decision.no_candidate
        return Selection(
            group,
            exc.outcome,
            rejected=exc.rejected,
            unknown=decision.unknown,
            reason=str(exc),
            candidates=decision.known,
        )
    return Selection(
        group,
        decision.ranking.outcome,
        ranking=decision.ranking,
        unknown=decision.unknown,
        candidates=decision.known,
        placement=decision.placement,
    )


def _select_plain(
    group: str,
    deployment_keys: Sequence[str | None],
    needs: RequestNeeds,
    *,
    matrix: Matrix,
    overlay: LiveOverlay,
    in_flight: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None,
    weights: Mapping[str, float],
    observed: ObservedTimes | None,
    breakers: Mapping[str, str] | None,
    now: float | None,
    rules: EvictionRules,
    evicted_at: Mapping[tuple[str, str], float] | None,
    use: RecentUse | None,
) -> Selection:
    """:func:`select` through the readable cycle (:func:`rank` over a :class:`FleetSnapshot`): the
    reference the compiled one is held to, and the path for weights naming a scorer it does not know."""
    known = [k for k in deployment_keys if k is not None and k in matrix.profiles]
    unknown = tuple(k for k in deployment_keys if k is None or k not in matrix.profiles)
    fleet = snapshot(
        matrix,
        overlay,
        known,
        in_flight,
        reserved,
        needs.prompt_tokens,
        observed,
        breakers,
        now=now,
        rules=rules,
        evicted_at=evicted_at,
        use=use,
    )
    try:
        ranking = rank(group, [matrix.profiles[k] for k in known], needs, fleet=fleet, weights=weights)
    except NoCandidate as exc:
        return Selection(
            group, exc.outcome, rejected=exc.rejected, unknown=unknown, reason=str(exc), candidates=len(known)
        )
    return Selection(
        group,
        ranking.outcome,
        ranking=ranking,
        unknown=unknown,
        candidates=len(known),
        placement=fleet.placement(ranking.chosen),
    )
