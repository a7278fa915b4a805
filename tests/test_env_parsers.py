"""The settings mini-languages (TORCHROUTER_EVICTION, _BREAKER, _TIME_BUDGETS, _RANKER_WEIGHTS, _LANE_LIMITS
and every plain number): NaN, infinities, ``-0`` and a name given twice are refused, each naming the part."""

from __future__ import annotations

import pytest

from torchrouter import cli
from torchrouter_core.breaker import parse_breaker_config
from torchrouter_core.budgets import parse_time_budgets
from torchrouter_core.capacity import parse_lane_caps
from torchrouter_core.env import SettingsError, parse_float
from torchrouter_core.eviction import parse_eviction_rules
from torchrouter_core.hooks_settings import HooksSettings
from torchrouter_core.ranker.scorers import parse_tier_weights

NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"]


@pytest.mark.parametrize("raw", NON_FINITE)
@pytest.mark.parametrize("rule", ["min_residency_s", "hold_s", "unload_s"])
def test_eviction_refuses_non_finite_seconds(rule: str, raw: str) -> None:
    with pytest.raises(ValueError, match="finite seconds"):
        parse_eviction_rules(f"{rule}={raw}")


@pytest.mark.parametrize("raw", ["-0", "-0.0", "-1"])
def test_eviction_refuses_a_minus_sign(raw: str) -> None:
    with pytest.raises(ValueError, match=r"eviction rule 'unload_s="):
        parse_eviction_rules(f"unload_s={raw}")


def test_eviction_refuses_a_rule_given_twice_naming_it() -> None:
    with pytest.raises(ValueError, match="eviction rule 'hold_s' is given twice"):
        parse_eviction_rules("hold_s=3,unload_s=1,hold_s=5")


@pytest.mark.parametrize("text", ["off,hold_s=3", "hold_s=3, off", "no,unload_s=1"])
def test_eviction_off_stands_alone(text: str) -> None:
    with pytest.raises(ValueError, match="stands alone: it turns eviction off and takes no rules"):
        parse_eviction_rules(text)


def test_eviction_still_reads_good_values() -> None:
    rules = parse_eviction_rules(" min_residency_s=0, hold_s=300 ,unload_s=1.5")
    assert (rules.min_residency_s, rules.hold_s, rules.unload_s) == (0.0, 300.0, 1.5)
    assert not parse_eviction_rules("off").enabled


@pytest.mark.parametrize("raw", NON_FINITE)
def test_breaker_refuses_non_finite_numbers(raw: str) -> None:
    with pytest.raises(ValueError, match="finite number"):
        parse_breaker_config(f"cool_off_s={raw}")


def test_breaker_refuses_a_setting_given_twice_and_minus_zero() -> None:
    with pytest.raises(ValueError, match="breaker setting 'cool_off_s' is given twice"):
        parse_breaker_config("cool_off_s=1,cool_off_s=2")
    with pytest.raises(ValueError, match=r"breaker setting 'cool_off_s=-0\.0'"):
        parse_breaker_config("cool_off_s=-0.0")
    assert parse_breaker_config("cool_off_s=1.5").cool_off_s == 1.5


@pytest.mark.parametrize("raw", [*NON_FINITE, "86400.001", "3000000", "0", "-1"])
def test_time_budgets_refuse_seconds_that_are_not_finite_positive_and_at_most_a_day(raw: str) -> None:
    # 3,000,000 s once passed and then broke every local attempt (TCP_USER_TIMEOUT overflowed a C int)
    with pytest.raises(ValueError, match="more than 0 and at most 86400"):
        parse_time_budgets(f"R.connect_s={raw}")
    assert parse_time_budgets("R.connect_s=86400")["R"].connect_s == 86400.0


def test_time_budgets_refuse_a_budget_given_twice() -> None:
    with pytest.raises(ValueError, match=r"time budget 'R\.total_s' is given twice"):
        parse_time_budgets("R.total_s=30,H.total_s=60,R.total_s=40")
    assert parse_time_budgets("R.total_s=30")["R"].total_s == 30.0


@pytest.mark.parametrize("raw", [*NON_FINITE, "-0"])
def test_ranker_weights_refuse_non_finite_and_minus_zero(raw: str) -> None:
    with pytest.raises(ValueError, match="finite weight >= 0"):
        parse_tier_weights(f"H:quality={raw}")


def test_ranker_weights_refuse_a_tier_or_a_scorer_given_twice() -> None:
    with pytest.raises(ValueError, match="tier 'H' is given twice"):
        parse_tier_weights("H:quality=1;R:quality=1;H:quality=0.5")
    with pytest.raises(ValueError, match="H:quality is given twice"):
        parse_tier_weights("H:quality=1,quality=0.5")


def test_lane_limits_refuse_a_lane_given_twice_and_odd_digits() -> None:
    with pytest.raises(ValueError, match="lane cap 'code' is given twice"):
        parse_lane_caps("code=2,balanced=4,code=3")
    with pytest.raises(ValueError, match="lane cap 'code=²'"):
        parse_lane_caps("code=²")
    for raw in NON_FINITE:
        with pytest.raises(ValueError, match="non-negative integer"):
            parse_lane_caps(f"code={raw}")
    assert parse_lane_caps("code=2, balanced=0") == {"code": 2, "balanced": 0}


@pytest.mark.parametrize("raw", [*NON_FINITE, "-0"])
def test_plain_numbers_refuse_non_finite_values(raw: str) -> None:
    with pytest.raises(SettingsError, match="TORCHROUTER_LEDGER_LEASE_S="):
        parse_float("TORCHROUTER_LEDGER_LEASE_S", raw, 0)
    assert parse_float("X", "0", 0) == 0.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TORCHROUTER_EVICTION", "hold_s=abc"),
        ("TORCHROUTER_LEDGER_REDIS_URL", "notaurl"),
        ("TORCHROUTER_TIME_BUDGETS", "R.total_s=nan"),
    ],
)
def test_validate_parses_the_hooks_settings_from_the_environment(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert cli.main(["validate"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"environment: {name}") and value in line, line


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "redis://",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:port",
        "unix://",
        "redis://127.0.0.1:6379/notanumber",
        "redis://user:pw@[::1/0",  # not even a URL: one line, not a traceback
        "redis://127.0.0.1:6379/0?db=x",  # options are not read here: say so rather than half-apply them
    ],
)
def test_hooks_refuse_a_redis_url_redis_cannot_read(url: str) -> None:
    with pytest.raises(SettingsError, match="TORCHROUTER_LEDGER_REDIS_URL="):
        HooksSettings.from_env({"TORCHROUTER_LEDGER_REDIS_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:s3cr3tpw@127.0.0.1:notaport/0",
        "redis://:s3cr3tpw@/0",
        "rediss://u:s3cr3tpw@h:0",
        "redis://user:s3cr3tpw@[::1/0",
    ],
)
def test_a_refused_redis_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(SettingsError) as err:
        HooksSettings.from_env({"TORCHROUTER_LEDGER_REDIS_URL": url})
    assert "s3cr3tpw" not in str(err.value) and ":***@" in str(err.value), str(err.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.internal", "unix:///run/r.sock"])
def test_hooks_accept_redis_urls(url: str) -> None:
    assert HooksSettings.from_env({"TORCHROUTER_LEDGER_REDIS_URL": url}).ledger_redis_url == url
