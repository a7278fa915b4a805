"""The chat handler: ``POST /v1/chat/completions`` from request to answer.

Read and check the body, :func:`~torchrouter_core.decide.decide` the route, take a lane slot
(:mod:`classifier.admission`), forward to LiteLLM with the contract's :class:`RouteRequest`, relay the
answer (:mod:`classifier.relay` for streams), and record the outcome in metrics and the trail. What the
hooks report back (:class:`RouteReport`) fills the routing headers and the live view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from capability_matrix import MatrixStore
from classifier.admission import Admission
from classifier.chat_body import parse_chat_body
from classifier.deadlines import Deadlines
from classifier.http_errors import error_response
from classifier.keys import (
    AGENTS_KEY,
    ALIASES_KEY,
    DEADLINES_KEY,
    EVENTS_KEY,
    FLEET_KEY,
    FORWARDER_KEY,
    HOOKS_SEEN_KEY,
    LANES_KEY,
    LEARNED_TIERING_KEY,
    LEDGER_KEY,
    MATRIX_KEY,
    METRICS_KEY,
    REQUEST_IDS_KEY,
    SETTINGS_KEY,
    SPEND_KEY,
)
from classifier.lane_limits import refresh_lane_limits
from classifier.protocol_edge import read_body
from classifier.relay import RELAYED_HEADERS, SSE_TYPE, STREAM_TYPES, Relay, relay_stream
from classifier.routing_headers import RouteTrace, request_id_from
from torchrouter_core.budgets import budget_for
from torchrouter_core.contract import RouteReport, RouteRequest
from torchrouter_core.decide import CloudLocked, RouteDecision, decide
from torchrouter_core.errors import (
    ApiError,
    LiteLLMUnreachable,
    PayloadTooLarge,
    QueueFull,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error,
    upstream_error_body,
    verdict_error,
)
from torchrouter_core.fallbacks import failure_chain, next_leg
from torchrouter_core.feasibility import explain_no_deployment
from torchrouter_core.identity import IdentityError, identify
from torchrouter_core.queue_policy import GroupSnapshot, finite_ms
from torchrouter_core.routing import ladder_step_kind

log = logging.getLogger("torchrouter.classifier")


# The trail's ``status`` is the status line the client was sent; a client that left before one went out is
# recorded with nginx's 499 "client closed request".
CLIENT_CLOSED = 499


def too_large_message(request: web.Request) -> str:
    return f"request body exceeds the limit of {request.app[SETTINGS_KEY].max_body_bytes} bytes"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    settings, metrics, events = app[SETTINGS_KEY], app[METRICS_KEY], app[EVENTS_KEY]
    trace = RouteTrace(request_id=app[REQUEST_IDS_KEY].new())
    client_request_id = request_id_from(request.headers)
    body: dict[str, Any] | None = None
    try:
        body = parse_chat_body(
            await read_body(request, settings.max_body_bytes), request.headers.get("Content-Type")
        )
        now = time.time()
        decision = decide(
            request.headers,
            body,
            agents=app[AGENTS_KEY].current,
            matrix=app[MATRIX_KEY].current,
            routing_mode=settings.routing_mode,
            canary_share=settings.canary_share,
            request_id=client_request_id or trace.request_id,
            now=now,
            cloud_locked=app[FLEET_KEY].budget_reason(now),
            aliases=app[ALIASES_KEY].current,
            learned=app[LEARNED_TIERING_KEY],
        )
    except CloudLocked as exc:
        # Policy, not a bad body: every step of this request's ladder is cloud and cloud is locked out.
        metrics.requests.labels("none", "none", "locked_out").inc()
        events.emit(
            "queue_rejected",
            request_id=trace.request_id,
            agent_id=agent_of(request.headers, body),
            tier=None,
            group=None,
            status=exc.status,
            retry_after_s=exc.retry_after_s,
            message=exc.message,
        )
        return error_response(exc, trace.headers())
    except ApiError as exc:
        return _refused(request, exc, trace, client_request_id, started, body)
    except web.HTTPRequestEntityTooLarge:
        return _refused(
            request, PayloadTooLarge(too_large_message(request)), trace, client_request_id, started, body
        )

    trace.tier, trace.group, trace.canary = decision.tier.value, decision.first_group, decision.canary
    who = {"request_id": trace.request_id, "agent_id": decision.agent_label, "tier": trace.tier}
    events.emit(
        "request_classified",
        **who,
        group=decision.first_group,
        client_request_id=client_request_id,
        identity_source=decision.identity.source,
        tier_source=decision.tier_source,
        signals=list(decision.signals),
        # The learned model's, when it tiered this request (else null and []).
        tier_confidence=decision.tier_confidence,
        tier_features=list(decision.tier_features),
        canary=decision.canary,
        ladder=list(decision.ladder_groups),
        infeasible=dict(decision.infeasible) or None,
        stream=bool(body.get("stream")),
    )
    metrics.child(metrics.tier_decisions, trace.tier, decision.tier_source).inc()
    if decision.canary:
        metrics.canary.inc()

    def on_divert(from_group: str, to_group: str, reason: str, est_ms: float) -> None:
        metrics.child(metrics.diverts, from_group, reason).inc()
        events.emit(
            "degradation_ladder_step",
            **who,
            group=decision.first_group,
            from_group=from_group,
            to_group=to_group or None,
            reason=reason,
            estimated_wait_ms=finite_ms(est_ms),
            step=ladder_step_kind(to_group or None),
        )

    def on_wait(group: str, lane: GroupSnapshot, est_ms: float) -> None:
        # Every slot of the lane is taken and the estimate is within the tier's wait budget: it waits.
        events.emit(
            "degradation_ladder_step",
            **who,
            group=decision.first_group,
            from_group=group,
            to_group=group,
            reason="slots_busy",
            estimated_wait_ms=finite_ms(est_ms),
            step="wait",
            slots=lane.limit,
            busy=lane.active,
            ahead=lane.depth,
            wait_budget_ms=decision.wait_budget_ms,
        )

    outcome = "error"  # until a path below says otherwise: an unexpected exception is never a success
    status = 0
    fallbacks: tuple[str, ...] = ()  # the failure chain sent to LiteLLM (torchrouter_core.fallbacks)
    relay = Relay()
    admission: Admission | None = None
    try:
        admission = await app[LANES_KEY].admit(decision, on_divert, on_wait)
        trace.group = admission.group
        trace.queue_ms = admission.queue_ms
        metrics.child(metrics.queue_wait, admission.group).observe(admission.queue_ms / 1e3)
        if admission.diverts:
            trace.fallback = "ladder:" + "->".join([*(g for g, _ in admission.diverts), admission.group])
        fallbacks = _failure_chain(app, decision, admission)
        call = _Call(request, body, decision, trace, started, relay)
        response = await _forward(call, admission.group, fallbacks)
        outcome = "upstream_error" if relay.status >= 400 else "ok"
        status = relay.sent or relay.status
        return response
    except QueueFull as exc:
        outcome, status = "shed", exc.status
        trace.total_ms = (time.perf_counter() - started) * 1e3
        events.emit(
            "queue_rejected",
            **who,
            group=decision.first_group,
            status=exc.status,
            retry_after_s=exc.retry_after_s,
            message=exc.message,
        )
        return error_response(exc, trace.headers())
    except ApiError as exc:
        outcome = "timeout" if exc.status == 504 else "upstream_unavailable"
        status = exc.status
        if request.transport is None or request.transport.is_closing():
            # The client left first; what failed upstream is a consequence. Nothing went out to it.
            outcome, status = "cancelled", relay.sent or CLIENT_CLOSED
        trace.total_ms = (time.perf_counter() - started) * 1e3
        return error_response(exc, trace.headers())
    except (asyncio.CancelledError, ConnectionResetError):
        # A client that closes once it has read the stream's last event (the OpenAI SDK does, without
        # waiting for the chunked terminator) was answered in full: that is a success, not a cancel.
        # ``status`` is the status line that went out before the client left (499: none had).
        outcome, status = ("ok" if relay.complete else "cancelled"), relay.sent or CLIENT_CLOSED
        raise
    finally:
        if outcome == "error":  # an unexpected exception: the middleware answers 500 unless a stream began
            status = relay.sent or 500
        if admission is not None:
            # Only a model that was resident (warm or hot) measures the lane: a cold load would teach
            # the estimator seconds of load as if every request took that long.
            app[LANES_KEY].release(admission, ok=outcome == "ok", learn=trace.warm_state in ("warm", "hot"))
        total_s = time.perf_counter() - started
        labels = (trace.tier, trace.group)
        metrics.child(metrics.requests, *labels, outcome).inc()
        metrics.child(metrics.request_duration, *labels).observe(total_s)
        if relay.ttft_s is not None:
            metrics.child(metrics.ttft, *labels).observe(relay.ttft_s)
        events.emit(
            "request_completed",
            **who,
            group=trace.group,
            outcome=outcome,
            status=status,
            deployment=None if trace.model == "none" else trace.model,
            fallback=trace.fallback,
            total_ms=round(total_s * 1e3, 1),
            ttft_ms=None if relay.ttft_s is None else round(relay.ttft_s * 1e3, 1),
            queue_ms=round(trace.queue_ms, 1),
            warm_state=trace.warm_state,
            estimated_wait_ms=None if admission is None else round(admission.estimated_ms, 1),
            service_estimate_ms=None if admission is None else round(admission.service_ms, 1),
            fallbacks=list(fallbacks),
        )


@dataclass(frozen=True, slots=True)
class _Call:
    """One admitted request on its way to LiteLLM: what each of its legs (:func:`_forward`) shares.
    ``started``: ``perf_counter`` when it arrived; ``relay``: its answer's progress, which the handler reads
    when the client goes away part-way."""

    request: web.Request
    body: dict[str, Any]
    decision: RouteDecision
    trace: RouteTrace
    started: float
    relay: Relay


class _FailedBeforeAnswer(Exception):
    """A streamed request that failed before any of its answer was relayed: ``why`` (the client's 502
    says it if the chain has nothing left) and the groups LiteLLM went through (the hooks' report)."""

    def __init__(self, why: str, groups: tuple[str, ...]) -> None:
        super().__init__(why)
        self.why, self.groups = why, groups


async def _forward(call: _Call, group: str, fallbacks: tuple[str, ...] = ()) -> web.StreamResponse:
    """Forward ``call`` to LiteLLM with model=group and relay the answer, recording its progress in
    ``call.relay``. ``fallbacks``: the failure chain, sent as LiteLLM's own per-request ``fallbacks`` (none:
    ``disable_fallbacks``).

    A stream that fails before any of its answer went out goes on from here to the groups of the chain
    LiteLLM did not reach, each once: LiteLLM 1.102.4 continues a stream from its fallback group once, so
    when that stream fails before its first chunk too, the rest of the chain would be lost. Each such hop
    is a ``fallback_selected`` and a ``degradation_ladder_step``; with nothing left, the client gets the
    failure as 502 ``upstream_stream_broken`` with its cause, not a 200 followed by an error event."""
    decision, trace, relay = call.decision, call.trace, call.relay
    streaming = call.body.get("stream") is True
    tried: tuple[str, ...] = ()  # groups the earlier legs went through, in order
    base = trace.fallback  # what admission wrote (overflow diverts); each leg's path is added to it
    while True:
        try:
            return await _forward_leg(call, group, fallbacks, streaming, (tried, base))
        except _FailedBeforeAnswer as failed:
            tried, remaining = next_leg(fallbacks, tried, (group, *failed.groups))
            if not remaining:
                relay.status = 502
                trace.total_ms = (time.perf_counter() - call.started) * 1e3
                error = UpstreamUnavailable(failed.why, code="upstream_stream_broken")
                return error_response(error, trace.headers())
            relay.status, relay.ttft_s = 0, None
            hop: dict[str, Any] = {
                "request_id": trace.request_id,
                "agent_id": decision.agent_label,
                "tier": trace.tier,
                "group": decision.first_group,
                "from_group": tried[-1],
                "to_group": remaining[0],
                "reason": "attempt_failed:before_first_chunk",
            }
            events = call.request.app[EVENTS_KEY]
            events.emit("fallback_selected", **hop, planned=True, hop=len(tried))
            events.emit(
                "degradation_ladder_step", **hop, estimated_wait_ms=None, step=ladder_step_kind(remaining[0])
            )
            group, fallbacks = remaining[0], tuple(remaining[1:])


async def _forward_leg(
    call: _Call,
    group: str,
    fallbacks: tuple[str, ...],
    streaming: bool,
    prior: tuple[tuple[str, ...], str],
) -> web.StreamResponse:
    """One request to LiteLLM for ``group`` with the chain ``fallbacks`` (see :func:`_forward`);
    ``prior``: the groups earlier legs went through and the trace's fallback before the first leg."""
    app, decision, trace = call.request.app, call.decision, call.trace
    settings = app[SETTINGS_KEY]
    chain: dict[str, Any] = {"fallbacks": list(fallbacks)} if fallbacks else {"disable_fallbacks": True}
    upstream_body = orjson.dumps({**call.body, "model": group, **decision.upstream_extras, **chain})
    route = RouteRequest(
        request_id=trace.request_id,
        group=group,
        tier=trace.tier,
        agent_id=decision.agent_label,
        needs=decision.needs,
        route=decision.ladder_groups,
        hops=len(prior[0]),  # hops taken before this leg: one into each group the earlier legs reached
    )
    headers = {"Content-Type": "application/json", **route.to_headers()}
    if settings.master_key:
        headers["Authorization"] = "Bearer " + settings.master_key.reveal()
    sent = time.perf_counter()
    # The tier's total budget bounds everything until LiteLLM's answer starts (queue wait and every failed
    # hop included); a non-streamed answer is whole by then, a stream runs on LiteLLM's inter-chunk budget.
    total_s = budget_for(settings.time_budgets, trace.tier).total_s
    deadline = _Deadline(app[DEADLINES_KEY], max(0.001, total_s - (sent - call.started)))
    try:
        return await _exchange(call, upstream_body, headers, group, sent, deadline, streaming, prior)
    except asyncio.CancelledError:
        if deadline.expired and deadline.task.uncancel() == 0:  # our timer, not the client leaving
            raise UpstreamTimeout(f"no answer within the tier's total budget of {total_s:g} s") from None
        raise
    except TimeoutError:
        raise UpstreamTimeout(f"no answer within the tier's total budget of {total_s:g} s") from None
    finally:
        deadline.cancel()


class _Deadline:
    """The tier's total budget as one plain timer that cancels the handler's task when it fires (as the
    lane waiters' timers do): on every request it is cheaper than ``asyncio.timeout``'s context manager,
    ``Timeout`` object and reschedule, and as one of the loop's shared deadlines (classifier.deadlines)
    cheaper than a ``TimerHandle`` of its own. ``expired`` tells the caller the cancellation was the
    budget's."""

    __slots__ = ("_handle", "expired", "task")

    def __init__(self, deadlines: Deadlines, delay_s: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("_Deadline needs a running task (a request handler)")
        self.task = task
        self.expired = False
        self._handle = deadlines.call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def cancel(self) -> None:
        """The answer has started (or the exchange ended): the budget no longer applies."""
        self._handle.cancel()


async def _exchange(
    call: _Call,
    upstream_body: bytes,
    headers: dict[str, str],
    group: str,
    sent: float,
    deadline: _Deadline,
    streaming: bool,
    prior: tuple[tuple[str, ...], str],
) -> web.StreamResponse:
    """One exchange with LiteLLM; ``sent``: when it was forwarded (``perf_counter``). A streamed request
    that failed before any of its answer went out raises :class:`_FailedBeforeAnswer`."""
    app, trace = call.request.app, call.trace
    mirror = app[LEDGER_KEY]
    mirror.started()
    answered = False
    try:
        async with app[FORWARDER_KEY].open(
            "POST", "/v1/chat/completions", upstream_body, headers
        ) as upstream:
            answered = True
            mirror.answered()
            app[HOOKS_SEEN_KEY].litellm_unreachable = None
            deadline.cancel()  # the answer has started: the total budget is met
            headers_at = time.perf_counter()
            why = None
            if upstream.status == 200 and upstream.headers.get("Content-Type", "").startswith(SSE_TYPE):
                # Up to where the answer opens (who answered, when LiteLLM continued it from its fallback,
                # comes first): a stream that failed before it goes on to the rest of the chain.
                why = await upstream.read_ahead()
            report = RouteReport.from_headers(upstream.headers)
            _annotate(trace, report, app[MATRIX_KEY], group, upstream.status < 400 and why is None, prior)
            _learn(app, trace, report, upstream.status)
            try:
                if why is not None and streaming:
                    raise _FailedBeforeAnswer(why, report.groups)
                if streaming and (upstream.status >= 500 or upstream.status == 408):  # LiteLLM's error
                    # before any answer (408: its attempt's timeout), like a stream that failed
                    error = upstream_error(upstream.status, await upstream.read())
                    raise _FailedBeforeAnswer(f"upstream failed: {error['message']}", report.groups)
                return await _relay(call, upstream, group, report, (sent, headers_at))
            finally:  # this request no longer holds a lease or runs anywhere: the mirror drops its part
                mirror.ended(trace.request_id)
    except LiteLLMUnreachable as exc:
        app[HOOKS_SEEN_KEY].litellm_unreachable = exc.message
        raise
    finally:
        if not answered:  # what the last report counted for this request may be gone: LedgerMirror.expire
            mirror.lost(time.time())


async def _relay(
    call: _Call, upstream: Any, group: str, report: RouteReport, times: tuple[float, float]
) -> web.StreamResponse:
    """The answer of :func:`_exchange`, relayed; ``times``: (forwarded, headers in) from ``perf_counter``."""
    request, trace, relay, started = call.request, call.trace, call.relay, call.started
    sent, headers_at = times
    trace.litellm_ttft_ms = (headers_at - sent) * 1e3
    trace.total_ms = (headers_at - started) * 1e3
    out_headers = {h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers}
    content_type = upstream.headers.get("Content-Type", "")
    if upstream.status == 200 and content_type.startswith(STREAM_TYPES):
        return await relay_stream(request, upstream, {**out_headers, **trace.headers()}, relay, started)
    payload = await upstream.read()
    done = time.perf_counter()
    trace.litellm_ttft_ms = (done - sent) * 1e3
    trace.total_ms = (done - started) * 1e3
    relay.status, relay.ttft_s = upstream.status, done - started
    if upstream.status == 429 and b"No deployments available" in payload:
        if report.deployment is not None:
            # A hop had no candidate, but a later one made an attempt, which failed: LiteLLM answers
            # with the first hop's error. The request failed upstream; it was not refused for its shape.
            error: ApiError = UpstreamUnavailable(
                f"no deployment answered: the last attempt, on {report.deployment}, failed",
                code="upstream_error",
            )
        else:
            # LiteLLM's "no deployments" is not "busy": say what it is (torchrouter_core.feasibility).
            verdict = explain_no_deployment(group, report.no_candidate, upstream.headers.get("Retry-After"))
            error = verdict_error(verdict)
        relay.status = error.status
        return error_response(error, trace.headers())
    if upstream.status == 408:  # LiteLLM's attempt timed out upstream: a gateway timeout, not the client's
        timeout = UpstreamTimeout(str(upstream_error(408, payload)["message"]))
        relay.status = timeout.status
        return error_response(timeout, trace.headers())
    if upstream.status >= 400:  # LiteLLM's error, in OpenAI's shape whatever it carried (type, message)
        payload = upstream_error_body(upstream.status, payload)
        out_headers["Content-Type"] = "application/json"
    return web.Response(status=upstream.status, body=payload, headers={**out_headers, **trace.headers()})


def _failure_chain(app: web.Application, decision: RouteDecision, admission: Admission) -> tuple[str, ...]:
    """Where LiteLLM may go after the admitted group fails: the tier's chain from the agents file, without
    the groups the ladder passed over and what the mode, the budget and feasibility rule out."""
    chain, _ = failure_chain(
        app[AGENTS_KEY].current.fallbacks(decision.tier),
        group=admission.group,
        mode=app[SETTINGS_KEY].routing_mode,
        cloud_locked=app[FLEET_KEY].budget_reason(time.time()) is not None,
        matrix=app[MATRIX_KEY].current,
        needs=decision.needs,
        passed=[group for group, _ in admission.diverts],
    )
    return chain


def agent_of(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> str | None:
    """The caller's agent id for a request refused before it was routed: from ``X-Agent-Id`` (or the
    body's ``agent:group`` model) when they name one validly, whatever else was wrong with the request."""
    try:
        return identify(headers, body.get("model") if body is not None else None).agent_id
    except IdentityError:
        if body is not None:
            return agent_of(headers, None)  # the model field was the fault: the header may still name it
        return None


def _refused(
    request: web.Request,
    exc: ApiError,
    trace: RouteTrace,
    client_request_id: str | None,
    started: float,
    body: Mapping[str, Any] | None = None,
) -> web.Response:
    """A request answered before it was routed (bad body, unknown model, impossible): counted, and one
    ``request_completed`` line in the trail like every other request, with the agent its headers (or its
    body's model) name."""
    app = request.app
    app[METRICS_KEY].requests.labels("none", "none", "bad_request").inc()
    trace.total_ms = (time.perf_counter() - started) * 1e3
    app[EVENTS_KEY].emit(
        "request_completed",
        request_id=trace.request_id,
        agent_id=agent_of(request.headers, body),
        tier=None,
        group=None,
        client_request_id=client_request_id,
        outcome="bad_request",
        status=exc.status,
        code=exc.code,
        param=exc.param,
        deployment=None,
        fallback=trace.fallback,
        total_ms=round(trace.total_ms, 1),
        ttft_ms=None,
        queue_ms=0.0,
    )
    return error_response(exc, trace.headers())


def _learn(app: web.Application, trace: RouteTrace, report: RouteReport, status: int) -> None:
    """What a response tells the classifier: who served (warm -> hot), which keys the hooks hold locked
    out (the whole set, on every response), the day's spend from the one book (the hooks'), and how many
    errors the hooks caught."""
    fleet = app[FLEET_KEY]
    if trace.model != "none" and status < 400:
        fleet.served(trace.model)
    if report.degraded is not None:
        app[HOOKS_SEEN_KEY].degraded = report.degraded
    if report.daily_spend_usd is not None:
        if any(d.startswith("spend_book:") for d in report.degraded or ()):
            # The hooks could not read the shared book: their total may be less than the day's (a worker
            # that never read it); never lower the total known, which keeps the budget lockout honest.
            app[SPEND_KEY].at_least(report.daily_spend_usd, time.time())
        else:
            app[SPEND_KEY].mirror(report.daily_spend_usd, time.time())
    if report.hook_errors is not None:
        app[HOOKS_SEEN_KEY].errors = report.hook_errors
    if report.auth_lockouts is not None:
        fleet.set_auth_lockouts(dict.fromkeys(report.auth_lockouts, "provider answered 401/403"))
    if report.ledger is not None:  # lane limits follow when the reservations changed
        app[LEDGER_KEY].update(report.ledger, time.time(), trace.request_id, report.own)
    if report.breakers is not None:
        seen, was = app[HOOKS_SEEN_KEY], app[HOOKS_SEEN_KEY].refused(time.time())
        seen.breakers, seen.breakers_at = report.breakers, time.time()
        if report.breakers != was:  # breaker-refused deployments take their capacity out of the lanes
            refresh_lane_limits(app)


def _annotate(
    trace: RouteTrace,
    report: RouteReport,
    matrix: MatrixStore,
    group: str,
    answered: bool,
    prior: tuple[tuple[str, ...], str] = ((), "none"),
) -> None:
    """Fill the trace from what LiteLLM and our hooks reported; the deployment (``X-Router-Model``,
    ``request_completed.deployment``) and its warm state only when it ``answered`` (an error status names
    none: the hooks' report then names the last attempt, which failed; the trail has every attempt)."""
    if report.deployment and answered:
        trace.model = report.deployment
        if report.warm_state is not None:
            trace.warm_state = report.warm_state.value
    if report.score_ms is not None:
        trace.score_ms = report.score_ms
    earlier, base = prior  # the groups of earlier legs (_forward) and the trace's fallback before them
    groups = (
        (*earlier, *(g for g in report.groups or (group,) if g not in earlier)) if earlier else report.groups
    )
    if len(groups) > 1:  # the hooks' record of every hop's group, in order
        step = "fallback:" + "->".join(groups)
    elif report.fallbacks > 0:  # LiteLLM's own count of failure fallbacks; the deployment names the group
        profile = matrix.current.profiles.get(report.deployment or "")
        step = f"fallback:{group}->{profile.lane if profile is not None else 'unknown'}"
    else:
        return
    base = base if earlier else trace.fallback
    trace.fallback = step if base == "none" else f"{base};{step}"
