"""Route plans: the ordered ladder of LiteLLM groups a request may take, given its tier and the routing mode.

This module owns the degradation ladders, the routing modes and the fast-chat canary. It is pure: the queue
policy (``queue_policy.plan_ladder``) later walks a plan against live queue snapshots.

Ladders (:data:`LADDERS`; the first local lane comes from the agent directory, the rest from this table)::

    tier  first lane   local fallback   cloud
    H     balanced  -> code          -> cloud-balanced
    R     fast-chat -> balanced      -> cloud-fast
    C     code      -> balanced      -> cloud-code

Why: H never degrades to fast-chat. That lane runs 8B models with ``think:false``, a quality drop that
defeats high-judgment work, while the code lane carries 32B-class models (qwen2.5-coder:32b) that hold up on
general reasoning. R steps *up* to balanced: routine work loses nothing there and stays local. C steps to
balanced, whose 30B-class models code reasonably. Only then does a request leave the fleet.

Modes: ``local-first`` (default) is the whole ladder; ``local-only`` drops the cloud step; ``cloud-only``
keeps only the cloud step. A requested group (``model: "code"``) becomes the first step; a group the mode
forbids is swapped for its counterpart (``cloud-code`` <-> ``code``), so the operator's mode always wins.
Duplicates are dropped, keeping the first. Step kinds: the first step is ``primary`` (a cloud group in
cloud-only mode); later ones ``local`` or ``cloud``; a canary step is ``canary``.

Fast-chat canary: a share of H traffic tries fast-chat first, to measure whether it can carry the work.
A request is ELIGIBLE exactly when all of these hold:

* its tier is H;
* it carries no tools (``tools``/``functions`` empty or absent);
* it makes no explicit reasoning ask (no ``reasoning`` signal from ``tiering.extract_features``, which
  includes a ``reasoning_effort`` other than none/minimal);
* it names no group (``model`` is ``auto``, an agent's ``agent:auto`` or an unknown model name);
* the routing mode is not ``cloud-only``;
* its approximate prompt tokens are at most ``fast_chat_max_prompt_tokens``.

An eligible request is canaried when ``canary_draw(request_id) < canary_share``. The draw is
``blake2b(request_id)`` mapped to [0, 1), so the same request id always gets the same answer (a request can
be replayed) and share 0.1 canaries about 10 % of eligible requests. A canaried plan starts with the step
``fast-chat`` (kind ``canary``) and continues with the normal ladder.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from torchrouter_core.identity import CLOUD_GROUPS, GROUPS, LOCAL_GROUPS
from torchrouter_core.tiering import AgentDirectory, RequestFeatures, Tier

CANARY_LANE: Final = "fast-chat"
FAST_CHAT_MAX_PROMPT_TOKENS: Final = 4_096


class RoutingMode(StrEnum):
    LOCAL_FIRST = "local-first"
    LOCAL_ONLY = "local-only"
    CLOUD_ONLY = "cloud-only"


def parse_routing_mode(text: str) -> RoutingMode:
    """Parse ``ROUTING_MODE``; raise ValueError listing the accepted values."""
    try:
        return RoutingMode(text.strip().lower())
    except ValueError:
        accepted = ", ".join(mode.value for mode in RoutingMode)
        raise ValueError(f"routing mode must be one of {accepted}, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class TierLadder:
    local: tuple[str, ...]
    cloud: str


LADDERS: Final = MappingProxyType(
    {
        Tier.H: TierLadder(("balanced", "code"), "cloud-balanced"),
        Tier.R: TierLadder(("fast-chat", "balanced"), "cloud-fast"),
        Tier.C: TierLadder(("code", "balanced"), "cloud-code"),
    }
)
CLOUD_COUNTERPART: Final = MappingProxyType(dict(zip(LOCAL_GROUPS, CLOUD_GROUPS, strict=True)))
LOCAL_COUNTERPART: Final = MappingProxyType(dict(zip(CLOUD_GROUPS, LOCAL_GROUPS, strict=True)))


@dataclass(frozen=True, slots=True)
class LadderStep:
    group: str
    kind: Literal["primary", "canary", "local", "cloud"]

    @property
    def is_cloud(self) -> bool:
        return self.group in CLOUD_GROUPS


@dataclass(frozen=True, slots=True)
class RoutePlan:
    tier: Tier
    canary: bool
    steps: tuple[LadderStep, ...]


CanarySkip = Literal["tier", "tools", "reasoning", "requested_group", "cloud_only", "too_long"]


def canary_draw(request_id: str) -> float:
    """A deterministic draw in [0, 1) for a request id."""
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def canary_ineligibility(
    tier: Tier,
    *,
    mode: RoutingMode,
    requested_group: str | None,
    features: RequestFeatures,
    fast_chat_max_prompt_tokens: int = FAST_CHAT_MAX_PROMPT_TOKENS,
) -> CanarySkip | None:
    """Why a request may not be canaried (a closed set, for events), or None when it is eligible."""
    if tier is not Tier.H:
        return "tier"
    if features.has_tools:
        return "tools"
    if features.asks_reasoning:
        return "reasoning"
    if requested_group is not None:
        return "requested_group"
    if mode is RoutingMode.CLOUD_ONLY:
        return "cloud_only"
    if features.approx_prompt_tokens > fast_chat_max_prompt_tokens:
        return "too_long"
    return None


def _allowed(group: str, mode: RoutingMode) -> str:
    if mode is RoutingMode.LOCAL_ONLY:
        return LOCAL_COUNTERPART.get(group, group)
    if mode is RoutingMode.CLOUD_ONLY:
        return CLOUD_COUNTERPART.get(group, group)
    return group


def plan_route(
    tier: Tier,
    *,
    mode: RoutingMode,
    directory: AgentDirectory,
    requested_group: str | None,
    features: RequestFeatures,
    canary_share: float,
    request_id: str,
    fast_chat_max_prompt_tokens: int = FAST_CHAT_MAX_PROMPT_TOKENS,
    cloud_locked: bool = False,
) -> RoutePlan:
    """Build the degradation ladder for one request (see the module docstring). ``cloud_locked`` (the
    daily budget is spent) removes every cloud step; the plan may then have no steps at all."""
    if not 0.0 <= canary_share <= 1.0:  # also rejects NaN
        raise ValueError(f"canary_share must be in [0, 1], got {canary_share!r}")
    if requested_group is not None and requested_group not in GROUPS:
        raise ValueError(f"unknown group {requested_group!r}")

    base = _ladder(tier, mode, directory.first_lane(tier), requested_group, cloud_locked)
    canary = (
        canary_share > 0.0
        and canary_ineligibility(
            tier,
            mode=mode,
            requested_group=requested_group,
            features=features,
            fast_chat_max_prompt_tokens=fast_chat_max_prompt_tokens,
        )
        is None
        and canary_draw(request_id) < canary_share
    )
    if not canary:
        return RoutePlan(tier, False, base)
    rest = [step.group for step in base if step.group != CANARY_LANE]
    steps = (LadderStep(CANARY_LANE, "canary"), *(LadderStep(g, _kind(i, g)) for i, g in enumerate(rest)))
    return RoutePlan(tier, True, steps)


@functools.lru_cache(maxsize=512)
def _ladder(
    tier: Tier, mode: RoutingMode, first: str, requested_group: str | None, cloud_locked: bool
) -> tuple[LadderStep, ...]:
    """The ladder without a canary: a function of these five alone, so it is built once per combination
    (3 tiers x 3 modes x 3 local first lanes x 7 requests: 6 groups or none x 2; at most 378)."""
    ladder = LADDERS[tier]
    local = [first, *(lane for lane in ladder.local if lane != first)]
    groups = {
        RoutingMode.LOCAL_FIRST: [*local, ladder.cloud],
        RoutingMode.LOCAL_ONLY: local,
        RoutingMode.CLOUD_ONLY: [ladder.cloud],
    }[mode]
    if requested_group is not None:
        groups = [_allowed(requested_group, mode), *groups]
    steps = (LadderStep(group, _kind(index, group)) for index, group in enumerate(dict.fromkeys(groups)))
    return tuple(step for step in steps if not (cloud_locked and step.is_cloud))


def overflow(
    group: str, *, directory: AgentDirectory, mode: RoutingMode, cloud_locked: bool
) -> tuple[Tier | None, str | None]:
    """Where arrivals for a lane go when it is over budget: the next step on the ladder of the tier that
    starts there (as the mode and any cloud lockout shape it now). (None, None) for a lane no tier starts
    at; (tier, None) when that ladder has nowhere left to go."""
    tier = next((t for t in Tier if directory.first_lane(t) == group), None)
    if tier is None:
        return None, None
    later = [s.group for s in _ladder(tier, mode, group, None, cloud_locked) if s.group != group]
    return tier, (later[0] if later else None)


def _kind(index: int, group: str) -> Literal["primary", "local", "cloud"]:
    if index == 0:
        return "primary"
    return "cloud" if group in CLOUD_GROUPS else "local"


def ladder_step_kind(to_group: str | None) -> str:
    """The kind of a step down the ladder, by where it goes: ``shed`` (nowhere left), ``cloud`` or
    ``another_lane`` (the trail's ``degradation_ladder_step.step``; also ``wait`` and
    ``another_deployment``, written where those happen)."""
    if to_group is None:
        return "shed"
    return "cloud" if to_group in CLOUD_GROUPS else "another_lane"
