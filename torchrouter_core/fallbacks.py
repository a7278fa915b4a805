"""Failure fallbacks per tier: where a request goes when an attempt fails, as the operator configured it.

Two different things move a request off its first group. The *ladder* (:mod:`torchrouter_core.routing`,
:mod:`torchrouter_core.queue_policy`) steps down before anything is sent, when a lane is busy or has no
capacity. The *failure chain* (this module) takes over after an attempt has been sent and failed: an error,
a timeout, a refused connection, or no candidate left in the group (every deployment broken, locked out or
already tried).

Operators set the chain per tier in the agent directory (``classifier/agents.yaml``, ``tiers.<T>.fallbacks``;
default :data:`torchrouter_core.tiering.DEFAULT_FALLBACKS`)::

    H: [cloud-balanced, balanced, code]    # balanced fails -> cloud-balanced -> code
                                           # cloud-balanced fails -> balanced -> code

For one request sent to group ``G`` the chain LiteLLM walks is the tier's chain, in its order, without:

- ``G`` itself, and the groups the ladder already passed over for this request (busy or without capacity:
  a failure does not make them less busy);
- what ``ROUTING_MODE`` forbids: cloud groups under ``local-only``, local groups under ``cloud-only``;
- cloud groups while the day's cloud budget is spent (``cloud_locked``);
- groups no deployment could ever carry the request on (context window, tools, modality: the same
  feasibility rule the ladder uses, :func:`torchrouter_core.feasibility.feasible_steps`).

The classifier sends the result to LiteLLM as the request's own ``fallbacks`` (LiteLLM's client-side
fallbacks: each group tried at most once, in order, until one answers; an empty chain sends
``disable_fallbacks``). Each hop goes through the hooks' filters and VRAM ledger like a first attempt and
never picks a deployment the request already tried; the hooks write one ``fallback_selected`` per hop.

Pure: values in, values out.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence

from capability_matrix import Matrix
from torchrouter_core.feasibility import Impossible, feasible_steps
from torchrouter_core.identity import CLOUD_GROUPS, LOCAL_GROUPS
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.routing import LadderStep, RoutingMode
from torchrouter_core.tiering import AgentDirectory, Tier


def allowed_groups(
    chain: Sequence[str], *, group: str, mode: RoutingMode, cloud_locked: bool, passed: Collection[str] = ()
) -> tuple[str, ...]:
    """The chain for a request sent to ``group``: without it, the groups in ``passed``, and what the
    routing mode and a spent cloud budget forbid (see the module docstring). Order kept."""
    forbidden = set(passed) | {group}
    if mode is RoutingMode.LOCAL_ONLY or cloud_locked:
        forbidden.update(CLOUD_GROUPS)
    if mode is RoutingMode.CLOUD_ONLY:
        forbidden.update(LOCAL_GROUPS)
    return tuple(g for g in chain if g not in forbidden)


def failure_chain(
    chain: Sequence[str],
    *,
    group: str,
    mode: RoutingMode | str,
    cloud_locked: bool,
    matrix: Matrix,
    needs: RequestNeeds,
    passed: Collection[str] = (),
) -> tuple[tuple[str, ...], Mapping[str, str]]:
    """The groups LiteLLM may fall back to after ``group`` fails, in order, and the groups dropped because
    no deployment could ever carry the request (group -> reason, as the feasibility rule words it).
    ``mode``: a :class:`RoutingMode` or its value (``ROUTING_MODE`` as the settings hold it)."""
    steps, groups = _allowed(tuple(chain), group, mode, cloud_locked, tuple(passed))
    if not steps:
        return (), {}
    try:
        feasible = feasible_steps(steps, matrix, needs)
    except Impossible:  # none of them could carry it: nowhere to fall back to
        return (), dict.fromkeys(groups, "infeasible")
    if not feasible.dropped:  # the usual case: every one of them could
        return groups, feasible.dropped
    return tuple(step.group for step in feasible.steps), feasible.dropped


@functools.lru_cache(maxsize=1024)
def _allowed(
    chain: tuple[str, ...], group: str, mode: RoutingMode | str, cloud_locked: bool, passed: tuple[str, ...]
) -> tuple[tuple[LadderStep, ...], tuple[str, ...]]:
    """A function of these alone (a few chains x 6 groups x 3 modes x 2 x the lanes passed over), so it is
    worked out once per combination, not per request (a mode and its value are one key: a StrEnum)."""
    allowed = allowed_groups(
        chain, group=group, mode=RoutingMode(mode), cloud_locked=cloud_locked, passed=passed
    )
    return tuple(LadderStep(g, "cloud" if g in CLOUD_GROUPS else "local") for g in allowed), allowed


def chain_problems(directory: AgentDirectory, groups: Collection[str]) -> list[str]:
    """Every tier's first lane and failure chain checked against the model groups LiteLLM serves
    (``litellm_config.yaml``'s ``model_list``): one line per group it does not have, for
    ``torchrouter validate``."""
    problems: list[str] = []
    for tier in Tier:
        if directory.first_lane(tier) not in groups:
            problems.append(
                f"tiers.{tier}.first_lane: {directory.first_lane(tier)!r} is not a model group in the "
                "LiteLLM config"
            )
        problems.extend(
            f"tiers.{tier}.fallbacks[{index}]: {group!r} is not a model group in the LiteLLM config"
            for index, group in enumerate(directory.fallbacks(tier))
            if group not in groups
        )
    return problems


def hop_allowed(chain: Sequence[str] | None, hop_from: str | None, group: str) -> bool:
    """Whether an attempt may move from group ``hop_from`` to ``group`` for a request whose own failure
    chain is ``chain`` (``None``: the request set none, as a client of LiteLLM itself may: LiteLLM's
    configured fallbacks stand). Staying in a group is always allowed. LiteLLM 1.102.4 continues a stream
    that failed before its first chunk from its configured router-level fallbacks whatever the request
    said, so the hooks check every hop against this."""
    return chain is None or hop_from is None or hop_from == group or group in chain


def next_leg(
    chain: Sequence[str], tried: Sequence[str], leg: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """After one forward to LiteLLM failed before any answer went out: the groups tried so far (``tried``
    then the forward's own ``leg``, in order, each once) and what is left of the request's ``chain`` for
    the next forward, in the chain's order (empty: nothing left)."""
    done = tuple(dict.fromkeys((*tried, *leg)))
    return done, tuple(g for g in chain if g not in done)
