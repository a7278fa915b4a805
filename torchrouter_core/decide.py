"""From request to route decision: identity -> tier -> ladder of groups (pure), plus the agents file store.

``decide()`` composes :mod:`torchrouter_core.identity`, :mod:`torchrouter_core.tiering` and
:mod:`torchrouter_core.routing`; it takes values and returns a :class:`RouteDecision`. The queue step
(:mod:`torchrouter_core.queue_policy`) then walks ``decision.ladder`` against live capacity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from capability_matrix import Matrix, ReloadingFile
from torchrouter_core.aliases import EMPTY_ALIASES, AliasMap, UnknownModel, resolve_model
from torchrouter_core.errors import ApiError, BadRequest, NotFound, Unprocessable
from torchrouter_core.feasibility import Impossible, feasible_steps
from torchrouter_core.identity import Identity, IdentityError, identify
from torchrouter_core.needs import request_needs
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.routing import FAST_CHAT_MAX_PROMPT_TOKENS, LadderStep, RoutingMode, plan_route
from torchrouter_core.tiering import (
    AgentDirectory,
    DirectoryError,
    LearnedTiering,
    RequestFeatures,
    Tier,
    classify,
    extract_features,
    parse_agent_directory_yaml,
)

log = logging.getLogger("torchrouter.classifier")

UNREAD_FEATURES = RequestFeatures(has_tools=False, approx_prompt_tokens=0, last_user_chars=0)
_MODES: Mapping[str, RoutingMode] = {mode.value: mode for mode in RoutingMode}


class CloudLocked(ApiError):
    status = 503
    code = "cloud_locked_out"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RouteDecision:
    identity: Identity
    tier: Tier
    tier_source: str
    signals: tuple[str, ...]
    canary: bool
    ladder: tuple[LadderStep, ...]
    wait_budget_ms: int
    tier_confidence: float | None = None  # the learned model's, when it tiered the request
    tier_features: tuple[str, ...] = ()  # its strongest named features
    upstream_extras: Mapping[str, Any] = field(default_factory=dict)
    output_tokens: int | None = None  # max_tokens / max_completion_tokens: prices the request in the queue
    needs: RequestNeeds = field(
        default_factory=RequestNeeds
    )  # what a deployment must offer; sent to the hooks (contract)
    infeasible: Mapping[str, str] = field(default_factory=dict)  # ladder groups dropped, and why

    @property
    def first_group(self) -> str:
        return self.ladder[0].group

    @property
    def ladder_groups(self) -> tuple[str, ...]:
        return tuple(step.group for step in self.ladder)

    @property
    def agent_label(self) -> str | None:
        return self.identity.agent_id


def seconds_to_next_utc_day(now: float) -> int:
    return max(1, 86400 - int(now) % 86400)


def fast_chat_context_tokens(matrix: Matrix) -> int:
    """The smallest context window in the fast-chat lane: what a canaried request must fit."""
    windows = [p.context_window for p in matrix.in_lane("fast-chat")]
    return min(windows) if windows else 0


def decide(
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    *,
    agents: AgentDirectory,
    matrix: Matrix,
    routing_mode: str,
    canary_share: float,
    request_id: str,
    now: float,
    cloud_locked: str | None = None,
    aliases: AliasMap = EMPTY_ALIASES,
    learned: LearnedTiering | None = None,
) -> RouteDecision:
    """``cloud_locked`` (a reason, e.g. the daily budget is spent) removes every cloud step; ``now`` (a
    timestamp) prices the Retry-After of a request that then has nowhere to go. ``aliases`` maps model
    names (:mod:`torchrouter_core.aliases`); any other unknown name raises NotFound (404 model_not_found).
    Ladder steps no deployment could ever carry are dropped (:mod:`torchrouter_core.feasibility`); when
    none is left, Unprocessable (400, e.g. ``context_length_exceeded``). ``learned`` (the learned tier
    model and its threshold) tiers an unknown agent's request instead of the keyword rules."""
    try:
        model = resolve_model(body.get("model"), aliases, agents.agents)
        identity = identify(headers, model)
    except IdentityError as exc:
        raise BadRequest(str(exc), param=exc.param) from None
    except UnknownModel as exc:
        raise NotFound(str(exc), param="model") from None
    # Content features cost ~10 us of regex scanning: read them only when something will look at them,
    # that is an agent the directory does not know, or an H request that may be canaried.
    known_tier = agents.tier_of(identity.agent_id)
    if known_tier is None:
        features = extract_features(body, model=learned.model if learned else None)
    elif canary_share > 0.0 and known_tier is Tier.H:
        features = extract_features(body)
    else:
        features = UNREAD_FEATURES
    if learned is None:
        tiering = classify(identity, features, agents)
    else:
        tiering = classify(
            identity,
            features,
            agents,
            min_confidence=learned.min_confidence,
            uncertain_tier=learned.uncertain_tier,
        )
    mode = _MODES.get(routing_mode) or RoutingMode(routing_mode)  # the lookup; the call only for its error
    route_args: dict[str, Any] = dict(
        mode=mode,
        directory=agents,
        requested_group=identity.requested_group,
        features=features,
        canary_share=canary_share,
        request_id=request_id,
        # Only a canary looks at this; without one, skip walking the lane's profiles on every request.
        fast_chat_max_prompt_tokens=(
            min(FAST_CHAT_MAX_PROMPT_TOKENS, fast_chat_context_tokens(matrix)) if canary_share > 0.0 else 0
        ),
    )
    plan = plan_route(tiering.tier, **route_args, cloud_locked=cloud_locked is not None)
    # Failure fallbacks are the tier's chain, shaped by the mode, the budget and feasibility when the
    # request is forwarded (torchrouter_core.fallbacks), not LiteLLM's per-group ones.
    ladder = plan.steps
    if not ladder:  # only a cloud lockout empties a ladder
        raise CloudLocked(
            f"cloud routes are locked out ({cloud_locked}) and ROUTING_MODE={mode.value}",
            retry_after_s=seconds_to_next_utc_day(now),
        )
    needs = request_needs(body, None if features is UNREAD_FEATURES else features)
    try:
        feasible = feasible_steps(ladder, matrix, needs, body.get("messages"))
    except Impossible as exc:
        if cloud_locked is not None:  # only the locked cloud could carry it: "not now", not "never"
            try:
                unlocked = plan_route(tiering.tier, **route_args, cloud_locked=False)
                feasible_steps(unlocked.steps, matrix, needs)
            except Impossible:
                pass
            else:
                raise CloudLocked(
                    f"{exc.message}; the cloud groups that could carry it are locked out ({cloud_locked})",
                    retry_after_s=seconds_to_next_utc_day(now),
                ) from None
        raise Unprocessable(exc.message, code=exc.code, param=exc.param) from None
    ladder = feasible.steps
    return RouteDecision(
        identity=identity,
        tier=tiering.tier,
        tier_source=tiering.source,
        signals=tiering.signals,
        canary=plan.canary,
        ladder=ladder,
        wait_budget_ms=agents.wait_budget_ms(tiering.tier),
        tier_confidence=tiering.confidence,
        tier_features=tiering.model_features,
        output_tokens=needs.max_output_tokens or None,  # output_tokens(body), which needs already read
        needs=needs,
        infeasible=feasible.dropped,
    )


class AgentsStore(ReloadingFile[AgentDirectory, ValueError]):
    """The agent directory file (``agents.yaml``), hot-reloaded like the matrix: an invalid edit (a bad
    entry, YAML, or encoding) is logged and counted, and the last good directory stays in force."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_reload: Callable[[AgentDirectory], None] | None = None,
        on_reject: Callable[[ValueError], None] | None = None,
    ) -> None:
        shown = os.fspath(path)
        super().__init__(
            shown,
            what="agent directory",
            parse=lambda data: parse_agent_directory_yaml(data.decode("utf-8")),
            rejects=(DirectoryError, UnicodeDecodeError),  # both ValueErrors
            unreadable=lambda exc: DirectoryError(f"{shown}: cannot read it: {exc.strerror or exc}"),
            describe=lambda directory: f"{len(directory.agents)} agents",
            on_reload=on_reload,
            on_reject=on_reject,
        )
