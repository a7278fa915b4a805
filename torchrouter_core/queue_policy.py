"""Queue policy: admit a request now, let it wait in a group's line, move it down the ladder, or shed it.

This module owns the decision from a queue snapshot and the wait estimate behind it. It is pure: a snapshot
(``lane_queue.LaneQueue.snapshot``) and the tier's wait budget go in, a Decision comes out.

Wait estimate. With ``limit`` slots, ``active`` of them busy and ``depth`` requests already in line, a new
arrival needs ``n = active + depth + 1 - limit`` completions before a slot is its own. When the snapshot
carries how long each busy slot has been running (``elapsed_ms``), the estimate replays the line: each busy
slot frees after its residual ``max(service - elapsed, RESIDUAL_FLOOR * service)`` (an overdue request is
likely a long one, not one about to end), each waiter ahead then holds the slot it gets for one mean
service, and the arrival's wait is when a slot comes to it (first come, first served). Without elapsed
times it falls back to treating service as memoryless: ``max(0, n) / limit * service``. ``limit == 0`` (no
capacity in the fleet) waits forever.

Service time is an exponentially weighted moving average per group (:class:`WaitEstimator`); when requests
say how many output tokens they may produce (``max_tokens``), it also fits service = base + per-token x size
per group (exponentially weighted least squares), so each busy slot and each waiter is priced at its own size.
The mean's prior counts as one observation and the first few observations are averaged plainly (weight
``1/(n+1)``) until that weight falls below ``alpha``: one cold-load outlier neither vanishes nor takes over.

Decisions for one step (``decide``): Admit when a slot is free for this arrival and everyone in line; Divert
when the group has no capacity, its line is full, or the estimate exceeds the budget; otherwise Wait.
``plan_ladder`` walks a route plan's steps and stops at the first Admit or Wait. A canary step never waits
(it must not make a request slower than its own lane would). When every step diverts, the request is Shed
with ``Retry-After`` = the smallest finite estimate, rounded up to whole seconds, clamped to 1..300
(:data:`DEFAULT_RETRY_AFTER_S` when no step has a finite estimate).

Cloud groups have no local capacity limit: model them with :meth:`GroupSnapshot.unlimited` (a limit so large
that a slot is always free), so they always admit. Spend limits and circuit breakers live elsewhere.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from torchrouter_core.routing import LadderStep

UNLIMITED: Final = 1 << 30
DEFAULT_PRIOR_MS: Final = 4_000.0
RESIDUAL_FLOOR: Final = 0.3
MIN_SIZED_OBSERVATIONS: Final = 3
DEFAULT_ALPHA: Final = 0.2
DEFAULT_RETRY_AFTER_S: Final = 30
MAX_RETRY_AFTER_S: Final = 300


def _check_ms(name: str, value: float) -> None:
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of ms, got {value!r}")


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    group: str
    limit: int
    active: int
    depth: int
    max_depth: int
    est_service_ms: float
    elapsed_ms: tuple[float, ...] = ()  # how long each busy slot has been running; () when unknown
    active_service_ms: tuple[float, ...] = ()  # each busy slot's expected service (its request's size)
    waiting_service_ms: tuple[float, ...] = ()  # each waiter's expected service, in line order

    def __post_init__(self) -> None:
        # One comparison each on the way through (a snapshot is taken per ladder step of every request);
        # the loop that names the field runs only for a bad one.
        if self.limit < 0 or self.active < 0 or self.depth < 0 or self.max_depth < 0:
            for name in ("limit", "active", "depth", "max_depth"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{self.group}: {name} must be >= 0, got {getattr(self, name)}")
        if not self.est_service_ms >= 0.0:  # negative or NaN
            _check_ms(f"{self.group}: est_service_ms", self.est_service_ms)

    @classmethod
    def unlimited(cls, group: str, est_service_ms: float = 0.0) -> GroupSnapshot:
        """A group without local capacity limits (a cloud group): a slot is always free."""
        return cls(group, UNLIMITED, 0, 0, 0, est_service_ms)


class _SizeFit:
    """Exponentially weighted least squares of service time on requested output tokens (one lane)."""

    __slots__ = ("count", "mx", "mxx", "mxy", "my")

    def __init__(self) -> None:
        self.count = 0
        self.mx = self.my = self.mxx = self.mxy = 0.0

    def observe(self, x: float, y: float, alpha: float) -> None:
        self.count += 1
        a = max(alpha, 1.0 / self.count)
        self.mx += a * (x - self.mx)
        self.my += a * (y - self.my)
        self.mxx += a * (x * x - self.mxx)
        self.mxy += a * (x * y - self.mxy)

    def predict(self, x: float) -> float:
        var = self.mxx - self.mx * self.mx
        slope = (self.mxy - self.mx * self.my) / var if var > 1e-9 * max(1.0, self.mxx) else 0.0
        base = self.my - slope * self.mx
        if slope < 0.0 or base < 0.0:  # not a sensible line yet: fall back to time per token
            slope, base = (self.my / self.mx if self.mx > 0 else 0.0), 0.0
        return max(1.0, base + slope * x)


class WaitEstimator:
    """Mean service time per group, from observed service times. State, but no clocks and no I/O."""

    def __init__(
        self,
        *,
        alpha: float = DEFAULT_ALPHA,
        prior_ms: float = DEFAULT_PRIOR_MS,
        priors: Mapping[str, float] | None = None,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        _check_ms("prior_ms", prior_ms)
        for group, value in (priors or {}).items():
            _check_ms(f"prior for {group}", value)
        self._alpha = alpha
        self._prior_ms = prior_ms
        self._priors = dict(priors or {})
        self._mean: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._sized: dict[str, _SizeFit] = {}

    def observe(self, group: str, service_ms: float, size: int | None = None) -> None:
        """One finished request's service time; ``size`` is its requested output tokens when known."""
        _check_ms("service_ms", service_ms)
        count = self._count.get(group, 0) + 1
        mean = self.service_ms(group)
        self._mean[group] = mean + max(self._alpha, 1.0 / (count + 1)) * (service_ms - mean)
        self._count[group] = count
        if size is not None and size > 0:
            self._sized.setdefault(group, _SizeFit()).observe(float(size), service_ms, self._alpha)

    def service_ms(self, group: str) -> float:
        return self._mean.get(group, self._priors.get(group, self._prior_ms))

    def service_for(self, group: str, size: int | None) -> float:
        """Expected service of one request of ``size`` output tokens; the lane's mean when size is unknown
        or too few sized requests have been seen to fit ``service = base + per_token * size``."""
        fit = self._sized.get(group)
        if size is None or size <= 0 or fit is None or fit.count < MIN_SIZED_OBSERVATIONS:
            return self.service_ms(group)
        return fit.predict(float(size))

    def observations(self, group: str) -> int:
        return self._count.get(group, 0)


def finite_ms(value: float) -> float | None:
    """A wait for JSON and the trail: rounded, or None when it is unbounded (no capacity at all)."""
    return None if math.isinf(value) else round(value, 1)


def estimate_wait_ms(snapshot: GroupSnapshot) -> float:
    """Expected queueing wait for a new arrival (see the module docstring)."""
    ahead = snapshot.active + snapshot.depth + 1 - snapshot.limit
    if ahead <= 0:
        return 0.0
    if snapshot.limit == 0:
        return math.inf
    service = snapshot.est_service_ms
    if len(snapshot.elapsed_ms) != snapshot.active:
        return ahead / snapshot.limit * service
    busy = snapshot.active_service_ms
    if len(busy) != snapshot.active:
        busy = (service,) * snapshot.active
    line = snapshot.waiting_service_ms
    if len(line) != snapshot.depth:
        line = (service,) * snapshot.depth
    # Replay the line: slot-free times from the busy slots' residuals, then each waiter ahead in turn.
    # max(s - e, RESIDUAL_FLOOR * s) for each busy slot, spelt as max decides (the later only if greater):
    # a call to max per slot costs twice the comparison.
    frees = [
        floor if (floor := RESIDUAL_FLOOR * s) > (left := s - e) else left
        for s, e in zip(busy, snapshot.elapsed_ms, strict=True)
    ]
    heapq.heapify(frees)
    if snapshot.active == snapshot.limit:
        # Every slot busy (the usual full lane): each slot that frees goes to the next in line at once,
        # so a pop and a push are one heapreplace; the same arithmetic as the general loop below.
        for service in line:
            heapq.heapreplace(frees, frees[0] + service)
        return frees[0]
    running, next_in_line = snapshot.active, 0
    while frees:
        now = heapq.heappop(frees)
        running -= 1
        while running < snapshot.limit:
            if next_in_line == len(line):
                return now  # the new arrival's turn
            heapq.heappush(frees, now + line[next_in_line])
            next_in_line += 1
            running += 1
    return ahead / snapshot.limit * service  # unreachable while active >= 1; kept for safety


@dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclass(frozen=True, slots=True)
class Wait:
    est_ms: float


DivertReason = Literal["no_capacity", "line_full", "over_budget", "canary_busy"]


@dataclass(frozen=True, slots=True)
class Divert:
    reason: DivertReason
    est_ms: float


@dataclass(frozen=True, slots=True)
class Shed:
    retry_after_s: int


StepDecision = Admit | Wait | Divert
Decision = Admit | Wait | Divert | Shed


def decide(snapshot: GroupSnapshot, budget_ms: float) -> StepDecision:
    """Admit, Wait or Divert one arrival at one group, given the tier's wait budget."""
    _check_ms("budget_ms", budget_ms)
    if snapshot.active + snapshot.depth < snapshot.limit:
        return Admit()
    est_ms = estimate_wait_ms(snapshot)
    if snapshot.limit == 0:
        return Divert("no_capacity", est_ms)
    if snapshot.depth >= snapshot.max_depth:
        return Divert("line_full", est_ms)
    if est_ms > budget_ms:
        return Divert("over_budget", est_ms)
    return Wait(est_ms)


def retry_after_s(wait_ms: float) -> int:
    """Whole seconds for ``Retry-After`` from a wait estimate: rounded up, clamped to 1..300."""
    if math.isinf(wait_ms):
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(1, math.ceil(wait_ms / 1000.0)))


@dataclass(frozen=True, slots=True)
class LadderOutcome:
    chosen: int | None  # index into the steps, None when shed
    decisions: tuple[StepDecision, ...]  # one per step walked, in order
    retry_after_s: int | None  # set when shed

    @property
    def decision(self) -> Decision:
        if self.chosen is None:
            return Shed(self.retry_after_s or DEFAULT_RETRY_AFTER_S)
        return self.decisions[self.chosen]


def plan_ladder(steps: Iterable[tuple[LadderStep, GroupSnapshot]], budget_ms: float) -> LadderOutcome:
    """Walk a route plan's steps in order: the first that admits or can wait within budget is chosen.

    ``steps`` may be a generator: the walk stops at the chosen step, so later snapshots are never taken."""
    decisions: list[StepDecision] = []
    for index, (step, snapshot) in enumerate(steps):
        decision = decide(snapshot, budget_ms)
        if step.kind == "canary" and isinstance(decision, Wait):
            decision = Divert("canary_busy", decision.est_ms)
        decisions.append(decision)
        if not isinstance(decision, Divert):
            return LadderOutcome(index, tuple(decisions), None)
    smallest = min((d.est_ms for d in decisions if isinstance(d, Divert)), default=math.inf)
    return LadderOutcome(None, tuple(decisions), retry_after_s(smallest))


PolicyLabel = Literal["accepting", "diverting", "shedding"]


def policy_label(snapshot: GroupSnapshot, budget_ms: float) -> PolicyLabel:
    """The group's state for ``/queue/status``: accepting (admit or wait), diverting (waits exceed the
    budget, so arrivals move down the ladder) or shedding (line full or no capacity: it takes no more)."""
    decision = decide(snapshot, budget_ms)
    if not isinstance(decision, Divert):
        return "accepting"
    return "diverting" if decision.reason == "over_budget" else "shedding"
