"""Thin adapters that LiteLLM calls; the decisions live in :mod:`litellm_hooks.ranker`.

LiteLLM loads ``litellm_hooks.router_hooks`` (see litellm_config.yaml). Nothing happens at import:
state is built on the first call from the environment, and the fleet probe (warm state from each
host's ``/api/ps``) starts then, on LiteLLM's own event loop.

What the hooks keep: the matrix store (hot-reloaded), probe observations, requests in flight per
deployment (the ranker's ``idle`` scorer) and auth lockouts (a provider's 401/403 locks every profile
behind the same credentials until one of them succeeds). Each response carries
``x-torchrouter-auth-lockouts`` so the classifier can show them in ``/capability-matrix``.

Every exception inside a hook is logged and counted; a hook never breaks a request because of its
own bug. The one deliberate failure is an empty candidate list after filtering, which LiteLLM turns
into a "no deployments" error and then its configured fallback group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from litellm.integrations.custom_logger import CustomLogger

from capability_matrix import (
    DEFAULT_MATRIX_PATH,
    FleetProbe,
    FleetView,
    Matrix,
    MatrixStore,
    next_auth_lockouts,
)
from classifier.spend import DailySpend
from classifier.tiering import approx_prompt_tokens
from litellm_hooks.client_watch import ClientWatches, watch_current_client
from litellm_hooks.inflight import InFlight
from litellm_hooks.ranker import FleetLoad, NoCandidate, RequestNeeds, rank
from litellm_hooks.streams import name_the_group, shaped_stream
from torchrouter.events import EventSink, open_sink

log = logging.getLogger("torchrouter.hooks")

# Headers the classifier sets on the request it forwards (lower-cased by LiteLLM).
REQUEST_ID_HEADER = "x-torchrouter-request-id"
AGENT_HEADER = "x-torchrouter-agent-id"
TIER_HEADER = "x-torchrouter-tier"
GROUP_HEADER = "x-torchrouter-group"

_CTX = "torchrouter"  # key inside LiteLLM's request metadata
PROBE_INTERVAL_S = 2.0


@dataclass
class _State:
    fleet: FleetView  # the matrix store plus probe observations, answers and auth lockouts, cached
    events: EventSink
    # A lease as long as LiteLLM's own request timeout (litellm_config.yaml): a request LiteLLM never
    # reports back on (a client gone before the first chunk) stops counting as load after that.
    in_flight: InFlight = field(default_factory=lambda: InFlight(ttl_s=300.0))
    spend: DailySpend = field(default_factory=DailySpend)
    probe_task: asyncio.Task[None] | None = None
    generation: int = 0

    def live_matrix(self, now: float) -> Matrix:
        store = self.fleet.store
        store.maybe_reload(time.monotonic())
        if store.generation != self.generation:
            # An operator's edit of the matrix is the "I fixed it" signal: auth lockouts start over.
            self.generation = store.generation
            self.fleet.set_auth_lockouts({})
        return self.fleet.matrix(now)


def _ctx_of(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Our routing context, wherever this LiteLLM call path keeps the request metadata."""
    for holder in (kwargs, kwargs.get("litellm_params") or {}):
        metadata = holder.get("metadata") if isinstance(holder, Mapping) else None
        if isinstance(metadata, Mapping) and isinstance(metadata.get(_CTX), dict):
            return metadata[_CTX]  # type: ignore[no-any-return]
    return {}


def _deployment_key(kwargs: Mapping[str, Any]) -> str | None:
    model_info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
    key = model_info.get("id") if isinstance(model_info, Mapping) else None
    return key if isinstance(key, str) else None


def _status_of(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class RouterHooks(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self._state: _State | None = None
        self.errors = 0
        self.client_watches = ClientWatches()  # is the client still there? (litellm_hooks/client_watch.py)

    def _get_state(self) -> _State:
        if self._state is None:
            matrix_path = os.environ.get("TORCHROUTER_CAPABILITY_MATRIX_PATH") or str(DEFAULT_MATRIX_PATH)
            spend = DailySpend()
            self._state = _State(
                fleet=FleetView(MatrixStore(matrix_path), daily_budget_usd=None, spend_today=spend.today),
                events=open_sink(os.environ.get("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH")),
                spend=spend,
            )
        state = self._state
        if state.probe_task is None:
            state.probe_task = asyncio.get_running_loop().create_task(self._probe(state), name="hooks-probe")
        return state

    async def _probe(self, state: _State) -> None:
        async with aiohttp.ClientSession() as session:
            probe = FleetProbe(lambda: state.fleet.store.current, session, timeout_s=PROBE_INTERVAL_S)
            await probe.run(PROBE_INTERVAL_S, state.fleet.on_observations)

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
            if data.get("stream") is True:
                self.client_watches.add(data.get("litellm_call_id"), watch_current_client())
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
            now = time.time()
            matrix = state.live_matrix(now)
            kwargs = request_kwargs or {}
            ctx = _ctx_of(kwargs)
            who = {
                "request_id": ctx.get("request_id"),
                "agent_id": ctx.get("agent_id"),
                "tier": ctx.get("tier"),
            }
            by_key: dict[str, dict[str, Any]] = {}
            unknown = []
            for deployment in healthy_deployments:
                key = (deployment.get("model_info") or {}).get("id")
                if isinstance(key, str) and key in matrix.profiles:
                    by_key[key] = deployment
                else:
                    unknown.append(key)
            needs = RequestNeeds(
                # The classifier's estimator: message text and tool schemas, chars / 4.
                prompt_tokens=approx_prompt_tokens(messages, kwargs.get("tools")),
                max_output_tokens=int(kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or 0),
                needs_tools=bool(kwargs.get("tools")),
            )
            first_group = ctx.get("group")
            if first_group and first_group != model:
                state.events.emit(
                    "fallback_selected", **who, group=first_group, from_group=first_group, to_group=model
                )
            hosts = {k: matrix.hosts.get(matrix.profiles[k].host_id) for k in by_key}  # the candidates only
            slots = {k: host.num_parallel if host is not None else 0 for k, host in hosts.items()}
            load = FleetLoad(in_flight=state.in_flight.counts(now), slots=slots)
            try:
                ranking = rank(model, [matrix.profiles[k] for k in by_key], needs, load=load)
            except NoCandidate as exc:
                state.events.emit(
                    "route_selected",
                    **who,
                    group=model,
                    deployment=None,
                    rejected=exc.rejected,
                    unknown_deployments=unknown,
                    reason=str(exc),
                )
                return []
            chosen = ranking.chosen
            score_ms = sum(ranking.timings_ms.values())
            ctx["score_ms"] = round(score_ms, 3)
            ctx["deployment"] = chosen.key
            ctx["warm_state"] = chosen.warm_state.value
            if ctx.get("request_id"):
                state.in_flight.start(chosen.key, str(ctx["request_id"]), now)
            state.events.emit(
                "route_selected",
                **who,
                group=model,
                deployment=chosen.key,
                host_id=chosen.host_id,
                model=chosen.model,
                warm_state=chosen.warm_state.value,
                candidates=len(by_key),
                scores=ranking.scores,
                rejected=ranking.rejected,
                unknown_deployments=unknown,
                score_ms=round(score_ms, 3),
            )
            return [by_key[chosen.key]]
        except Exception:
            self._failed("filter_deployments")
            return healthy_deployments

    # --- outcomes: free the in-flight slot, learn warm and auth state --------------------------------
    def _finished(self, kwargs: dict[str, Any], status: int | None) -> None:
        state = self._state
        key = _deployment_key(kwargs)
        if state is None or key is None:
            return
        ctx = _ctx_of(kwargs)
        if ctx.get("request_id"):
            state.in_flight.finish(key, str(ctx["request_id"]))
        matrix = state.fleet.store.current
        if key not in matrix.profiles:
            return
        if status is None:
            state.fleet.served(key)
        # The hooks see the provider's answer (None: a success); the fleet view keeps the one book.
        fleet = state.fleet
        fleet.set_auth_lockouts(
            next_auth_lockouts(matrix, fleet.auth_lockouts, key, 200 if status is None else status)
        )

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            self._finished(kwargs, None)
            cost = kwargs.get("response_cost")
            if self._state is not None and isinstance(cost, int | float):
                self._state.spend.add(cost, time.time())  # DailySpend counts only a real amount
        except Exception:
            self._failed("log_success")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            self.client_watches.take(kwargs.get("litellm_call_id"))  # a stream that never started
            self._finished(kwargs, _status_of(kwargs.get("exception")) or 0)
        except Exception:
            self._failed("log_failure")

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
            ctx = _ctx_of(data)
            headers = {}
            if "score_ms" in ctx:
                headers["x-torchrouter-score-ms"] = f"{ctx['score_ms']:.3f}"
            if ctx.get("deployment"):
                headers["x-torchrouter-deployment"] = str(ctx["deployment"])
                headers["x-torchrouter-warm-state"] = str(ctx.get("warm_state", "unknown"))
            headers["x-torchrouter-hook-errors"] = str(self.errors)  # exported by the classifier
            if self._state is not None:
                headers["x-torchrouter-auth-lockouts"] = ",".join(sorted(self._state.fleet.auth_lockouts))
                # Every answer's cost, streamed ones included, totalled here: the classifier's budget.
                headers["x-torchrouter-daily-spend-usd"] = f"{self._state.spend.today(time.time()):.8f}"
            return headers
        except Exception:
            self._failed("response_headers")
            return None

    def _abandoned(self, request_data: dict[str, Any]) -> None:
        """A stream closed because its client left: LiteLLM reports neither success nor failure for it, so
        the deployment's in-flight count is ended here, and the trail says so (``upstream_cancelled``)."""
        try:
            state, ctx = self._state, _ctx_of(request_data)
            key, request_id = ctx.get("deployment"), ctx.get("request_id")
            if state is None:
                return
            if key and request_id:
                state.in_flight.finish(str(key), str(request_id))
            state.events.emit(
                "upstream_cancelled",
                request_id=request_id,
                agent_id=ctx.get("agent_id"),
                tier=ctx.get("tier"),
                group=ctx.get("group"),
                deployment=key,
                reason="client_disconnected",
            )
        except Exception:
            self._failed("stream_abandoned")

    # --- answers and streams in OpenAI's shape, streams stopped for a client that left (streams.py) ---
    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        try:
            name_the_group(data, response)
        except Exception:
            self._failed("post_call_success")
        return None

    def async_post_call_streaming_iterator_hook(  # returns the generator itself: no extra hop per chunk
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        return shaped_stream(
            response,
            request_data,
            client_gone=self.client_watches.take(request_data.get("litellm_call_id")),
            on_error=self._failed,
            on_abandoned=lambda: self._abandoned(request_data),
        )
