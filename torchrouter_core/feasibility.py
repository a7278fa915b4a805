"""Impossible is not busy: which steps of a route could ever carry a request, decided before forwarding.

A request that no deployment of a ladder step could carry, whatever the load, is not worth queueing for
that step: the step is dropped from the ladder (the request goes straight to one that can). When no step
is left, the answer is a 400 that names the limit, never a 429/503 (those mean "busy now, retry"):

=====================  =====================================================  ===========================
what no deployment    example                                                 code
=====================  =====================================================  ===========================
the context window     prompt (chars / 4, the hooks' estimator) + max_tokens   ``context_length_exceeded``
                       above every window (OpenAI's code for the same case)
an input modality      an ``image_url`` part on a text-only route              ``unsupported_modality``
tool support           ``tools`` on a route whose models cannot call tools     ``tools_not_supported``
=====================  =====================================================  ===========================

Only static capabilities count (``context_window``, ``input_modalities``, ``supports_tools`` from the
matrix); lockouts, warm state and load are "now", which the queue and the hooks handle. A lane with no
profiles in the matrix is kept as it is (nothing to judge it by).

:func:`explain_no_deployment` does the same for the other direction: LiteLLM answers 429 "No deployments
available" when our hooks filtered out every deployment of a group; the hooks say why in
``x-torchrouter-no-candidate`` and the classifier turns it into the truthful status.

Pure: values in, values out; imports no aiohttp, LiteLLM or prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from capability_matrix import Matrix, Profile
from torchrouter_core.needs import TEXT_ONLY, input_modalities
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.routing import LadderStep

CONTEXT: Final = "context_window"
TOOLS: Final = "no_tools"
MODALITY_PREFIX: Final = "modality:"
# Reasons the hooks' filters give that no amount of waiting changes (see torchrouter_core.ranker.filters).
STATIC_REASONS: Final = (CONTEXT, TOOLS)


class Impossible(ValueError):
    """No step of the route could ever carry the request; the HTTP edge answers 400 with ``code`` (OpenAI's
    where one exists) and ``param``."""

    def __init__(self, message: str, *, code: str = "request_not_servable", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer for LiteLLM's "No deployments available": ``status`` 400 (never servable) or 503
    (not now); ``retry_after`` in seconds, only when waiting can help."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after: str | None = None


def why_not(profile: Profile, needs: RequestNeeds) -> str | None:
    """Why ``profile`` could never carry the request (a short stable reason), or ``None``."""
    missing = sorted(needs.modalities - profile.input_modalities)
    if missing:
        return MODALITY_PREFIX + missing[0]
    if needs.needs_tools and not profile.supports_tools:
        return TOOLS
    if needs.prompt_tokens + needs.max_output_tokens > profile.context_window:
        return CONTEXT
    return None


@dataclass(frozen=True, slots=True)
class Feasible:
    """The ladder steps kept, in order, and why each dropped group was dropped."""

    steps: tuple[LadderStep, ...]
    dropped: Mapping[str, str]


# The largest context window per lane, for the last matrix seen: a text-only request without tools (almost
# all of them) is then judged by one comparison: its size against the smallest of those over its ladder's
# lanes, worked out once per ladder (ladders are built once per combination, so the same tuple comes back).
# The matrix is kept with its summary, so a reloaded matrix (a new object) is never mistaken for the old one.
_windows: tuple[Matrix, dict[str, int]] | None = None
_ladder_fits: dict[int, tuple[Sequence[LadderStep], float, Feasible]] = {}
_MAX_LADDERS: Final = 512  # canary ladders are new tuples each time: start over rather than grow


def _largest_windows(matrix: Matrix) -> dict[str, int]:
    global _windows
    cached = _windows
    if cached is not None and cached[0] is matrix:
        return cached[1]
    windows = {lane: max(p.context_window for p in matrix.in_lane(lane)) for lane in matrix.lanes()}
    _windows = (matrix, windows)
    _ladder_fits.clear()
    return windows


def _text_fit(ladder: Sequence[LadderStep], matrix: Matrix) -> tuple[float, Feasible]:
    """The largest text-only request without tools that every step of ``ladder`` could carry (a lane
    without profiles carries any), and the whole ladder kept."""
    windows = _largest_windows(matrix)
    found = _ladder_fits.get(id(ladder))
    if found is not None and found[0] is ladder:
        return found[1], found[2]
    limit = min((windows[s.group] for s in ladder if s.group in windows), default=math.inf)
    whole = Feasible(tuple(ladder), _NONE_DROPPED)
    if len(_ladder_fits) >= _MAX_LADDERS:
        _ladder_fits.clear()
    _ladder_fits[id(ladder)] = (ladder, limit, whole)
    return limit, whole


_NONE_DROPPED: Final[Mapping[str, str]] = MappingProxyType({})


def feasible_steps(
    ladder: Sequence[LadderStep], matrix: Matrix, needs: RequestNeeds, messages: object = None
) -> Feasible:
    """Keep the steps some deployment of whose lane could carry ``needs``; raise :class:`Impossible`
    (a 400 at the HTTP edge) when none is left, naming the limit (see the module docstring) and, for a
    modality, the first content part of ``messages`` that needs it."""
    if needs.modalities == TEXT_ONLY and not needs.needs_tools:
        limit, whole = _text_fit(ladder, matrix)
        if needs.prompt_tokens + needs.max_output_tokens <= limit:
            return whole
    kept: list[LadderStep] = []
    dropped: dict[str, str] = {}
    for step in ladder:
        profiles = matrix.in_lane(step.group)
        if not profiles:
            kept.append(step)
            continue
        reasons = [why_not(p, needs) for p in profiles]
        if any(r is None for r in reasons):
            kept.append(step)
        else:
            dropped[step.group] = _lane_reason([r for r in reasons if r is not None])
    if not kept:
        raise impossible(ladder, matrix, needs, dropped, messages)
    return Feasible(tuple(kept), dropped)


def _lane_reason(reasons: Sequence[str]) -> str:
    """One reason for a lane: a modality first (no amount of context fixes it), then tools, then size."""
    for prefix in (MODALITY_PREFIX, TOOLS, CONTEXT):
        for reason in reasons:
            if reason.startswith(prefix):
                return reason
    return reasons[0]


def _groups(ladder: Iterable[LadderStep]) -> str:
    return ", ".join(dict.fromkeys(step.group for step in ladder))


def impossible(
    ladder: Sequence[LadderStep],
    matrix: Matrix,
    needs: RequestNeeds,
    dropped: Mapping[str, str],
    messages: object = None,
) -> Impossible:
    route = _groups(ladder)
    reasons = set(dropped.values())
    modality = next((r for r in sorted(reasons) if r.startswith(MODALITY_PREFIX)), None)
    if modality is not None and reasons == {modality}:
        kind = modality.removeprefix(MODALITY_PREFIX)
        readers = sorted({p.lane for p in matrix.profiles.values() if kind in p.input_modalities})
        elsewhere = f"; groups that read {kind}: {', '.join(readers)}" if readers else ""
        return Impossible(
            f"no deployment on this request's route ({route}) accepts {kind} input{elsewhere}",
            code="unsupported_modality",
            param=input_modalities(messages)[1].get(kind, "messages"),
        )
    if reasons == {TOOLS}:
        return Impossible(
            f"no deployment on this request's route ({route}) supports tools",
            code="tools_not_supported",
            param="tools",
        )
    if reasons == {CONTEXT}:
        largest = max(p.context_window for step in ladder for p in matrix.in_lane(step.group))
        asked = needs.prompt_tokens + needs.max_output_tokens
        param = "max_tokens" if needs.max_output_tokens > largest - needs.prompt_tokens // 2 else "messages"
        return Impossible(
            f"This request needs about {asked:,} tokens (prompt about {needs.prompt_tokens:,} + "
            f"max_tokens {needs.max_output_tokens:,}), but the largest context window on its route "
            f"({route}) is {largest:,} tokens. Shorten the messages or lower max_tokens.",
            code="context_length_exceeded",
            param=param,
        )
    detail = "; ".join(f"{group}: {why}" for group, why in dropped.items())
    return Impossible(
        f"no deployment on this request's route can ever carry it ({detail})", code="request_not_servable"
    )


def explain_no_deployment(group: str, reasons_header: str | None, retry_after: str | None) -> Verdict:
    """The truthful error for LiteLLM's 429 "No deployments available" on ``group``.

    ``reasons_header`` is the hooks' ``x-torchrouter-no-candidate`` (comma-separated filter reasons of
    the rejected deployments; absent when LiteLLM itself found none, e.g. every one cooling down).
    Static reasons only (context, tools, a modality) -> 400: retrying cannot help. Lockouts only (auth,
    codex, budget) -> 503 without ``Retry-After``: unavailable until an operator or the next day changes
    it, not busy. Anything else (LiteLLM's cooldowns, a mix) -> 503 with ``Retry-After``."""
    reasons = {r.strip() for r in (reasons_header or "").split(",") if r.strip()}
    if reasons and all(r in STATIC_REASONS or r.startswith(MODALITY_PREFIX) for r in reasons):
        if reasons == {CONTEXT}:
            return Verdict(
                400,
                "context_length_exceeded",
                f"no deployment of {group!r} has a context window large enough for this request "
                "(prompt + max_tokens); shorten the messages or lower max_tokens",
                param="messages",
            )
        shown = ", ".join(sorted(reasons))
        return Verdict(
            400, "request_not_servable", f"no deployment of {group!r} can carry this request ({shown})"
        )
    if reasons and all(r.startswith("lockout:") for r in reasons):
        # Locked out (bad credentials, the operator's switch, the budget): not capacity, no retry time.
        shown = ", ".join(sorted(reasons))
        return Verdict(
            503,
            "no_deployment_available",
            f"no deployment of {group!r} is available: every one is locked out ({shown})",
        )
    seconds = retry_after if retry_after and retry_after.isdigit() else "5"
    why = f" ({', '.join(sorted(reasons))})" if reasons else " (every deployment is cooling down)"
    return Verdict(
        503,
        "no_deployment_available",
        f"no deployment of {group!r} can take requests now{why}; retry later",
        retry_after=seconds,
    )
