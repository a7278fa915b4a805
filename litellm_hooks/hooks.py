"""Thin adapters that LiteLLM calls; the decisions live in :mod:`litellm_hooks.ranker`.

LiteLLM loads ``litellm_hooks.router_hooks`` (see litellm_config.yaml). Nothing happens at import:
state (the matrix store, the event sink) is built on the first call from the environment.

Every exception inside a hook is logged and counted; a hook never breaks a request because of its
own bug. The one deliberate failure is an empty candidate list after filtering, which LiteLLM turns
into a "no deployments" error and then its configured fallback group.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from capability_matrix import MatrixStore
from litellm_hooks.ranker import NoCandidate, RequestNeeds, rank
from torchrouter.events import EventSink, open_sink

log = logging.getLogger("torchrouter.hooks")

# Headers the classifier sets on the request it forwards (lower-cased by LiteLLM).
REQUEST_ID_HEADER = "x-torchrouter-request-id"
AGENT_HEADER = "x-torchrouter-agent-id"
TIER_HEADER = "x-torchrouter-tier"
GROUP_HEADER = "x-torchrouter-group"

_CTX = "torchrouter"  # key inside LiteLLM's request metadata


@dataclass
class _State:
    matrix: MatrixStore
    events: EventSink


def _approx_tokens(messages: object) -> int:
    # chars/4: a deliberate over-estimate for English and code; the context-window filter needs a bound,
    # not a tokenizer on the hot path.
    if not isinstance(messages, list):
        return 0
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, Mapping))
    return chars // 4


class RouterHooks(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self._state: _State | None = None
        self.errors = 0

    def _get_state(self) -> _State:
        if self._state is None:
            from classifier.settings import DEFAULT_MATRIX_PATH  # path constant only; no server code

            matrix_path = os.environ.get("TORCHROUTER_CAPABILITY_MATRIX_PATH") or str(DEFAULT_MATRIX_PATH)
            self._state = _State(
                matrix=MatrixStore(matrix_path),
                events=open_sink(os.environ.get("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH")),
            )
        return self._state

    def _failed(self, where: str) -> None:
        self.errors += 1
        log.exception("torchrouter hook %s failed; request continues without it", where)

    # --- request entry: copy the classifier's routing context into LiteLLM's metadata ---------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        try:
            headers = (data.get("proxy_server_request") or {}).get("headers") or {}
            metadata = data.setdefault("metadata", {})
            metadata[_CTX] = {
                "request_id": headers.get(REQUEST_ID_HEADER) or data.get("litellm_call_id"),
                "agent_id": headers.get(AGENT_HEADER),
                "tier": headers.get(TIER_HEADER),
                "group": headers.get(GROUP_HEADER) or data.get("model"),
            }
        except Exception:
            self._failed("pre_call")
        return data

    # --- per attempt (fallbacks included): filter, rank, pick one deployment -------------------------
    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[dict[str, Any]],
        messages: list[Any] | None,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[dict[str, Any]]:
        try:
            state = self._get_state()
            state.matrix.maybe_reload(time.monotonic())
            matrix = state.matrix.current
            kwargs = request_kwargs or {}
            ctx: dict[str, Any] = (kwargs.get("metadata") or {}).get(_CTX) or {}
            by_key = {}
            unknown = []
            for deployment in healthy_deployments:
                key = (deployment.get("model_info") or {}).get("id")
                profile = matrix.profiles.get(key) if isinstance(key, str) else None
                if profile is None:
                    unknown.append(key)
                else:
                    by_key[profile.key] = deployment
            needs = RequestNeeds(
                prompt_tokens=_approx_tokens(messages),
                max_output_tokens=int(kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or 0),
                needs_tools=bool(kwargs.get("tools")),
            )
            first_group = ctx.get("group")
            if first_group and first_group != model:
                state.events.emit(
                    "fallback_selected",
                    request_id=ctx.get("request_id"),
                    agent_id=ctx.get("agent_id"),
                    tier=ctx.get("tier"),
                    group=first_group,
                    from_group=first_group,
                    to_group=model,
                )
            try:
                ranking = rank(model, [matrix.profiles[k] for k in by_key], needs)
            except NoCandidate as exc:
                state.events.emit(
                    "route_selected",
                    request_id=ctx.get("request_id"),
                    agent_id=ctx.get("agent_id"),
                    tier=ctx.get("tier"),
                    group=model,
                    deployment=None,
                    rejected=exc.rejected,
                    unknown_deployments=unknown,
                    reason=str(exc),
                )
                return []
            score_ms = sum(ranking.timings_ms.values())
            ctx["score_ms"] = round(score_ms, 3)
            ctx["deployment"] = ranking.chosen.key
            state.events.emit(
                "route_selected",
                request_id=ctx.get("request_id"),
                agent_id=ctx.get("agent_id"),
                tier=ctx.get("tier"),
                group=model,
                deployment=ranking.chosen.key,
                host_id=ranking.chosen.host_id,
                model=ranking.chosen.model,
                candidates=len(by_key),
                scores=ranking.scores,
                rejected=ranking.rejected,
                unknown_deployments=unknown,
                score_ms=round(score_ms, 3),
            )
            return [by_key[ranking.chosen.key]]
        except Exception:
            self._failed("filter_deployments")
            return healthy_deployments

    # --- response headers (errors too) ---------------------------------------------------------------
    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        try:
            ctx = (data.get("metadata") or {}).get(_CTX) or {}
            headers = {}
            if "score_ms" in ctx:
                headers["x-torchrouter-score-ms"] = f"{ctx['score_ms']:.3f}"
            if ctx.get("deployment"):
                headers["x-torchrouter-deployment"] = str(ctx["deployment"])
            return headers
        except Exception:
            self._failed("response_headers")
            return None
