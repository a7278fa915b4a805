"""Route plans: ladders per tier and mode, requested groups, and the deterministic fast-chat canary."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from torchrouter_core.routing import (
    LADDERS,
    LadderStep,
    RoutePlan,
    RoutingMode,
    canary_draw,
    canary_ineligibility,
    overflow,
    parse_routing_mode,
    plan_route,
)
from torchrouter_core.tiering import AgentDirectory, RequestFeatures, Tier, parse_agent_directory

TIERS = {
    "H": {"first_lane": "balanced", "wait_budget_ms": 20000},
    "R": {"first_lane": "fast-chat", "wait_budget_ms": 5000},
    "C": {"first_lane": "code", "wait_budget_ms": 15000},
}
DIRECTORY = parse_agent_directory({"tiers": TIERS, "agents": {}})
PLAIN = RequestFeatures(has_tools=False, approx_prompt_tokens=200, last_user_chars=800)
LOCAL_FIRST, LOCAL_ONLY, CLOUD_ONLY = RoutingMode.LOCAL_FIRST, RoutingMode.LOCAL_ONLY, RoutingMode.CLOUD_ONLY


def plan(
    tier: Tier,
    mode: RoutingMode = LOCAL_FIRST,
    *,
    requested_group: str | None = None,
    features: RequestFeatures = PLAIN,
    canary_share: float = 0.0,
    request_id: str = "req-1",
    directory: AgentDirectory = DIRECTORY,
    **kwargs: Any,
) -> RoutePlan:
    return plan_route(
        tier,
        mode=mode,
        directory=directory,
        requested_group=requested_group,
        features=features,
        canary_share=canary_share,
        request_id=request_id,
        **kwargs,
    )


def steps(route: RoutePlan) -> str:
    return " ".join(f"{step.kind}:{step.group}" for step in route.steps)


@pytest.mark.parametrize(
    ("text", "mode"),
    [("local-first", LOCAL_FIRST), (" Local-Only ", LOCAL_ONLY), ("cloud-only", CLOUD_ONLY)],
)
def test_parse_routing_mode(text: str, mode: RoutingMode) -> None:
    assert parse_routing_mode(text) is mode


def test_parse_routing_mode_error_lists_choices() -> None:
    with pytest.raises(ValueError, match="local-first, local-only, cloud-only, got 'local'"):
        parse_routing_mode("local")


@pytest.mark.parametrize(
    ("tier", "mode", "expected"),
    [
        (Tier.H, LOCAL_FIRST, "primary:balanced local:code cloud:cloud-balanced"),
        (Tier.R, LOCAL_FIRST, "primary:fast-chat local:balanced cloud:cloud-fast"),
        (Tier.C, LOCAL_FIRST, "primary:code local:balanced cloud:cloud-code"),
        (Tier.H, LOCAL_ONLY, "primary:balanced local:code"),
        (Tier.R, LOCAL_ONLY, "primary:fast-chat local:balanced"),
        (Tier.C, LOCAL_ONLY, "primary:code local:balanced"),
        (Tier.H, CLOUD_ONLY, "primary:cloud-balanced"),
        (Tier.R, CLOUD_ONLY, "primary:cloud-fast"),
        (Tier.C, CLOUD_ONLY, "primary:cloud-code"),
    ],
)
def test_ladders(tier: Tier, mode: RoutingMode, expected: str) -> None:
    route = plan(tier, mode)
    assert (route.tier, route.canary, steps(route)) == (tier, False, expected)
    assert all(step.is_cloud == (step.group.startswith("cloud-")) for step in route.steps)


def test_high_judgment_never_degrades_to_fast_chat() -> None:
    assert "fast-chat" not in LADDERS[Tier.H].local
    for mode in RoutingMode:
        assert "fast-chat" not in steps(plan(Tier.H, mode))


@pytest.mark.parametrize(
    ("tier", "mode", "requested", "expected"),
    [
        (Tier.R, LOCAL_FIRST, "code", "primary:code local:fast-chat local:balanced cloud:cloud-fast"),
        (Tier.H, LOCAL_FIRST, "balanced", "primary:balanced local:code cloud:cloud-balanced"),
        (Tier.C, LOCAL_FIRST, "cloud-code", "primary:cloud-code local:code local:balanced"),
        (Tier.C, LOCAL_ONLY, "cloud-code", "primary:code local:balanced"),
        (Tier.R, LOCAL_ONLY, "cloud-balanced", "primary:balanced local:fast-chat"),
        (Tier.R, CLOUD_ONLY, "code", "primary:cloud-code cloud:cloud-fast"),
        (Tier.H, CLOUD_ONLY, "balanced", "primary:cloud-balanced"),
    ],
)
def test_requested_group_comes_first_and_the_mode_wins(
    tier: Tier, mode: RoutingMode, requested: str, expected: str
) -> None:
    assert steps(plan(tier, mode, requested_group=requested)) == expected


@pytest.mark.parametrize(
    ("tier", "mode", "requested", "expected"),
    [
        (Tier.H, LOCAL_FIRST, None, "primary:balanced local:code"),
        (Tier.R, LOCAL_FIRST, "cloud-code", "local:fast-chat local:balanced"),  # kinds as before the cut
        (Tier.C, CLOUD_ONLY, None, ""),  # nothing left: the caller answers 503 until the next UTC day
    ],
)
def test_a_cloud_lockout_removes_the_cloud_steps(
    tier: Tier, mode: RoutingMode, requested: str | None, expected: str
) -> None:
    assert steps(plan(tier, mode, requested_group=requested, cloud_locked=True)) == expected


@pytest.mark.parametrize(
    ("group", "mode", "cloud_locked", "expected"),
    [
        ("balanced", LOCAL_FIRST, False, (Tier.H, "code")),
        ("fast-chat", LOCAL_FIRST, False, (Tier.R, "balanced")),
        ("code", LOCAL_ONLY, False, (Tier.C, "balanced")),
        ("code", CLOUD_ONLY, False, (Tier.C, "cloud-code")),
        ("code", CLOUD_ONLY, True, (Tier.C, None)),
        ("cloud-fast", LOCAL_FIRST, False, (None, None)),  # no tier starts there
    ],
)
def test_overflow_is_the_next_step_of_the_ladder_that_starts_at_the_lane(
    group: str, mode: RoutingMode, cloud_locked: bool, expected: tuple[Tier | None, str | None]
) -> None:
    assert overflow(group, directory=DIRECTORY, mode=mode, cloud_locked=cloud_locked) == expected


def test_first_lane_comes_from_the_directory() -> None:
    tiers = {**TIERS, "H": {"first_lane": "code", "wait_budget_ms": 1000}}
    directory = parse_agent_directory({"tiers": tiers})
    assert steps(plan(Tier.H, directory=directory)) == "primary:code local:balanced cloud:cloud-balanced"


@pytest.mark.parametrize("share", [-0.1, 1.01, math.nan, math.inf])
def test_canary_share_must_be_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="canary_share"):
        plan(Tier.H, canary_share=share)


def test_unknown_requested_group_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown group 'gpt-4o'"):
        plan(Tier.H, requested_group="gpt-4o")


# --- canary ------------------------------------------------------------------------------------------------


def features(**changes: Any) -> RequestFeatures:
    return dataclasses.replace(PLAIN, **changes)


@pytest.mark.parametrize(
    ("tier", "mode", "requested", "feats", "reason"),
    [
        (Tier.H, LOCAL_FIRST, None, features(), None),
        (Tier.H, LOCAL_ONLY, None, features(), None),
        (Tier.H, LOCAL_FIRST, None, features(approx_prompt_tokens=4096), None),
        (Tier.R, LOCAL_FIRST, None, features(), "tier"),
        (Tier.C, LOCAL_FIRST, None, features(), "tier"),
        (Tier.H, LOCAL_FIRST, None, features(has_tools=True), "tools"),
        (Tier.H, LOCAL_FIRST, None, features(reasoning_signals=("reasoning:effort",)), "reasoning"),
        (Tier.H, LOCAL_FIRST, None, features(reasoning_signals=("reasoning:proof",)), "reasoning"),
        (Tier.H, LOCAL_FIRST, "balanced", features(), "requested_group"),
        (Tier.H, CLOUD_ONLY, None, features(), "cloud_only"),
        (Tier.H, LOCAL_FIRST, None, features(approx_prompt_tokens=4097), "too_long"),
    ],
)
def test_canary_eligibility(
    tier: Tier, mode: RoutingMode, requested: str | None, feats: RequestFeatures, reason: str | None
) -> None:
    kwargs: dict[str, Any] = {"mode": mode, "requested_group": requested, "features": feats}
    assert canary_ineligibility(tier, **kwargs, fast_chat_max_prompt_tokens=4096) == reason
    route = plan(tier, canary_share=1.0, fast_chat_max_prompt_tokens=4096, **kwargs)
    assert route.canary is (reason is None)
    assert (route.steps[0] == LadderStep("fast-chat", "canary")) is (reason is None)


def test_canaried_plan_continues_with_the_normal_ladder() -> None:
    route = plan(Tier.H, canary_share=1.0)
    assert steps(route) == "canary:fast-chat primary:balanced local:code cloud:cloud-balanced"
    route = plan(Tier.H, LOCAL_ONLY, canary_share=1.0)
    assert steps(route) == "canary:fast-chat primary:balanced local:code"


def test_canary_lane_appears_once_even_when_it_is_the_first_lane() -> None:
    tiers = {**TIERS, "H": {"first_lane": "fast-chat", "wait_budget_ms": 1000}}
    directory = parse_agent_directory({"tiers": tiers})
    route = plan(Tier.H, canary_share=1.0, directory=directory)
    assert steps(route) == "canary:fast-chat primary:balanced local:code cloud:cloud-balanced"


def test_canary_draw_is_deterministic_and_uniform() -> None:
    draws = [canary_draw(f"req-{i}") for i in range(20_000)]
    assert draws[:100] == [canary_draw(f"req-{i}") for i in range(100)]
    assert all(0.0 <= draw < 1.0 for draw in draws)
    assert abs(sum(draw < 0.1 for draw in draws) / len(draws) - 0.1) < 0.01
    assert abs(sum(draws) / len(draws) - 0.5) < 0.01


def test_canary_follows_the_draw_and_replays() -> None:
    ids = [f"req-{i}" for i in range(2_000)]
    canaried = {rid for rid in ids if plan(Tier.H, canary_share=0.25, request_id=rid).canary}
    assert canaried == {rid for rid in ids if canary_draw(rid) < 0.25}
    assert canaried == {rid for rid in ids if plan(Tier.H, canary_share=0.25, request_id=rid).canary}
    assert not any(plan(Tier.H, canary_share=0.0, request_id=rid).canary for rid in ids)
