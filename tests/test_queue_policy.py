"""Queue policy: wait estimates, per-step decisions, the ladder walk and shedding."""

from __future__ import annotations

import math

import pytest

from torchrouter_core.queue_policy import (
    DEFAULT_RETRY_AFTER_S,
    Admit,
    Divert,
    GroupSnapshot,
    Shed,
    Wait,
    WaitEstimator,
    decide,
    estimate_wait_ms,
    plan_ladder,
    policy_label,
    retry_after_s,
)
from torchrouter_core.routing import LadderStep

PRIMARY = LadderStep("balanced", "primary")
LOCAL = LadderStep("code", "local")
CLOUD = LadderStep("cloud-balanced", "cloud")
CANARY = LadderStep("fast-chat", "canary")


def snap(limit: int, active: int, depth: int = 0, max_depth: int = 10, service: float = 1e3) -> GroupSnapshot:
    return GroupSnapshot("balanced", limit, active, depth, max_depth, service)


@pytest.mark.parametrize(
    ("limit", "active", "depth", "expected"),
    [
        (1, 0, 0, 0.0),
        (4, 3, 0, 0.0),
        (4, 2, 1, 0.0),
        (1, 1, 0, 1000.0),
        (1, 1, 2, 3000.0),
        (2, 2, 0, 500.0),
        (2, 2, 3, 2000.0),
        (2, 3, 0, 1000.0),  # limit lowered below active: the extra slot must drain first
        (0, 0, 0, math.inf),
        (0, 1, 4, math.inf),
    ],
)
def test_estimate_wait_ms(limit: int, active: int, depth: int, expected: float) -> None:
    assert estimate_wait_ms(snap(limit, active, depth)) == expected


@pytest.mark.parametrize(
    ("snapshot", "budget", "expected"),
    [
        (snap(2, 1), 0, Admit()),
        (snap(2, 1, depth=1), 5000, Wait(500.0)),  # FIFO: the free slot belongs to the one in line
        (snap(1, 1), 1000, Wait(1000.0)),
        (snap(1, 1, depth=4), 5000, Wait(5000.0)),
        (snap(1, 1, depth=5), 5000, Divert("over_budget", 6000.0)),
        (snap(1, 1, depth=10), 60000, Divert("line_full", 11000.0)),
        (snap(1, 1, max_depth=0), 60000, Divert("line_full", 1000.0)),
        (snap(0, 0), 60000, Divert("no_capacity", math.inf)),
        (GroupSnapshot.unlimited("cloud-code", 3000.0), 0, Admit()),
    ],
)
def test_decide(snapshot: GroupSnapshot, budget: float, expected: object) -> None:
    assert decide(snapshot, budget) == expected


@pytest.mark.parametrize(
    ("snapshot", "budget", "label"),
    [
        (snap(2, 0), 0, "accepting"),
        (snap(1, 1, depth=2), 5000, "accepting"),
        (snap(1, 1, depth=6), 5000, "diverting"),
        (snap(1, 1, depth=10), 60000, "shedding"),
        (snap(0, 0), 60000, "shedding"),
    ],
)
def test_policy_label(snapshot: GroupSnapshot, budget: float, label: str) -> None:
    assert policy_label(snapshot, budget) == label


@pytest.mark.parametrize(
    "fields",
    [(-1, 0, 0, 0, 1.0), (1, -1, 0, 0, 1.0), (1, 0, -1, 0, 1.0), (1, 0, 0, -1, 1.0), (1, 0, 0, 0, -1.0)],
)
def test_snapshot_rejects_negative_fields(fields: tuple[int, int, int, int, float]) -> None:
    with pytest.raises(ValueError, match="balanced"):
        GroupSnapshot("balanced", *fields)


def test_snapshot_rejects_nan_service_and_budget() -> None:
    with pytest.raises(ValueError, match="est_service_ms"):
        snap(1, 1, service=math.nan)
    with pytest.raises(ValueError, match="budget_ms"):
        decide(snap(1, 1), math.nan)


# --- WaitEstimator -----------------------------------------------------------------------------------------


def test_estimator_uses_priors_until_observed() -> None:
    estimator = WaitEstimator(prior_ms=2000.0, priors={"code": 8000.0})
    assert estimator.service_ms("balanced") == 2000.0
    assert estimator.service_ms("code") == 8000.0
    assert estimator.observations("code") == 0


def test_estimator_averages_plainly_then_moves_exponentially() -> None:
    estimator = WaitEstimator(alpha=0.2, prior_ms=1000.0)
    estimator.observe("balanced", 3000.0)  # the prior counts as one observation
    assert estimator.service_ms("balanced") == pytest.approx(2000.0)
    estimator.observe("balanced", 5000.0)
    assert estimator.service_ms("balanced") == pytest.approx(3000.0)  # mean of 1000, 3000, 5000
    for value in (3000.0, 3000.0):
        estimator.observe("balanced", value)
    assert estimator.service_ms("balanced") == pytest.approx(3000.0)
    estimator.observe("balanced", 9000.0)  # 5th observation: weight 1/6 < alpha, so alpha applies
    assert estimator.service_ms("balanced") == pytest.approx(3000.0 + 0.2 * 6000.0)
    assert estimator.observations("balanced") == 5
    assert estimator.service_ms("code") == 1000.0


def test_estimator_converges_to_a_new_level() -> None:
    estimator = WaitEstimator()
    for _ in range(60):
        estimator.observe("fast-chat", 700.0)
    assert estimator.service_ms("fast-chat") == pytest.approx(700.0, rel=1e-3)


def test_estimator_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="alpha"):
        WaitEstimator(alpha=0.0)
    with pytest.raises(ValueError, match="prior for code"):
        WaitEstimator(priors={"code": -5.0})
    with pytest.raises(ValueError, match="service_ms"):
        WaitEstimator().observe("code", -1.0)


# --- the ladder --------------------------------------------------------------------------------------------


def test_ladder_admits_at_the_first_free_step() -> None:
    outcome = plan_ladder([(PRIMARY, snap(2, 0)), (LOCAL, snap(2, 0))], 1000)
    assert (outcome.chosen, outcome.decisions, outcome.retry_after_s) == (0, (Admit(),), None)
    assert outcome.decision == Admit()


def test_waiting_within_budget_beats_a_later_free_step() -> None:
    outcome = plan_ladder([(PRIMARY, snap(1, 1, depth=2)), (LOCAL, snap(2, 0))], 20000)
    assert (outcome.chosen, outcome.decision) == (0, Wait(3000.0))


def test_over_budget_moves_down_the_ladder_to_cloud() -> None:
    cloud = GroupSnapshot.unlimited("cloud-balanced")
    steps = [(PRIMARY, snap(1, 1, depth=5)), (LOCAL, snap(1, 1, depth=10)), (CLOUD, cloud)]
    outcome = plan_ladder(steps, 5000)
    assert outcome.chosen == 2
    assert outcome.decisions == (Divert("over_budget", 6000.0), Divert("line_full", 11000.0), Admit())


def test_a_canary_never_waits() -> None:
    outcome = plan_ladder([(CANARY, snap(1, 1)), (PRIMARY, snap(1, 1))], 20000)
    assert outcome.decisions == (Divert("canary_busy", 1000.0), Wait(1000.0))
    assert plan_ladder([(CANARY, snap(2, 1)), (PRIMARY, snap(1, 1))], 20000).chosen == 0


def test_shed_when_every_step_is_exhausted() -> None:
    steps = [(PRIMARY, snap(1, 1, depth=10, service=4200.0)), (LOCAL, snap(1, 1, depth=3, service=1500.0))]
    outcome = plan_ladder(steps, 1000)
    assert outcome.chosen is None
    assert outcome.decisions == (Divert("line_full", 46200.0), Divert("over_budget", 6000.0))
    assert outcome.retry_after_s == 6
    assert outcome.decision == Shed(6)


def test_shed_without_any_finite_estimate_uses_the_default() -> None:
    outcome = plan_ladder([(PRIMARY, snap(0, 0)), (LOCAL, snap(0, 0))], 1000)
    assert outcome.decision == Shed(DEFAULT_RETRY_AFTER_S)
    assert plan_ladder([], 1000).decision == Shed(DEFAULT_RETRY_AFTER_S)


@pytest.mark.parametrize(
    ("wait_ms", "seconds"),
    [(0.0, 1), (1.0, 1), (1000.0, 1), (1000.5, 2), (59_001.0, 60), (10_000_000.0, 300), (math.inf, 30)],
)
def test_retry_after_rounds_up_and_clamps(wait_ms: float, seconds: int) -> None:
    assert retry_after_s(wait_ms) == seconds


# --- the residual-aware estimate (busy slots' elapsed times known) ----------------------------------------


@pytest.mark.parametrize(
    ("limit", "elapsed", "depth", "expected"),
    [
        (1, (600.0,), 0, 400.0),  # one slot, 600 of 1000 ms done: the arrival waits the residual
        (1, (600.0,), 1, 1400.0),  # ...and one ahead of it takes a whole service after that
        (2, (100.0, 900.0), 0, 300.0),  # the nearly done slot frees first (no sooner than the 30% floor)
        (2, (100.0, 900.0), 1, 900.0),  # the second waiter gets the other busy slot
        (2, (100.0, 900.0), 2, 1300.0),  # the third gets the first waiter's slot back
        (1, (5000.0,), 0, 300.0),  # overdue: assume a long request with a floor of 30% of service left
    ],
)
def test_estimate_replays_the_line_from_residuals(
    limit: int, elapsed: tuple[float, ...], depth: int, expected: float
) -> None:
    snapshot = GroupSnapshot("g", limit, len(elapsed), depth, 10, 1000.0, elapsed)
    assert estimate_wait_ms(snapshot) == pytest.approx(expected)


def test_estimate_without_elapsed_times_is_the_memoryless_formula() -> None:
    assert estimate_wait_ms(GroupSnapshot("g", 2, 2, 1, 10, 1000.0)) == pytest.approx(1000.0)


def test_size_fit_learns_base_plus_per_token() -> None:
    est = WaitEstimator(alpha=0.2, prior_ms=4000.0)
    for size in (20, 200, 50, 150, 100, 80, 180, 30):
        est.observe("code", 100.0 + 5.0 * size, size)
    assert est.service_for("code", 100) == pytest.approx(600.0, rel=1e-6)
    assert est.service_for("code", None) == est.service_ms("code")  # unknown size: the lane's mean
    assert est.service_for("balanced", 100) == 4000.0  # nothing learned there: the prior


def test_size_fit_needs_a_few_sized_observations() -> None:
    est = WaitEstimator(prior_ms=1000.0)
    est.observe("code", 500.0, 50)
    est.observe("code", 900.0, 90)
    assert est.service_for("code", 70) == est.service_ms("code")


def test_estimate_prices_each_request_in_the_line_by_its_size() -> None:
    # One slot: the busy request is long (2000 ms, 500 done), a short one (100 ms) waits ahead.
    snapshot = GroupSnapshot("g", 1, 1, 1, 10, 1000.0, (500.0,), (2000.0,), (100.0,))
    assert estimate_wait_ms(snapshot) == pytest.approx(1600.0)
