"""The classifier's aiohttp application: wiring, middlewares and thin handlers.

``create_app(settings)`` builds everything from values passed in; nothing happens at import. Each
long-lived resource (the forwarder's client session, the config watchers, the event sink) has its
own ``cleanup_ctx``. Decisions are made by the pure modules (:mod:`classifier.decide`,
:mod:`classifier.queue_policy`); handlers read the request, call them, forward, and record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from capability_matrix import (
    FleetProbe,
    FleetView,
    HostObservation,
    Matrix,
    MatrixError,
    MatrixStore,
    NvmlGpuReader,
)
from capability_matrix import watch as watch_file
from classifier.admission import Admission, Lanes
from classifier.capacity import lane_limits
from classifier.chat_body import parse_chat_body
from classifier.decide import AgentsStore, CloudLocked, RouteDecision, decide
from classifier.errors import (
    ApiError,
    PayloadTooLarge,
    QueueFull,
    Unauthorized,
    error_response,
    http_error_response,
)
from classifier.forwarder import Forwarder, HttpForwarder, UpstreamResponse
from classifier.identity import GROUPS, LOCAL_GROUPS
from classifier.metrics import Metrics
from classifier.queue_policy import finite_ms
from classifier.routing import RoutingMode, overflow
from classifier.routing_headers import RequestIds, RouteTrace, request_id_from
from classifier.settings import Settings, SettingsError
from classifier.spend import DailySpend, parse_cost
from classifier.tier_model import TierModelError, load_tier_model
from classifier.tiering import LearnedTiering, Tier
from torchrouter.events import EventSink, open_sink

log = logging.getLogger("torchrouter.classifier")

SETTINGS_KEY = web.AppKey("settings", Settings)
FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
METRICS_KEY = web.AppKey("metrics", Metrics)
EVENTS_KEY = web.AppKey("events", EventSink)
MATRIX_KEY = web.AppKey("matrix", MatrixStore)
AGENTS_KEY = web.AppKey("agents", AgentsStore)
SPEND_KEY = web.AppKey("spend", DailySpend)
FLEET_KEY = web.AppKey("fleet", FleetView)
LANES_KEY = web.AppKey("lanes", Lanes)
REQUEST_IDS_KEY = web.AppKey("request_ids", RequestIds)
LITELLM_FALLBACKS_KEY = web.AppKey("litellm_fallbacks", dict[str, list[str]])
LEARNED_TIERING_KEY: web.AppKey[LearnedTiering | None] = web.AppKey("learned_tiering")

# Upstream response headers relayed to the client as they are.
_RELAYED = (
    "Content-Type",
    "Cache-Control",
    "Retry-After",
    "x-litellm-response-cost",
    "x-litellm-attempted-fallbacks",
)
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


@web.middleware
async def client_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With TORCHROUTER_CLIENT_KEYS set, /v1/* needs ``Authorization: Bearer <one of them>``."""
    keys = request.app[SETTINGS_KEY].client_keys
    if keys and request.path.startswith("/v1/"):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
        if not any(hmac.compare_digest(given, key.reveal().encode()) for key in keys):
            raise Unauthorized("missing or unknown API key (Authorization: Bearer <key>)")
    return await handler(request)


def setup_middlewares(app: web.Application) -> None:
    app.middlewares.append(openai_errors)
    if app[SETTINGS_KEY].client_keys:  # no keys configured: no hop on every request
        app.middlewares.append(client_auth)


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
    matrix, agents = app[MATRIX_KEY], app[AGENTS_KEY]
    tasks = [
        asyncio.create_task(watch_file(matrix, 1.0), name="watch-matrix"),
        asyncio.create_task(watch_file(agents, 1.0), name="watch-agents"),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def refresh_lane_limits(app: web.Application) -> None:
    fleet = app[FLEET_KEY]
    overlay, live = fleet.overlay(), fleet.matrix()
    app[LANES_KEY].set_limits(lane_limits(live, overlay, LOCAL_GROUPS, app[SETTINGS_KEY].lane_caps))


async def _probe_ctx(app: web.Application) -> AsyncIterator[None]:
    """Poll every host's /api/ps; warm states and lane limits follow the fleet without a restart."""
    settings, fleet = app[SETTINGS_KEY], app[FLEET_KEY]
    session = aiohttp.ClientSession()
    # NVML only describes this machine: it is read only for the host the operator says we are.
    gpu = NvmlGpuReader() if settings.local_host_id else None
    probe = FleetProbe(
        lambda: fleet.store.current,
        session,
        timeout_s=min(2.0, settings.probe_interval_s),
        gpu_reader=gpu,
        local_host_id=settings.local_host_id,
    )

    def on_update(observations: dict[str, HostObservation]) -> None:
        fleet.on_observations(observations)
        refresh_lane_limits(app)

    # One round before serving, so the first requests see real lane limits rather than zero.
    on_update(await probe.poll_once(time.time()))
    task = asyncio.create_task(probe.run(settings.probe_interval_s, on_update), name="fleet-probe")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()
    if gpu is not None:
        gpu.close()


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    app[EVENTS_KEY].close()


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

    def process_event(kind: str, **fields: Any) -> None:
        """An event about the process, not a request: no request, agent, tier or group."""
        app[EVENTS_KEY].emit(kind, request_id=None, agent_id=None, tier=None, group=None, **fields)

    def matrix_reloaded(matrix: Matrix) -> None:
        metrics.matrix_reloads.labels("reloaded").inc()
        process_event("matrix_reloaded", profiles=len(matrix.profiles), schema_version=matrix.schema_version)

    def matrix_rejected(exc: MatrixError) -> None:
        metrics.matrix_reloads.labels("rejected").inc()
        process_event("matrix_rejected", problems=[str(p) for p in exc.problems][:50])

    app[MATRIX_KEY] = MatrixStore(settings.matrix_path, on_reload=matrix_reloaded, on_reject=matrix_rejected)

    def lockout_changed(key: str, state: str, reason: str) -> None:
        process_event("lockout_changed", profile=key, state=state, reason=reason)

    app[FLEET_KEY] = FleetView(
        app[MATRIX_KEY],
        daily_budget_usd=settings.daily_budget_usd,
        spend_today=app[SPEND_KEY].today,
        on_lockout_change=lockout_changed,
    )
    app[LANES_KEY] = Lanes(enabled=settings.queue_enabled)
    app[REQUEST_IDS_KEY] = RequestIds()
    app[LITELLM_FALLBACKS_KEY] = load_litellm_fallbacks(settings.litellm_config_path)
    app[LEARNED_TIERING_KEY] = _learned_tiering(settings)
    sink = app[EVENTS_KEY]
    metrics.readings.event_write_errors = lambda: sink.write_errors
    metrics.readings.lanes = app[LANES_KEY].readings
    metrics.readings.hook_errors = lambda: app[FLEET_KEY].hook_errors
    app[AGENTS_KEY] = AgentsStore(
        settings.agents_path,
        on_reload=lambda _: metrics.config_reloads.labels("reloaded").inc(),
        on_reject=lambda _: metrics.config_reloads.labels("rejected").inc(),
    )
    setup_middlewares(app)
    app.cleanup_ctx.append(_forwarder_ctx(forwarder))
    app.cleanup_ctx.append(_watchers_ctx)
    app.cleanup_ctx.append(_probe_ctx)
    app.cleanup_ctx.append(_events_ctx)
    app.router.add_get("/health", health)
    app.router.add_get("/capability-matrix", capability_matrix)
    app.router.add_get("/queue/status", queue_status)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


def _learned_tiering(settings: Settings) -> LearnedTiering | None:
    """The learned tier model the settings name (None: keyword rules). A model that cannot be read stops
    the classifier at start, naming the file: an operator asked for it."""
    if settings.tier_model_path is None:
        return None
    try:
        model = load_tier_model(settings.tier_model_path)
    except TierModelError as exc:
        raise SettingsError(f"TORCHROUTER_TIER_MODEL: {exc}") from None
    return LearnedTiering(model, settings.tier_min_confidence, Tier(settings.tier_default))


# --- small handlers -----------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    spend = request.app[SPEND_KEY].today(time.time())
    return _json({"status": "ok", "daily_spend_usd": round(spend, 6)})


async def capability_matrix(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    overlay = fleet.overlay()
    body = fleet.matrix().to_json()
    body["live"] = overlay.to_json()  # GPU memory and its source per host, live lockouts and why
    return _json(body)


async def queue_status(request: web.Request) -> web.Response:
    app = request.app
    agents = app[AGENTS_KEY].current
    budget_of_first_lane = {agents.first_lane(t): agents.wait_budget_ms(t) for t in Tier}

    def budget_ms(group: str) -> float:
        return float(budget_of_first_lane.get(group, max(budget_of_first_lane.values())))

    settings = app[SETTINGS_KEY]
    cloud_locked = app[FLEET_KEY].budget_reason(time.time())

    mode = RoutingMode(settings.routing_mode)

    def fallback(group: str) -> dict[str, object]:
        tier, next_group = overflow(group, directory=agents, mode=mode, cloud_locked=cloud_locked is not None)
        return {
            "overflow": next_group,
            "tier": tier.value if tier else None,
            "on_failure": app[LITELLM_FALLBACKS_KEY].get(group, []),
        }

    return _json(app[LANES_KEY].status(budget_ms, fallback))


def load_litellm_fallbacks(path: Path) -> dict[str, list[str]]:
    """``router_settings.fallbacks`` of litellm_config.yaml (failure, not capacity), for /queue/status."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read LiteLLM fallbacks from %s: %s", path, exc)
        return {}
    out: dict[str, list[str]] = {}
    for entry in (doc.get("router_settings") or {}).get("fallbacks") or []:
        if isinstance(entry, dict):
            out.update({str(k): [str(g) for g in v] for k, v in entry.items() if isinstance(v, list)})
    return out


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
    trace = RouteTrace(request_id=app[REQUEST_IDS_KEY].new())
    client_request_id = request_id_from(request.headers)
    try:
        body = parse_chat_body(await request.read())
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
            learned=app[LEARNED_TIERING_KEY],
        )
    except CloudLocked as exc:
        # Policy, not a bad body: every step of this request's ladder is cloud and cloud is locked out.
        metrics.requests.labels("none", "none", "locked_out").inc()
        events.emit(
            "queue_rejected",
            request_id=trace.request_id,
            agent_id=None,
            tier=None,
            group=None,
            status=exc.status,
            retry_after_s=exc.retry_after_s,
            message=exc.message,
        )
        return error_response(exc, trace.headers())
    except ApiError as exc:
        metrics.requests.labels("none", "none", "bad_request").inc()
        return error_response(exc, trace.headers())
    except web.HTTPRequestEntityTooLarge:
        metrics.requests.labels("none", "none", "bad_request").inc()
        return error_response(PayloadTooLarge(_too_large_message(request)), trace.headers())

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
        )

    outcome = "error"  # until a path below says otherwise: an unexpected exception is never a success
    status = 0
    relay = Relay()
    admission: Admission | None = None
    try:
        admission = await app[LANES_KEY].admit(decision, on_divert)
        trace.group = admission.group
        trace.queue_ms = admission.queue_ms
        metrics.child(metrics.queue_wait, admission.group).observe(admission.queue_ms / 1e3)
        if admission.diverts:
            trace.fallback = "ladder:" + "->".join([*(g for g, _ in admission.diverts), admission.group])
        response = await _forward(request, body, decision, admission.group, trace, started, relay)
        status = relay.status
        outcome = "upstream_error" if status >= 400 else "ok"
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
        trace.total_ms = (time.perf_counter() - started) * 1e3
        return error_response(exc, trace.headers())
    except (asyncio.CancelledError, ConnectionResetError):
        # A client that closes once it has read the stream's last event (the OpenAI SDK does, without
        # waiting for the chunked terminator) was answered in full: that is a success, not a cancel.
        # ``status`` is what went out before the client left (0: nothing had).
        outcome, status = ("ok" if relay.complete else "cancelled"), relay.status
        raise
    finally:
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
            deployment=trace.model,
            fallback=trace.fallback,
            total_ms=round(total_s * 1e3, 1),
            ttft_ms=None if relay.ttft_s is None else round(relay.ttft_s * 1e3, 1),
            queue_ms=round(trace.queue_ms, 1),
            warm_state=trace.warm_state,
            estimated_wait_ms=None if admission is None else round(admission.estimated_ms, 1),
            service_estimate_ms=None if admission is None else round(admission.service_ms, 1),
        )


_SSE_DONE = b"data: [DONE]"


@dataclass
class Relay:
    """How far the answer got to the client: status, time to its first byte, and whether it was whole."""

    status: int = 0
    ttft_s: float | None = None
    complete: bool = False  # the upstream stream ended, or its ``data: [DONE]`` sentinel was relayed
    _tail: bytes = b""

    def saw(self, chunk: bytes) -> None:
        """Note a relayed stream chunk; the sentinel may arrive split across chunks."""
        self._tail = (self._tail + chunk)[-32:]
        self.complete = self._tail.rstrip().endswith(_SSE_DONE)


async def _forward(
    request: web.Request,
    body: dict[str, Any],
    decision: RouteDecision,
    group: str,
    trace: RouteTrace,
    started: float,
    relay: Relay,
) -> web.StreamResponse:
    """Forward to LiteLLM with model=group and relay the answer, recording its progress in ``relay`` (which
    the caller still reads when the client goes away part-way)."""
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
        _learn(app[FLEET_KEY], app[SPEND_KEY], trace, upstream)
        trace.litellm_ttft_ms = (headers_at - sent) * 1e3
        trace.total_ms = (headers_at - started) * 1e3
        out_headers = {h: upstream.headers[h] for h in _RELAYED if h in upstream.headers}
        content_type = upstream.headers.get("Content-Type", "")
        if upstream.status == 200 and content_type.startswith(_STREAM_TYPES):
            # Stream: headers go now, before the first byte; TTFT and total go to events and metrics.
            response = web.StreamResponse(status=200, headers={**out_headers, **trace.headers()})
            relay.status = 200
            await response.prepare(request)
            try:
                async for chunk in upstream.iter_chunks():
                    if relay.ttft_s is None:
                        relay.ttft_s = time.perf_counter() - started
                    await response.write(chunk)
                    relay.saw(chunk)
            except ConnectionResetError:
                raise  # the client went away: nothing to tell it (the request is recorded as cancelled)
            except Exception as exc:
                # The 200 and part of the body are already out: end the stream with an error event the
                # client's SDK understands, and close; a second status line would corrupt the response.
                if not isinstance(exc, ApiError | aiohttp.ClientError | TimeoutError):
                    log.exception("unexpected error while relaying a stream")
                relay.status = 502
                await _end_stream_with_error(response, exc)
                return response
            relay.complete = True
            await response.write_eof()
            return response
        payload = await upstream.read()
        done = time.perf_counter()
        trace.litellm_ttft_ms = (done - sent) * 1e3
        trace.total_ms = (done - started) * 1e3
        relay.status, relay.ttft_s = upstream.status, done - started
        return web.Response(status=upstream.status, body=payload, headers={**out_headers, **trace.headers()})


async def _end_stream_with_error(response: web.StreamResponse, exc: BaseException) -> None:
    if isinstance(exc, ApiError):
        message = exc.message
    elif isinstance(exc, aiohttp.ClientError | TimeoutError):
        message = f"upstream stream broke: {type(exc).__name__}"
    else:
        message = "internal error in the classifier while relaying the stream; see its log"
    log.warning("stream from LiteLLM broke after the response started: %s", message)
    error = {
        "error": {"message": message, "type": "api_error", "param": None, "code": "upstream_stream_broken"}
    }
    response.force_close()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
        await response.write_eof()


def _learn(fleet: FleetView, spend: DailySpend, trace: RouteTrace, upstream: UpstreamResponse) -> None:
    """What a response tells the classifier: who served (warm -> hot), which keys the hooks locked out,
    and the day's spend as the hooks total it (they see every answer's cost, streamed ones included)."""
    if trace.model != "none" and upstream.status < 400:
        fleet.served(trace.model)
    now = time.time()
    spend.add(parse_cost(upstream.headers.get("x-litellm-response-cost")), now)
    spend.at_least(parse_cost(upstream.headers.get("x-torchrouter-daily-spend-usd")), now)
    hook_errors = upstream.headers.get("x-torchrouter-hook-errors")
    if hook_errors is not None and hook_errors.isdigit():
        fleet.hook_errors = int(hook_errors)
    locked = upstream.headers.get("x-torchrouter-auth-lockouts")
    if locked is not None:
        fleet.set_auth_lockouts({key: "provider answered 401/403" for key in locked.split(",") if key})


def _annotate(trace: RouteTrace, upstream: UpstreamResponse, matrix: MatrixStore, group: str) -> None:
    """Fill the trace from what LiteLLM and our hooks reported."""
    deployment = upstream.headers.get("x-torchrouter-deployment") or upstream.headers.get(
        "x-litellm-model-id"
    )
    if deployment:
        trace.model = deployment
    trace.warm_state = upstream.headers.get("x-torchrouter-warm-state", trace.warm_state)
    score = upstream.headers.get("x-torchrouter-score-ms")
    if score:
        with contextlib.suppress(ValueError):
            trace.score_ms = float(score)
    profile = matrix.current.profiles.get(trace.model)
    if profile is not None and profile.lane != group:
        step = f"fallback:{group}->{profile.lane}"  # LiteLLM's failure fallback, after any ladder step
        trace.fallback = step if trace.fallback == "none" else f"{trace.fallback};{step}"
