"""The classifier's aiohttp application: wiring, middlewares and the small handlers.

The chat handler is :mod:`classifier.chat`, its stream relay :mod:`classifier.relay`, the typed state
keys :mod:`classifier.keys`.

``create_app(settings)`` builds everything from values passed in; nothing happens at import. Each
long-lived resource (the forwarder's client session, the config watchers, the event sink) has its
own ``cleanup_ctx``. Decisions are made by the pure modules (:mod:`torchrouter_core.decide`,
:mod:`torchrouter_core.queue_policy`); handlers read the request, call them, forward, and record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from capability_matrix import (
    FleetView,
    HostObservation,
    Matrix,
    MatrixError,
    MatrixStore,
)
from capability_matrix import watch as watch_file
from capability_matrix.probe import FleetProbe, NvmlGpuReader, Probe
from classifier.admission import Lanes
from classifier.chat import chat_completions, too_large_message
from classifier.deadlines import Deadlines
from classifier.fleet_status import FleetCollector, LedgerMirror, fleet_status
from classifier.forwarder import Forwarder, HttpForwarder
from classifier.http_errors import error_response, http_error_response
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
    LITELLM_FALLBACKS_KEY,
    MATRIX_KEY,
    METRICS_KEY,
    PROBE_KEY,
    REQUEST_IDS_KEY,
    SETTINGS_KEY,
    SPEND_KEY,
    HooksSeen,
)
from classifier.lane_limits import refresh_lane_limits
from classifier.metrics import Metrics
from classifier.protocol_edge import HANDLER_ARGS, expect_handler
from classifier.routing_headers import RequestIds
from classifier.settings import Settings, SettingsError
from torchrouter_core import spend_file
from torchrouter_core.aliases import AliasesStore
from torchrouter_core.decide import AgentsStore
from torchrouter_core.errors import (
    ApiError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from torchrouter_core.events import EventSink, open_sink
from torchrouter_core.fallbacks import allowed_groups
from torchrouter_core.identity import GROUPS
from torchrouter_core.routing import RoutingMode, overflow
from torchrouter_core.strict_yaml import safe_load_strict
from torchrouter_core.tier_model import TierModelError, load_tier_model
from torchrouter_core.tiering import LearnedTiering, Tier

log = logging.getLogger("torchrouter.classifier")


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
        return error_response(PayloadTooLarge(too_large_message(request)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc.status, exc.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return http_error_response(500, "internal error in the classifier; see its log")


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
    matrix, agents, aliases = app[MATRIX_KEY], app[AGENTS_KEY], app[ALIASES_KEY]
    tasks = [
        asyncio.create_task(watch_file(matrix, 1.0), name="watch-matrix"),
        asyncio.create_task(watch_file(agents, 1.0), name="watch-agents"),
        asyncio.create_task(watch_file(aliases, 1.0), name="watch-aliases"),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _probe_ctx(given: Probe | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """Poll every host's /api/ps; warm states and lane limits follow the fleet without a restart. A probe
    passed to create_app (tests) is used as it is; otherwise a FleetProbe with its own session."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[PROBE_KEY] = given
            async with _running(app, given):
                yield
            return
        settings, fleet = app[SETTINGS_KEY], app[FLEET_KEY]
        # NVML only describes this machine: it is read only for the host the operator says we are.
        gpu = NvmlGpuReader() if settings.local_host_id else None
        async with aiohttp.ClientSession() as session:
            probe = FleetProbe(
                lambda: fleet.store.current,
                session,
                timeout_s=min(2.0, settings.probe_interval_s),
                gpu_reader=gpu,
                local_host_id=settings.local_host_id,
            )
            app[PROBE_KEY] = probe
            async with _running(app, probe):
                yield
        if gpu is not None:
            gpu.close()

    return ctx


@contextlib.asynccontextmanager
async def _running(app: web.Application, probe: Probe) -> AsyncIterator[None]:
    settings, fleet = app[SETTINGS_KEY], app[FLEET_KEY]

    def on_update(observations: dict[str, HostObservation]) -> None:
        fleet.on_observations(observations)
        # A report left counting a request that ended before its answer stands one probe interval at most.
        app[LEDGER_KEY].expire(time.time(), settings.probe_interval_s)
        refresh_lane_limits(app)

    # One round before serving, so the first requests see real lane limits rather than zero.
    on_update(await probe.poll_once(time.time()))
    task = asyncio.create_task(probe.run(settings.probe_interval_s, on_update), name="fleet-probe")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    app[EVENTS_KEY].close()


async def _spend_ctx(app: web.Application) -> AsyncIterator[None]:
    """With the spend book in Redis (TORCHROUTER_LEDGER_REDIS_URL), start from today's total there, as a
    restarted classifier does from the file otherwise; responses keep it mirrored from then on. Redis not
    answering is logged and the classifier starts at 0 until the first response reports the book."""
    url = app[SETTINGS_KEY].spend_redis_url
    if url:
        from torchrouter.redis_spend import RedisSpendBook  # only when configured: redis stays optional

        book = RedisSpendBook(url)
        now = time.time()
        try:
            app[SPEND_KEY].mirror(await book.today(now), now)
        except Exception as exc:
            log.warning("spend book in Redis unreadable at start (%s); daily spend starts at 0", exc)
        finally:
            await book.close()
    yield


def create_app(
    settings: Settings,
    *,
    forwarder: Forwarder | None = None,
    probe: Probe | None = None,
    registry: CollectorRegistry | None = None,
    events: EventSink | None = None,
) -> web.Application:
    """The classifier, built from values: ``forwarder`` (how to reach LiteLLM) and ``probe`` (how to
    observe the fleet) default to the real HTTP ones; ``registry`` to a fresh one; ``events`` to the sink
    ``settings.event_path`` names."""
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args=HANDLER_ARGS)
    app[SETTINGS_KEY] = settings
    metrics = Metrics(registry or CollectorRegistry())
    app[METRICS_KEY] = metrics
    app[EVENTS_KEY] = events or open_sink(settings.event_path)
    app[SPEND_KEY] = spend_file.load(settings.spend_path, time.time())  # until a response reports the book

    def process_event(kind: str, **fields: Any) -> None:
        """An event about the process, not a request: no request, agent, tier or group."""
        app[EVENTS_KEY].emit(kind, request_id=None, agent_id=None, tier=None, group=None, **fields)

    def matrix_reloaded(matrix: Matrix) -> None:
        metrics.matrix_reloads.labels("reloaded").inc()
        if FLEET_KEY in app:  # the hooks clear theirs on the same edit; no request needed to see it here
            app[FLEET_KEY].set_auth_lockouts({})
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
        # The file is the book only without Redis (TORCHROUTER_LEDGER_REDIS_URL): only then can it be unknown.
        spend_unknown=None
        if settings.spend_redis_url
        else lambda now: spend_file.unknown_reason(settings.spend_path, app[SPEND_KEY], now),
        on_lockout_change=lockout_changed,
    )
    app[LANES_KEY] = Lanes(enabled=settings.queue_enabled)
    app[LEDGER_KEY] = LedgerMirror(on_change=lambda: refresh_lane_limits(app))
    metrics.registry.register(FleetCollector(lambda: fleet_status(app[FLEET_KEY], app[LEDGER_KEY])))
    app[REQUEST_IDS_KEY] = RequestIds()
    app[DEADLINES_KEY] = Deadlines()
    app[LITELLM_FALLBACKS_KEY] = load_litellm_fallbacks(settings.litellm_config_path)
    app[LEARNED_TIERING_KEY] = _learned_tiering(settings)
    sink = app[EVENTS_KEY]
    metrics.readings.event_write_errors = lambda: sink.write_errors
    metrics.readings.lanes = app[LANES_KEY].readings
    app[HOOKS_SEEN_KEY] = HooksSeen()
    metrics.readings.hook_errors = lambda: app[HOOKS_SEEN_KEY].errors
    metrics.readings.breakers = lambda: _refused_per_lane(app)
    app[AGENTS_KEY] = AgentsStore(
        settings.agents_path,
        on_reload=lambda _: metrics.config_reloads.labels("reloaded").inc(),
        on_reject=lambda _: metrics.config_reloads.labels("rejected").inc(),
    )
    app[ALIASES_KEY] = AliasesStore(
        settings.aliases_path,
        on_reload=lambda _: metrics.config_reloads.labels("reloaded").inc(),
        on_reject=lambda _: metrics.config_reloads.labels("rejected").inc(),
    )
    setup_middlewares(app)
    app.cleanup_ctx.append(_forwarder_ctx(forwarder))
    app.cleanup_ctx.append(_watchers_ctx)
    app.cleanup_ctx.append(_probe_ctx(probe))
    app.cleanup_ctx.append(_events_ctx)
    app.cleanup_ctx.append(_spend_ctx)
    app.router.add_get("/health", health, expect_handler=expect_handler)
    app.router.add_get("/capability-matrix", capability_matrix, expect_handler=expect_handler)
    app.router.add_get("/queue/status", queue_status, expect_handler=expect_handler)
    app.router.add_get("/fleet", fleet_endpoint, expect_handler=expect_handler)
    app.router.add_get("/breakers", breakers, expect_handler=expect_handler)
    app.router.add_get("/metrics", metrics_text, expect_handler=expect_handler)
    app.router.add_get("/v1/models", models, expect_handler=expect_handler)
    app.router.add_get("/v1/models/{model_id:.+}", model_by_id, expect_handler=expect_handler)
    app.router.add_post("/v1/chat/completions", chat_completions, expect_handler=expect_handler)
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
    """``ok``; or ``degraded`` with the shared backends the hooks' last report said were failing (the
    VRAM ledger or the spend book in Redis: ``kind:ExceptionClass``), until a report says they answer;
    ``litellm:unreachable`` while the last request could not connect to LiteLLM at all (until one is
    answered); ``spend_book:unknown`` for a day book that cannot be read. Spend in USD, 8 decimals."""
    now = time.time()
    seen = request.app[HOOKS_SEEN_KEY]
    degraded = list(seen.degraded)
    if seen.litellm_unreachable is not None:  # the last forward could not connect: every request fails
        degraded.append("litellm:unreachable")
    unknown = request.app[FLEET_KEY].spend_unknown(now)
    spend: float | None = None if unknown else round(request.app[SPEND_KEY].today(now), 8)
    if unknown:  # a corrupt book: the spend is not zero, it is not known (the cloud is locked meanwhile)
        degraded.append("spend_book:unknown")
    body: dict[str, Any] = {"status": "degraded" if degraded else "ok", "daily_spend_usd": spend}
    if unknown:
        body["spend_unknown"] = unknown
    if degraded:
        body["degraded"] = degraded
    return _json(body)


def _refused_per_lane(app: web.Application) -> dict[str, int]:
    profiles = app[MATRIX_KEY].current.profiles
    out = dict.fromkeys(sorted(GROUPS), 0)
    for key in app[HOOKS_SEEN_KEY].refused(time.time()):
        profile = profiles.get(key)
        if profile is not None and profile.lane in out:
            out[profile.lane] += 1
    return out


async def breakers(request: web.Request) -> web.Response:
    """The deployments the hooks' circuit breakers refuse now, as the last LiteLLM response reported
    them (why and when each changed is in the trail's ``breaker_changed`` events)."""
    app = request.app
    seen, now = app[HOOKS_SEEN_KEY], time.time()
    profiles = app[MATRIX_KEY].current.profiles
    refused = sorted(seen.refused(now))
    return _json(
        {
            "refused": [
                {
                    "deployment": key,
                    "host_id": profiles[key].host_id if key in profiles else None,
                    "lane": profiles[key].lane if key in profiles else None,
                }
                for key in refused
            ],
            "per_lane": _refused_per_lane(app),
            "reported_s_ago": round(now - seen.breakers_at, 3) if seen.breakers_at else None,
        }
    )


async def capability_matrix(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    overlay = fleet.overlay()
    body = fleet.matrix().to_json()
    body["live"] = overlay.to_json()  # GPU memory and its source per host, live lockouts and why
    return _json(body)


async def fleet_endpoint(request: web.Request) -> web.Response:
    """Per host: capacity, used and reserved GB, live reservations, pending loads, requests in flight,
    resident models with their memory (see classifier.fleet_status)."""
    return _json(fleet_status(request.app[FLEET_KEY], request.app[LEDGER_KEY]))


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
        locked = cloud_locked is not None
        tier, next_group = overflow(group, directory=agents, mode=mode, cloud_locked=locked)
        return {
            "overflow": next_group,
            "tier": tier.value if tier else None,
            # Per tier: where a request of that tier sent to this group goes when its attempt fails (the
            # agents file's chain as the mode and budget allow; feasibility may drop more per request).
            "on_failure": {
                t.value: list(
                    allowed_groups(agents.fallbacks(t), group=group, mode=mode, cloud_locked=locked)
                )
                for t in Tier
            },
            # LiteLLM's own, for requests sent to it directly (the classifier's carry the chain above).
            "litellm_on_failure": app[LITELLM_FALLBACKS_KEY].get(group, []),
        }

    return _json(app[LANES_KEY].status(budget_ms, fallback))


def load_litellm_fallbacks(path: Path) -> dict[str, list[str]]:
    """``router_settings.fallbacks`` of litellm_config.yaml (failure, not capacity), for /queue/status."""
    try:
        doc = safe_load_strict(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read LiteLLM fallbacks from %s: %s", path, exc)
        return {}
    out: dict[str, list[str]] = {}
    settings = doc.get("router_settings") if isinstance(doc, dict) else None
    entries = settings.get("fallbacks") if isinstance(settings, dict) else None
    for entry in entries if isinstance(entries, list) else []:  # a wrong shape: validate says so
        if isinstance(entry, dict):
            out.update({str(k): [str(g) for g in v] for k, v in entry.items() if isinstance(v, list)})
    return out


async def metrics_text(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    now = time.time()
    unknown = request.app[FLEET_KEY].spend_unknown(now)  # NaN: Prometheus's "no known value"
    metrics.daily_spend.set(math.nan if unknown else request.app[SPEND_KEY].today(now))
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _model_object(model_id: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "torchrouter"}


async def models(request: web.Request) -> web.Response:
    """``auto``, the groups, then the operator's aliases (classifier/aliases.yaml)."""
    data = [_model_object(m) for m in request.app[ALIASES_KEY].current.model_ids()]
    return _json({"object": "list", "data": data})


async def model_by_id(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}`` as OpenAI serves it: the model object, or 404 ``model_not_found``."""
    model_id = request.match_info["model_id"]
    if model_id.strip().lower() in request.app[ALIASES_KEY].current.model_ids():
        return _json(_model_object(model_id.strip().lower()))
    raise NotFound(f"The model {model_id[:80]!r} does not exist", param="model")
