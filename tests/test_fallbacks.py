"""Failure chains per tier (pure): the agents file's ``fallbacks``, shaped by mode, budget, the ladder's
passed-over lanes and feasibility; and ``torchrouter validate`` on the groups it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from torchrouter import cli
from torchrouter_core.fallbacks import allowed_groups, chain_problems, failure_chain, hop_allowed, next_leg
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.routing import RoutingMode
from torchrouter_core.tiering import (
    DEFAULT_FALLBACKS,
    DirectoryError,
    Tier,
    parse_agent_directory,
    parse_agent_directory_yaml,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = parse_agent_directory_yaml((REPO / "classifier" / "agents.yaml").read_text())
MATRIX = load_matrix(DEFAULT_MATRIX_PATH)
TIERS: dict[str, Any] = {
    "H": {"first_lane": "balanced", "wait_budget_ms": 20000},
    "R": {"first_lane": "fast-chat", "wait_budget_ms": 5000},
    "C": {"first_lane": "code", "wait_budget_ms": 15000},
}
FIRST = RoutingMode.LOCAL_FIRST


def test_the_shipped_chains_are_the_documented_defaults() -> None:
    assert {t: SHIPPED.fallbacks(t) for t in Tier} == dict(DEFAULT_FALLBACKS)
    assert SHIPPED.fallbacks(Tier.H) == ("cloud-balanced", "balanced", "code")


def test_a_tier_without_fallbacks_gets_the_default_and_an_empty_list_means_none() -> None:
    directory = parse_agent_directory({"tiers": {**TIERS, "C": {**TIERS["C"], "fallbacks": []}}})
    assert directory.fallbacks(Tier.H) == DEFAULT_FALLBACKS[Tier.H]
    assert directory.fallbacks(Tier.C) == ()


@pytest.mark.parametrize(
    ("fallbacks", "message"),
    [
        (["cloud-smart"], r"tiers\.H\.fallbacks\[0\]: 'cloud-smart' is not a group; groups are balanced, "),
        (["balanced", "code", "balanced"], r"tiers\.H\.fallbacks\[2\]: 'balanced' is listed twice"),
        ("cloud-balanced", r"tiers\.H\.fallbacks: expected a list of groups"),
        ([1], r"tiers\.H\.fallbacks\[0\]: 1 is not a group"),
    ],
)
def test_a_bad_chain_is_refused_naming_the_entry(fallbacks: object, message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        parse_agent_directory({"tiers": {**TIERS, "H": {**TIERS["H"], "fallbacks": fallbacks}}})


@pytest.mark.parametrize(
    ("group", "mode", "locked", "passed", "expected"),
    [
        # local failure -> escalate to cloud, then the rest of the tier's local lanes
        ("balanced", FIRST, False, (), ("cloud-balanced", "code")),
        # cloud failure -> the tier's local groups, in the chain's order
        ("cloud-balanced", FIRST, False, (), ("balanced", "code")),
        # the ladder passed over code (busy): a failure does not make it less busy
        ("balanced", FIRST, False, ("code",), ("cloud-balanced",)),
        ("balanced", RoutingMode.LOCAL_ONLY, False, (), ("code",)),
        ("cloud-balanced", RoutingMode.CLOUD_ONLY, False, (), ()),
        ("balanced", FIRST, True, (), ("code",)),  # the day's budget is spent: no cloud hop
        ("fast-chat", FIRST, False, (), ("cloud-balanced", "balanced", "code")),  # a canary's failure
    ],
)
def test_the_chain_for_one_request(
    group: str, mode: RoutingMode, locked: bool, passed: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    chain = SHIPPED.fallbacks(Tier.H)
    assert allowed_groups(chain, group=group, mode=mode, cloud_locked=locked, passed=passed) == expected


def test_groups_that_could_never_carry_the_request_are_left_out() -> None:
    local_window = max(p.context_window for p in MATRIX.in_lane("balanced"))
    big = RequestNeeds(prompt_tokens=local_window + 1000)

    def chain_for(group: str, needs: RequestNeeds) -> tuple[tuple[str, ...], dict[str, str]]:
        chain, dropped = failure_chain(
            SHIPPED.fallbacks(Tier.R), group=group, mode=FIRST, cloud_locked=False, matrix=MATRIX, needs=needs
        )
        return chain, dict(dropped)

    chain, dropped = chain_for("cloud-fast", big)
    assert chain == () and set(dropped) == {"fast-chat", "balanced"}  # too large for every local lane
    assert chain_for("fast-chat", big) == (("cloud-fast",), {"balanced": "context_window"})
    assert chain_for("fast-chat", RequestNeeds(prompt_tokens=10)) == (("cloud-fast", "balanced"), {})


def test_chain_problems_name_groups_the_litellm_config_lacks() -> None:
    groups = {"balanced", "fast-chat", "code", "cloud-fast", "cloud-code"}  # no cloud-balanced
    assert chain_problems(SHIPPED, groups) == [
        "tiers.H.fallbacks[0]: 'cloud-balanced' is not a model group in the LiteLLM config"
    ]


def test_validate_checks_the_agents_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load((REPO / "litellm_config.yaml").read_text())
    config["model_list"] = [d for d in config["model_list"] if d["model_name"] != "cloud-code"]
    config["router_settings"]["fallbacks"] = [
        f for f in config["router_settings"]["fallbacks"] if "cloud-code" not in str(f)
    ]
    config_path = tmp_path / "litellm_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    matrix = yaml.safe_load(DEFAULT_MATRIX_PATH.read_text())
    matrix["profiles"] = {k: p for k, p in matrix["profiles"].items() if p["lane"] != "cloud-code"}
    matrix_path = tmp_path / "matrix.yaml"
    matrix_path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    agents = REPO / "classifier" / "agents.yaml"
    args = ["validate", "--matrix", str(matrix_path), "--config", str(config_path), "--agents", str(agents)]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert f"{agents}: tiers.C.fallbacks[0]: 'cloud-code' is not a model group in the LiteLLM config" in out
    broken = tmp_path / "agents.yaml"
    broken.write_text(agents.read_text().replace("[cloud-fast, fast-chat, balanced]", "[cloud-fast, turbo]"))
    assert cli.main([*args[:-1], str(broken)]) == 1
    assert "tiers.R.fallbacks[1]: 'turbo' is not a group" in capsys.readouterr().out
    assert cli.main(["validate"]) == 0  # the shipped files agree


# --- hops LiteLLM takes on its own, and the classifier's legs after a stream failed before its answer ------
@pytest.mark.parametrize(
    ("chain", "hop_from", "group", "allowed"),
    [
        (["cloud-fast", "balanced"], "fast-chat", "cloud-fast", True),
        (["balanced"], "fast-chat", "cloud-fast", False),  # local-only: the config's fast-chat -> cloud-fast
        ([], "fast-chat", "cloud-fast", False),  # disable_fallbacks
        ([], "fast-chat", "fast-chat", True),  # staying in the group is no hop
        ([], None, "fast-chat", True),  # the first attempt
        (None, "fast-chat", "cloud-fast", True),  # a client of LiteLLM itself: its configured fallbacks
    ],
)
def test_a_hop_is_allowed_only_into_the_requests_own_chain(
    chain: list[str] | None, hop_from: str | None, group: str, allowed: bool
) -> None:
    assert hop_allowed(chain, hop_from, group) is allowed


def test_the_next_leg_takes_what_the_chain_has_left_each_group_once() -> None:
    chain = ("cloud-fast", "balanced", "code")
    tried, left = next_leg(chain, (), ("fast-chat", "fast-chat", "cloud-fast"))
    assert tried == ("fast-chat", "cloud-fast") and left == ("balanced", "code")
    tried, left = next_leg(left[1:], tried, ("balanced", "code"))
    assert tried == ("fast-chat", "cloud-fast", "balanced", "code") and left == ()
