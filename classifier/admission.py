"""Admission: walk a request's ladder against the lanes' live queues and hold a slot while it runs.

The decisions are :func:`torchrouter_core.queue_policy.plan_ladder`'s (pure); this module owns the
:class:`LaneQueue` per local group, applies the lane limits the fleet view derives, and records
every divert. A step chosen to *wait* gets the tier's remaining budget as its timeout; if the
wait runs past it (the estimate was wrong) the request moves on down the ladder instead of failing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from classifier.lane_queue import LaneFullError, LaneQueue, Ticket
from classifier.metrics import LaneReading
from torchrouter_core.decide import RouteDecision
from torchrouter_core.errors import QueueFull
from torchrouter_core.identity import CLOUD_GROUPS, LOCAL_GROUPS
from torchrouter_core.queue_policy import (
    Divert,
    GroupSnapshot,
    Wait,
    WaitEstimator,
    estimate_wait_ms,
    finite_ms,
    plan_ladder,
    policy_label,
    retry_after_s,
)
from torchrouter_core.routing import LadderStep

# A lane's waiting line holds this many requests per slot; beyond it arrivals divert at once.
DEPTH_PER_SLOT = 4
MIN_DEPTH = 4

OnDivert = Callable[[str, str, str, float], None]  # (from group, to group or "", reason, estimated ms)
OnWait = Callable[[str, GroupSnapshot, float], None]  # (group, its queue as the policy saw it, estimated ms)


@dataclass
class Admission:
    step: LadderStep
    ticket: Ticket | None
    queue_ms: float
    diverts: list[tuple[str, str]] = field(default_factory=list)  # (group, reason)
    admitted_at: float = 0.0
    estimated_ms: float = 0.0  # the wait the policy expected when it chose this step
    service_ms: float = 0.0  # the lane's learned mean service time that estimate was priced at
    size: int | None = None  # the request's output-token budget (max_tokens), when it gave one

    @property
    def group(self) -> str:
        return self.step.group


class Lanes:
    def __init__(self, *, enabled: bool, estimator: WaitEstimator | None = None) -> None:
        self.enabled = enabled
        self.estimator = estimator or WaitEstimator()
        self.queues = {group: LaneQueue(group, 0, 0) for group in LOCAL_GROUPS}

    def set_limits(self, limits: dict[str, int]) -> None:
        for group, limit in limits.items():
            queue = self.queues.get(group)
            if queue is not None and (queue.limit != limit or queue.max_depth == 0):
                queue.max_depth = max(MIN_DEPTH, limit * DEPTH_PER_SLOT) if limit else 0
                queue.limit = limit

    def snapshot(self, group: str) -> GroupSnapshot:
        service_ms = self.estimator.service_ms(group)
        queue = self.queues.get(group)
        if queue is None:  # cloud groups carry no local capacity limit
            return GroupSnapshot.unlimited(group, service_ms)
        return queue.snapshot(service_ms, functools.partial(self.estimator.service_for, group))

    async def admit(
        self, decision: RouteDecision, on_divert: OnDivert | None = None, on_wait: OnWait | None = None
    ) -> Admission:
        """Walk the ladder: ``on_divert`` hears every step passed over, ``on_wait`` a step the policy chose
        to wait for, as the wait starts (both in the order they happen)."""
        started = time.perf_counter()
        if not self.enabled:
            return Admission(decision.ladder[0], None, 0.0, admitted_at=started)
        if decision.ladder and decision.wait_budget_ms >= 0:
            # The first step has room now (a cloud group always has): the policy would admit there, so
            # skip pricing the ladder. What follows is the same walk, for a lane that is full or has a line.
            first = decision.ladder[0]
            queue = self.queues.get(first.group)
            held = None if queue is None else queue.grant_now(decision.output_tokens)
            if queue is None or held is not None:
                now = time.perf_counter()
                service_ms = self.estimator.service_ms(first.group)
                waited_ms = (now - started) * 1e3
                return Admission(first, held, waited_ms, [], now, 0.0, service_ms, decision.output_tokens)
        budget_ms = float(decision.wait_budget_ms)
        steps = list(decision.ladder)
        diverts: list[tuple[str, str]] = []
        smallest_wait = math.inf
        all_without_capacity = True

        def divert(group: str, reason: str, est_ms: float, next_group: str) -> None:
            nonlocal smallest_wait, all_without_capacity
            diverts.append((group, reason))
            smallest_wait = min(smallest_wait, est_ms)
            all_without_capacity = all_without_capacity and reason == "no_capacity"
            if on_divert is not None:
                on_divert(group, next_group, reason, est_ms)

        while steps:
            seen: list[GroupSnapshot] = []  # the snapshots the policy walked, one per step, in order

            def snapshot(step: LadderStep, seen: list[GroupSnapshot] = seen) -> GroupSnapshot:
                seen.append(self.snapshot(step.group))
                return seen[-1]

            outcome = plan_ladder(((s, snapshot(s)) for s in steps), budget_ms)
            for index, step_decision in enumerate(outcome.decisions):
                if isinstance(step_decision, Divert):
                    following = steps[index + 1].group if index + 1 < len(steps) else ""
                    divert(steps[index].group, step_decision.reason, step_decision.est_ms, following)
            if outcome.chosen is None:
                break
            step, rest = steps[outcome.chosen], steps[outcome.chosen + 1 :]
            chosen = outcome.decisions[outcome.chosen]
            estimated_ms = chosen.est_ms if isinstance(chosen, Wait) else 0.0
            if on_wait is not None and isinstance(chosen, Wait):
                # The lane as the policy just saw it (nothing has run since: the same slots, busy and line).
                on_wait(step.group, seen[outcome.chosen], estimated_ms)
            service_ms = self.estimator.service_ms(step.group)
            queue = self.queues.get(step.group)
            ticket: Ticket | None = None
            if queue is not None:  # a local lane: hold one of its slots (cloud groups need none)
                remaining_s = max(0.001, (budget_ms - (time.perf_counter() - started) * 1e3) / 1e3)
                try:
                    ticket = await queue.acquire(timeout_s=remaining_s, size=decision.output_tokens)
                except LaneFullError:
                    reason = "line_full"
                except TimeoutError:
                    reason = "wait_exceeded"
            if queue is None or ticket is not None:
                now = time.perf_counter()
                waited_ms = (now - started) * 1e3
                return Admission(
                    step, ticket, waited_ms, diverts, now, estimated_ms, service_ms, decision.output_tokens
                )
            divert(
                step.group, reason, estimate_wait_ms(self.snapshot(step.group)), rest[0].group if rest else ""
            )
            steps = rest
        raise QueueFull(
            "every lane on this request's ladder is over its wait budget or full: "
            + ", ".join(f"{g} ({r})" for g, r in diverts),
            retry_after_s=retry_after_s(smallest_wait),
            status=503 if all_without_capacity else 429,
        )

    def release(self, admission: Admission, *, ok: bool, learn: bool = True) -> None:
        """Give the slot back; an ``ok`` request's service time teaches the estimator unless ``learn`` is
        off (a cold load). Failures are often fast: they would teach it the lane is quicker than it is."""
        if admission.ticket is None:
            return
        self.queues[admission.group].release(admission.ticket)
        if ok and learn:
            service_ms = (time.perf_counter() - admission.admitted_at) * 1e3
            self.estimator.observe(admission.group, service_ms, admission.size)

    def readings(self) -> dict[str, LaneReading]:
        """Per local lane, for the metrics scraped from ``/metrics``."""
        out: dict[str, LaneReading] = {}
        for group in self.queues:
            snap = self.snapshot(group)
            wait = estimate_wait_ms(snap)
            out[group] = LaneReading(
                snap.depth, snap.active, snap.limit, -1.0 if math.isinf(wait) else wait / 1e3
            )
        return out

    def status(
        self, budget_ms_of: Callable[[str], float], fallback_of: Callable[[str], dict[str, object]]
    ) -> dict[str, object]:
        groups: dict[str, object] = {}
        for group in (*LOCAL_GROUPS, *CLOUD_GROUPS):
            snap = self.snapshot(group)
            local = group in self.queues
            groups[group] = {
                "depth": snap.depth,
                "active": snap.active,
                "limit": snap.limit if local else None,
                "max_depth": snap.max_depth if local else None,
                "wait_ms": finite_ms(estimate_wait_ms(snap)) if local else 0.0,
                "service_ms": round(snap.est_service_ms, 1),
                "service_observations": self.estimator.observations(group),
                "policy": policy_label(snap, budget_ms_of(group)) if self.enabled else "bypassed",
                "fallback": fallback_of(group),
            }
        return {"queue_enabled": self.enabled, "groups": groups}
