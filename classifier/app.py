"""The classifier's aiohttp application: wiring, middlewares and thin handlers.

``create_app(settings)`` builds everything from values passed in; nothing happens at import. Each
long-lived resource (the forwarder's client session, the config watchers, the event sink) has its
own ``cleanup_ctx``. Decisions are made by the pure modules (:mod:`classifier.decide`,
:mod:`classifier.queue_policy`); handlers read the request, call them, forward, and record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from capability_matrix import MatrixError, MatrixStore
from capability_matrix import watch as watch_matrix
from classifier.chat_body import parse_chat_body
from classifier.decide import AgentsStore, RouteDecision, decide
from classifier.errors import ApiError, PayloadTooLarge, error_response, http_error_response
from classifier.forwarder import Forwarder, HttpForwarder, UpstreamResponse
from classifier.identity import GROUPS
from classifier.metrics import Metrics
from classifier.routing_headers import RouteTrace
from classifier.settings import Settings
from classifier.spend import DailySpend, parse_cost
from torchrouter.events import EventSink, JsonlEventSink, open_sink

log = logging.getLogger("torchrouter.classifier")

SETTINGS_KEY = web.AppKey("settings", Settings)
FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
METRICS_KEY = web.AppKey("metrics", Metrics)
EVENTS_KEY = web.AppKey("events", EventSink)
MATRIX_KEY = web.AppKey("matrix", MatrixStore)
AGENTS_KEY = web.AppKey("agents", AgentsStore)
SPEND_KEY = web.AppKey("spend", DailySpend)

# Upstream response headers relayed to the client as they are.
_RELAYED = ("Content-Type", "Cache-Control", "x-litellm-response-cost", "x-litellm-attempted-fallbacks")
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson")


# --- middlewares --------------------------------------------------------------------------------------
@web.middleware
async def openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as OpenAI-shaped JSON; an unexpected one is logged, never a crash."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge(_too_large_message(request)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc.status, exc.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return http_error_response(500, "internal error in the classifier; see its log")


def _too_large_message(request: web.Request) -> str:
    return f"request body exceeds the limit of {request.app[SETTINGS_KEY].max_body_bytes} bytes"


def setup_middlewares(app: web.Application) -> None:
    app.middlewares.append(openai_errors)


# --- resources ----------------------------------------------------------------------------------------
def _forwarder_ctx(forwarder: Forwarder | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        app[FORWARDER_KEY] = forwarder or HttpForwarder(
            settings.litellm_url, timeout_s=settings.upstream_timeout_s
        )
        yield
        await app[FORWARDER_KEY].close()

    return ctx


async def _watchers_ctx(app: web.Application) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(watch_matrix(app[MATRIX_KEY], 1.0), name="matrix-watch"),
        asyncio.create_task(app[AGENTS_KEY].watch(1.0), name="agents-watch"),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    sink = app[EVENTS_KEY]
    if isinstance(sink, JsonlEventSink):
        sink.close()


def create_app(
    settings: Settings,
    *,
    forwarder: Forwarder | None = None,
    registry: CollectorRegistry | None = None,
    events: EventSink | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    metrics = Metrics(registry or CollectorRegistry())
    app[METRICS_KEY] = metrics
    app[EVENTS_KEY] = events or open_sink(settings.event_path)
    app[SPEND_KEY] = DailySpend()

    def matrix_reloaded(_: object) -> None:
        metrics.matrix_reloads.labels("reloaded").inc()

    def matrix_rejected(exc: MatrixError) -> None:
        metrics.matrix_reloads.labels("rejected").inc()
        app[EVENTS_KEY].emit(
            "matrix_rejected",
            request_id=None,
            agent_id=None,
            tier=None,
            group=None,
            problems=[str(p) for p in exc.problems][:50],
        )

    app[MATRIX_KEY] = MatrixStore(settings.matrix_path, on_reload=matrix_reloaded, on_reject=matrix_rejected)
    app[AGENTS_KEY] = AgentsStore(
        settings.agents_path,
        on_reload=lambda: metrics.config_reloads.labels("reloaded").inc(),
        on_reject=lambda: metrics.config_reloads.labels("rejected").inc(),
    )
    setup_middlewares(app)
    app.cleanup_ctx.append(_forwarder_ctx(forwarder))
    app.cleanup_ctx.append(_watchers_ctx)
    app.cleanup_ctx.append(_events_ctx)
    app.router.add_get("/health", health)
    app.router.add_get("/capability-matrix", capability_matrix)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


# --- small handlers -----------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    spend = request.app[SPEND_KEY].today(time.time())
    return _json({"status": "ok", "daily_spend_usd": round(spend, 6)})


async def capability_matrix(request: web.Request) -> web.Response:
    return _json(request.app[MATRIX_KEY].current.to_json())


async def metrics_text(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    metrics.daily_spend.set(request.app[SPEND_KEY].today(time.time()))
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def models(request: web.Request) -> web.Response:
    data = [
        {"id": g, "object": "model", "created": 0, "owned_by": "torchrouter"}
        for g in ("auto", *sorted(GROUPS))
    ]
    return _json({"object": "list", "data": data})


# --- the request path ---------------------------------------------------------------------------------
async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    settings, metrics, events = app[SETTINGS_KEY], app[METRICS_KEY], app[EVENTS_KEY]
    trace = RouteTrace(request_id=uuid.uuid4().hex)
    try:
        body = parse_chat_body(await request.read())
        decision = decide(
            request.headers,
            body,
            agents=app[AGENTS_KEY].current,
            matrix=app[MATRIX_KEY].current,
            routing_mode=settings.routing_mode,
            canary_share=settings.canary_share,
            request_id=trace.request_id,
        )
    except ApiError as exc:
        metrics.requests.labels("none", "none", "bad_request").inc()
        return error_response(exc, trace.headers())
    except web.HTTPRequestEntityTooLarge:
        metrics.requests.labels("none", "none", "bad_request").inc()
        return error_response(PayloadTooLarge(_too_large_message(request)), trace.headers())

    group = decision.first_group
    trace.tier, trace.group, trace.canary = decision.tier.value, group, decision.canary
    events.emit(
        "request_classified",
        request_id=trace.request_id,
        agent_id=decision.agent_label,
        tier=trace.tier,
        group=group,
        identity_source=decision.identity.source,
        tier_source=decision.tier_source,
        signals=list(decision.signals),
        canary=decision.canary,
        ladder=list(decision.ladder_groups),
        stream=bool(body.get("stream")),
    )
    metrics.tier_decisions.labels(trace.tier, decision.tier_source).inc()
    if decision.canary:
        metrics.canary.inc()

    outcome = "ok"
    status = 0
    ttft_s: float | None = None
    try:
        response, status, ttft_s = await _forward(request, body, decision, group, trace, started)
        if status >= 400:
            outcome = "upstream_error"
        return response
    except ApiError as exc:
        outcome = "timeout" if exc.status == 504 else "upstream_unavailable"
        status = exc.status
        trace.total_ms = (time.perf_counter() - started) * 1e3
        return error_response(exc, trace.headers())
    except (asyncio.CancelledError, ConnectionResetError):
        outcome = "cancelled"
        raise
    finally:
        total_s = time.perf_counter() - started
        labels = (trace.tier, group)
        metrics.requests.labels(*labels, outcome).inc()
        metrics.request_duration.labels(*labels).observe(total_s)
        if ttft_s is not None:
            metrics.ttft.labels(*labels).observe(ttft_s)
        events.emit(
            "request_completed",
            request_id=trace.request_id,
            agent_id=decision.agent_label,
            tier=trace.tier,
            group=group,
            outcome=outcome,
            status=status,
            deployment=trace.model,
            fallback=trace.fallback,
            total_ms=round(total_s * 1e3, 1),
            ttft_ms=None if ttft_s is None else round(ttft_s * 1e3, 1),
            queue_ms=round(trace.queue_ms, 1),
        )


async def _forward(
    request: web.Request,
    body: dict[str, Any],
    decision: RouteDecision,
    group: str,
    trace: RouteTrace,
    started: float,
) -> tuple[web.StreamResponse, int, float | None]:
    """Forward to LiteLLM with model=group; relay the answer. Returns (response, status, ttft seconds)."""
    app = request.app
    settings = app[SETTINGS_KEY]
    upstream_body = orjson.dumps({**body, "model": group, **decision.upstream_extras})
    headers = {
        "Content-Type": "application/json",
        "x-torchrouter-request-id": trace.request_id,
        "x-torchrouter-tier": trace.tier,
        "x-torchrouter-group": group,
    }
    if decision.agent_label:
        headers["x-torchrouter-agent-id"] = decision.agent_label
    if settings.master_key:
        headers["Authorization"] = "Bearer " + settings.master_key.reveal()
    sent = time.perf_counter()
    async with app[FORWARDER_KEY].open("POST", "/v1/chat/completions", upstream_body, headers) as upstream:
        headers_at = time.perf_counter()
        _annotate(trace, upstream, app[MATRIX_KEY], group)
        trace.litellm_ttft_ms = (headers_at - sent) * 1e3
        trace.total_ms = (headers_at - started) * 1e3
        app[SPEND_KEY].add(parse_cost(upstream.headers.get("x-litellm-response-cost")), time.time())
        out_headers = {h: upstream.headers[h] for h in _RELAYED if h in upstream.headers}
        content_type = upstream.headers.get("Content-Type", "")
        if upstream.status == 200 and content_type.startswith(_STREAM_TYPES):
            # Stream: headers go now, before the first byte; TTFT and total go to events and metrics.
            response = web.StreamResponse(status=200, headers={**out_headers, **trace.headers()})
            await response.prepare(request)
            ttft: float | None = None
            async for chunk in upstream.iter_chunks():
                if ttft is None:
                    ttft = time.perf_counter() - started
                await response.write(chunk)
            await response.write_eof()
            return response, 200, ttft
        payload = await upstream.read()
        done = time.perf_counter()
        trace.litellm_ttft_ms = (done - sent) * 1e3
        trace.total_ms = (done - started) * 1e3
        return (
            web.Response(status=upstream.status, body=payload, headers={**out_headers, **trace.headers()}),
            upstream.status,
            done - started,
        )


def _annotate(trace: RouteTrace, upstream: UpstreamResponse, matrix: MatrixStore, group: str) -> None:
    """Fill the trace from what LiteLLM and our hooks reported."""
    deployment = upstream.headers.get("x-torchrouter-deployment") or upstream.headers.get(
        "x-litellm-model-id"
    )
    if deployment:
        trace.model = deployment
    score = upstream.headers.get("x-torchrouter-score-ms")
    if score:
        with contextlib.suppress(ValueError):
            trace.score_ms = float(score)
    profile = matrix.current.profiles.get(trace.model)
    if profile is not None and profile.lane != group:
        trace.fallback = f"{group}->{profile.lane}"
