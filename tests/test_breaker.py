"""The circuit breakers' state machine (pure: outcomes and ``now`` in, states and transitions out)."""

from __future__ import annotations

import pytest

from torchrouter_core.breaker import BreakerConfig, Breakers, Failure, Scope, State
from torchrouter_core.ranker import filters
from torchrouter_core.ranker.interfaces import FleetSnapshot, RequestNeeds

CFG = BreakerConfig(consecutive_failures=3, failure_rate=0.5, window_s=10.0, min_requests=4, cool_off_s=5.0)
KEY, HOST = "h1/ollama/m", "h1"


def states(b: Breakers) -> dict[tuple[str, str], str]:
    return {(s.value, t): st.state.value for (s, t), st in b.states.items()}


def test_a_run_of_failures_opens_then_half_open_after_cool_off_then_closed_on_a_trial_success() -> None:
    b = Breakers(CFG)
    assert b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.0) == []
    assert b.failed(KEY, HOST, Failure.SERVER_ERROR, 1.0) == []
    [opened] = b.failed(KEY, HOST, Failure.SERVER_ERROR, 2.0)
    assert (opened.scope, opened.to_state, opened.reason) == (
        Scope.DEPLOYMENT,
        State.OPEN,
        "3_in_a_row:server_error",
    )
    blocked, changes = b.blocked({KEY: HOST}, 6.9)
    assert blocked == {KEY: "breaker_open"} and changes == []
    blocked, [half] = b.blocked({KEY: HOST}, 7.0)
    assert blocked == {} and half.to_state is State.HALF_OPEN
    b.picked(KEY, HOST, 0.0)  # the one trial is taken: nobody else until it answers
    assert b.blocked({KEY: HOST}, 7.1)[0] == {KEY: "breaker_half_open"}
    [closed] = b.succeeded(KEY, HOST, 7.5)
    assert closed.to_state is State.CLOSED and b.blocked({KEY: HOST}, 7.6)[0] == {}


def test_a_success_resets_the_run_and_a_failed_trial_reopens() -> None:
    b = Breakers(BreakerConfig(consecutive_failures=3, min_requests=100, cool_off_s=5.0))
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.0)
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.1)
    b.succeeded(KEY, HOST, 0.2)
    assert b.failed(KEY, HOST, Failure.TIMEOUT, 0.3) == []  # the run started over
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.4)
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.5)
    b.blocked({KEY: HOST}, 5.5)
    b.picked(KEY, HOST, 0.0)
    [again] = b.failed(KEY, HOST, Failure.STREAM_BROKEN, 5.6)
    assert again.reason == "trial_failed:stream_broken" and b.blocked({KEY: HOST}, 10.5)[0] == {
        KEY: "breaker_open"
    }


def test_a_failure_rate_in_the_window_opens_without_a_run() -> None:
    b = Breakers(BreakerConfig(consecutive_failures=99, failure_rate=0.5, window_s=10.0, min_requests=4))
    b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.0)
    b.succeeded(KEY, HOST, 0.1)
    b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.2)
    assert states(b)[("deployment", KEY)] == "closed"  # 2 of 3: fewer outcomes than min_requests
    [opened] = b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.3)  # 3 of 4, the run broken by the success
    assert opened.reason == "failure_rate:server_error"
    assert states(b)[("deployment", KEY)] == "open"


def test_old_outcomes_leave_the_window() -> None:
    b = Breakers(BreakerConfig(consecutive_failures=99, failure_rate=0.5, window_s=1.0, min_requests=3))
    b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.0)
    b.failed(KEY, HOST, Failure.SERVER_ERROR, 0.1)
    b.succeeded(KEY, HOST, 5.0)
    b.succeeded(KEY, HOST, 5.1)
    assert b.failed(KEY, HOST, Failure.SERVER_ERROR, 5.2) == []  # 1 of 3 in the window


def test_connection_failures_open_the_host_and_take_every_model_on_it_down() -> None:
    b = Breakers(CFG)
    for t in (0.0, 0.1, 0.2):
        changes = b.failed(KEY, HOST, Failure.REFUSED, t)
    assert {c.scope for c in changes} == {Scope.DEPLOYMENT, Scope.HOST}
    other = "h1/ollama/other"
    blocked, _ = b.blocked({KEY: HOST, other: HOST, "h2/ollama/m": "h2"}, 1.0)
    assert blocked == {KEY: "host_breaker_open", other: "host_breaker_open"}


def test_work_that_is_no_request_stays_away_from_every_breaker_not_closed_without_moving_one() -> None:
    b = Breakers(CFG)
    hosts = {KEY: HOST, "h1/ollama/other": HOST, "h2/ollama/m": "h2"}
    assert b.not_closed_keys(hosts) == {}
    for t in (0.0, 0.1, 0.2):
        b.failed(KEY, HOST, Failure.SERVER_ERROR, t)  # the deployment's breaker opens, not its host's
    assert b.not_closed_keys(hosts) == {KEY: "breaker_not_closed"}
    assert b.not_closed_keys(hosts) == {KEY: "breaker_not_closed"}  # long past its cool-off: no tick here
    assert states(b)[("deployment", KEY)] == "open"
    b.blocked(hosts, 10.0)  # a request's tick turns it half-open: still not closed, still avoided
    assert states(b)[("deployment", KEY)] == "half_open" and b.not_closed_keys(hosts) == {
        KEY: "breaker_not_closed"
    }
    for t in (11.0, 11.1, 11.2):
        b.failed("h2/ollama/m", "h2", Failure.REFUSED, t)  # a host down takes every profile on it
    assert set(b.not_closed_keys(hosts)) == {KEY, "h2/ollama/m"}


def test_5xx_counts_against_the_deployment_only() -> None:
    b = Breakers(CFG)
    for t in (0.0, 0.1, 0.2):
        b.failed(KEY, HOST, Failure.SERVER_ERROR, t)
    assert b.blocked({KEY: HOST, "h1/ollama/other": HOST}, 1.0)[0] == {KEY: "breaker_open"}


def test_429_backs_off_for_retry_after_capped() -> None:
    b = Breakers(BreakerConfig(max_retry_after_s=30.0))
    [opened] = b.failed(KEY, HOST, Failure.RATE_LIMITED, 0.0, retry_after_s=2.0)
    assert opened.reason == "rate_limited"
    assert b.blocked({KEY: HOST}, 1.9)[0] == {KEY: "breaker_open"}
    assert b.blocked({KEY: HOST}, 2.0)[0] == {}
    b.failed(KEY, HOST, Failure.RATE_LIMITED, 3.0, retry_after_s=10_000.0)
    assert b.state(Scope.DEPLOYMENT, KEY).retry_at == 33.0


def test_auth_opens_at_once_and_rechecks_after_its_own_period() -> None:
    b = Breakers(BreakerConfig(auth_recheck_s=60.0, cool_off_s=1.0))
    [opened] = b.failed(KEY, HOST, Failure.AUTH, 0.0)
    assert opened.reason == "auth"
    assert b.blocked({KEY: HOST}, 59.0)[0] == {KEY: "breaker_open"}
    assert b.blocked({KEY: HOST}, 60.0)[0] == {}  # half-open: one re-check request
    b.picked(KEY, HOST, 0.0)
    [reopened] = b.failed(KEY, HOST, Failure.AUTH, 60.5)
    assert reopened.to_state is State.OPEN and b.state(Scope.DEPLOYMENT, KEY).retry_at == 120.5


def test_probe_breaker_opens_the_host_and_a_probe_answer_after_cool_off_closes_it() -> None:
    b = Breakers(CFG)
    for t in (0.0, 1.0, 2.0):
        changes = b.probed(HOST, False, t)
    assert [c.to_state for c in changes] == [State.OPEN]
    assert b.probed(HOST, True, 3.0) == []  # still cooling off
    b.tick(7.0)
    [closed] = b.probed(HOST, True, 7.1)
    assert closed.to_state is State.CLOSED and b.state(Scope.HOST, HOST).state is State.CLOSED


def test_snapshot_lists_tripped_targets() -> None:
    b = Breakers(CFG)
    b.failed(KEY, HOST, Failure.RATE_LIMITED, 0.0, retry_after_s=4.0)
    [row] = b.snapshot(1.0)
    assert row["state"] == "open" and row["retry_in_s"] == 3.0 and row["reason"] == "rate_limited"


def test_the_ranker_filter_reads_the_breakers() -> None:
    from tests.test_ranker import BASE

    assert (
        filters.breaker(BASE, RequestNeeds(), FleetSnapshot(breakers={BASE.key: "breaker_open"}))
        == "breaker_open"
    )
    assert filters.breaker(BASE, RequestNeeds(), FleetSnapshot()) is None


def test_a_trial_that_never_reports_back_frees_its_place() -> None:
    b = Breakers(BreakerConfig(consecutive_failures=1, cool_off_s=1.0, trial_timeout_s=10.0))
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.0)
    b.blocked({KEY: HOST}, 1.0)
    b.picked(KEY, HOST, 1.0)
    assert b.blocked({KEY: HOST}, 11.0)[0] == {KEY: "breaker_half_open"}
    assert b.blocked({KEY: HOST}, 11.1)[0] == {}


def test_a_trial_whose_client_left_is_given_back_at_once() -> None:
    b = Breakers(BreakerConfig(consecutive_failures=1, cool_off_s=1.0, trial_timeout_s=300.0))
    assert not b.picked(KEY, HOST, 0.0)  # closed: not a trial
    b.failed(KEY, HOST, Failure.TIMEOUT, 0.0)
    b.blocked({KEY: HOST}, 1.0)  # half-open now
    assert b.picked(KEY, HOST, 1.0)  # the trial
    assert b.blocked({KEY: HOST}, 1.5)[0] == {KEY: "breaker_half_open"}  # no second one meanwhile
    b.released(KEY, HOST)  # its client left: no verdict
    assert b.blocked({KEY: HOST}, 1.6)[0] == {}  # the next request is the trial
    assert b.state(Scope.DEPLOYMENT, KEY).state is State.HALF_OPEN
    b.released(KEY, HOST)  # once more changes nothing (no trial to give back)
    assert b.state(Scope.DEPLOYMENT, KEY).trials == 0


def test_parse_breaker_config() -> None:
    from torchrouter_core.breaker import parse_breaker_config

    cfg = parse_breaker_config("consecutive_failures=2, cool_off_s=1.5")
    assert (cfg.consecutive_failures, cfg.cool_off_s, cfg.window_s) == (2, 1.5, 30.0)
    for bad in ("nope=1", "cool_off_s=x", "failure_rate=2", "consecutive_failures=1.5", "cool_off_s"):
        with pytest.raises(ValueError, match="breaker setting"):
            parse_breaker_config(bad)


def test_parse_time_budgets() -> None:
    from torchrouter_core.budgets import DEFAULT_BUDGETS, budget_for, parse_time_budgets

    budgets = parse_time_budgets("R.first_byte_s=1.5,H.total_s=60")
    assert (
        budgets["R"].first_byte_s == 1.5
        and budgets["H"].total_s == 60
        and budgets["C"] == DEFAULT_BUDGETS["C"]
    )
    assert budget_for(budgets, None) == budgets["H"] and budget_for(budgets, "X") == budgets["H"]
    assert budgets["R"].first_byte(cold=True) == DEFAULT_BUDGETS["R"].first_byte_cold_s
    for bad in ("R.first_byte_s=0", "Q.total_s=1", "R.nope=1", "R=1", "R.total_s"):
        with pytest.raises(ValueError, match="time budget"):
            parse_time_budgets(bad)


@pytest.mark.parametrize(
    ("cold", "expected_ttft_s", "first_byte_s"),
    [
        (False, None, 8.0),  # no estimate: the tier's (R: 8 s warm, 60 s cold)
        (True, None, 60.0),
        (False, 1.5, 8.0),  # a short estimate: the tier's
        (False, 19.5, 39.0),  # a 30,000-token prompt's prefill: twice the estimate, not cut at 8 s
        (True, 40.0, 80.0),
        (False, 100.0, 120.0),  # never more than the tier's total
        (False, float("inf"), 8.0),  # not an estimate
        (False, float("nan"), 8.0),
        (False, -3.0, 8.0),
        (False, 0.0, 8.0),
    ],
)
def test_an_attempt_expected_to_take_longer_gets_that_long_before_its_first_byte(
    cold: bool, expected_ttft_s: float | None, first_byte_s: float
) -> None:
    from torchrouter_core.budgets import DEFAULT_BUDGETS

    assert DEFAULT_BUDGETS["R"].first_byte_for(cold, expected_ttft_s) == first_byte_s


def test_blocked_answers_as_every_target_s_own_breaker_says() -> None:
    """``Breakers.blocked`` reads only the breakers that refuse (it runs per request over every profile);
    over random histories it answers exactly what asking each host's and deployment's breaker gives."""
    import random

    from torchrouter_core.breaker import admits

    rng = random.Random(11)
    hosts = {f"h{h}/m{m}": f"h{h}" for h in range(4) for m in range(3)}
    failures = list(Failure)
    refusing = 0
    for _ in range(200):
        cfg = BreakerConfig(consecutive_failures=rng.randint(1, 3), cool_off_s=rng.choice((0.5, 2.0)))
        breakers, now = Breakers(cfg), 1000.0
        for _ in range(rng.randint(0, 40)):
            now += rng.random()
            key = rng.choice(list(hosts))
            op = rng.random()
            if op < 0.4:
                breakers.failed(key, hosts[key], rng.choice(failures), now, rng.choice((None, 1.0)))
            elif op < 0.7:
                breakers.succeeded(key, hosts[key], now)
            elif op < 0.85:
                breakers.picked(key, hosts[key], now)
            else:
                breakers.probed(hosts[key], rng.random() < 0.5, now)
        now += rng.random() * 3
        got, _ = breakers.blocked(hosts, now)
        want: dict[str, str] = {}
        for key, host in hosts.items():
            if (why := admits(breakers.state(Scope.HOST, host), cfg)) is not None:
                want[key] = f"host_{why}"
            elif (why := admits(breakers.state(Scope.DEPLOYMENT, key), cfg)) is not None:
                want[key] = why
        assert got == want
        refusing += bool(want)
    assert refusing >= 50, refusing  # the histories do open breakers: the comparison is not vacuous
