"""Thin adapters that LiteLLM calls; the decisions live in the ground floor (:mod:`torchrouter_core`).

LiteLLM loads ``litellm_hooks.router_hooks`` (see litellm_config.yaml). Nothing happens at import.
:meth:`RouterHooks.start` reads :class:`HooksSettings` once and starts the fleet probe on LiteLLM's own
event loop; LiteLLM runs it at proxy start-up through ``LITELLM_WORKER_STARTUP_HOOKS=
litellm_hooks.lifecycle:start`` (set by ``torchrouter up`` and the image). Without that variable the
first hook call of any kind starts it instead. The probe task ends with LiteLLM's loop: at shutdown
uvicorn's ``asyncio.run`` cancels it, which closes its HTTP session (LiteLLM 1.102.4 has no shutdown
callback for custom loggers).

What the hooks keep (:class:`HooksRuntime`): the live fleet view (matrix store, probe observations,
answers, auth and budget lockouts), requests in flight per deployment (the ranker's ``idle`` scorer),
and the one book of cloud spend. What they exchange with the classifier is
:mod:`torchrouter_core.contract`: a :class:`RouteRequest` in, a :class:`RouteReport` out.

Every exception inside a hook is logged and counted; a hook never breaks a request because of its own
bug. The one deliberate failure is an empty candidate list after filtering, which LiteLLM turns into a
"no deployments" error and then its configured fallback group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic
from litellm.types.utils import CostPerToken

from capability_matrix import (
    FleetView,
    LiveOverlay,
    Matrix,
    MatrixStore,
    Profile,
    WarmState,
    next_auth_lockouts,
)
from capability_matrix.live import sharing_credentials
from capability_matrix.probe import FleetProbe
from litellm_hooks.client_watch import ClientWatches, watch_current_client
from litellm_hooks.connect_budget import LocalClients, apply_budget
from litellm_hooks.failures import classify
from litellm_hooks.prewarm import LoadFailed, load_model
from litellm_hooks.reservations import Reservations, host_reports, open_ledger, own_report
from litellm_hooks.settings import HooksSettings
from litellm_hooks.streams import name_the_group, shaped_stream
from torchrouter_core import prewarm, spend_file
from torchrouter_core.breaker import Breakers, Failure, Scope, State, Transition
from torchrouter_core.budgets import budget_for
from torchrouter_core.contract import (
    RouteReport,
    RouteRequest,
    decode_needs,
    encode_needs,
    encode_stream_report,
)
from torchrouter_core.events import EventKind, EventSink, open_sink
from torchrouter_core.eviction import EvictionLog, RecentUse
from torchrouter_core.fallbacks import hop_allowed
from torchrouter_core.inflight import InFlight
from torchrouter_core.ledger import HostLedger
from torchrouter_core.needs import request_needs
from torchrouter_core.ollama_timings import parse_ollama_run
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.ranker.observed import ObservedTimes
from torchrouter_core.ranker.scorers import weights_for
from torchrouter_core.ranker.select import Selection, eviction_fields, select
from torchrouter_core.routing import ladder_step_kind
from torchrouter_core.spend import SharedSpend, SpendBook
from torchrouter_core.usability import FITS, RESIDENT, host_rooms

log = logging.getLogger("torchrouter.hooks")

_CTX = "torchrouter"  # key inside LiteLLM's request metadata: plain values only (LiteLLM copies it)
FIRST_ROUND_WAIT_S = 2.0  # the first ranking waits at most this long for the probe's first round
MAX_UNBOOKED = 100_000  # calls kept for the shared spend book while Redis does not answer


def register_local_models(matrix: Matrix, registered: set[str]) -> None:
    """Tell LiteLLM each local model of the matrix (``ollama_chat/<model>``: the matrix's context window,
    tools, no cost) that it has not been told yet. Without this, LiteLLM 1.102.4's success logging asks
    the host's ``/api/show`` for a model it does not know, once per model and worker, with a synchronous
    HTTP call on the proxy's event loop: a host that stops answering right then froze every request of
    the worker for minutes (reviewed: 135 s). A model LiteLLM knows is never fetched
    (``OllamaModelInfo._is_static_ollama_model``)."""
    known: dict[str, tuple[int, bool]] = {}  # name -> (the largest window, tools on any host)
    for profile in matrix.profiles.values():
        name = f"ollama_chat/{profile.model}"
        if profile.is_local and name not in registered:
            window, tools = known.get(name, (0, False))
            known[name] = (max(window, profile.context_window), tools or profile.supports_tools)
    entries = {
        name: {
            "max_tokens": window,
            "max_input_tokens": window,
            "max_output_tokens": window,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "ollama",
            "mode": "chat",
            "supports_function_calling": tools,
        }
        for name, (window, tools) in known.items()
    }
    if entries:
        litellm.register_model(entries)
        registered.update(entries)


def open_shared_spend(settings: HooksSettings) -> SharedSpend | None:
    """The shared spend book when Redis is configured (the VRAM ledger's URL), else None (the file)."""
    if not settings.ledger_redis_url:
        return None
    from torchrouter.redis_spend import RedisSpendBook  # only when configured: redis stays optional

    return RedisSpendBook(settings.ledger_redis_url)


@dataclass
class HooksRuntime:
    settings: HooksSettings
    fleet: FleetView  # the matrix store plus probe observations, answers and lockouts, cached
    events: EventSink
    spend: SpendBook  # this worker's view of today's spend (the whole book unless `shared` is set)
    reservations: Reservations  # the VRAM ledger (in-process or Redis) and what this worker holds in it
    observed: ObservedTimes = field(default_factory=ObservedTimes)  # service and load times per deployment
    use: RecentUse = field(default_factory=RecentUse)  # recent picks per (host, model): eviction charges
    evictions: EvictionLog = field(default_factory=EvictionLog)  # whose load evicted what, when
    # A lease as long as LiteLLM's own request timeout (litellm_config.yaml): a request LiteLLM never
    # reports back on (a client gone before the first chunk) stops counting as load after that.
    in_flight: InFlight = field(default_factory=lambda: InFlight(ttl_s=300.0))
    first_round: asyncio.Event = field(default_factory=asyncio.Event)
    probe_task: asyncio.Task[None] | None = None
    generation: int = 0
    breakers: Breakers = field(default_factory=Breakers)
    shared_spend: SharedSpend | None = None  # the book in Redis (TORCHROUTER_LEDGER_REDIS_URL), shared
    unbooked: list[tuple[str, float, float]] = field(default_factory=list)  # (call, USD, ts) not in Redis yet
    spend_synced: bool = False  # today's shared total read at least once since start
    local_clients: LocalClients = field(default_factory=LocalClients)  # Ollama calls, connect budget applied
    registered: set[str] = field(default_factory=set)  # ollama_chat/<model> names told to LiteLLM
    prewarming: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # group -> its prewarm (one)
    prewarm_quiet: dict[str, float] = field(default_factory=dict)  # group -> no prewarm before (Unix s)

    @classmethod
    def build(cls, settings: HooksSettings) -> HooksRuntime:
        shared_spend = open_shared_spend(settings)
        spend = SpendBook(daily=spend_file.load(settings.spend_path, time.time()))
        fleet = FleetView(
            # Checked on every routing call (a stat, about a microsecond against LiteLLM's milliseconds per
            # request): an operator's edit is in force for the very next request, with no timing window.
            MatrixStore(settings.matrix_path, min_interval_s=0.0),
            daily_budget_usd=settings.daily_budget_usd,
            spend_today=spend.today,
            # The file is the book only without the shared book in Redis: only then can it be unknown.
            spend_unknown=None
            if shared_spend
            else lambda now: spend_file.unknown_reason(settings.spend_path, spend.daily, now),
        )
        reservations = Reservations(open_ledger(settings), settle_s=2 * settings.probe_interval_s)
        return cls(
            settings,
            fleet,
            open_sink(settings.event_path),
            spend,
            reservations,
            breakers=Breakers(settings.breaker),
            shared_spend=shared_spend,
            evictions=EvictionLog(hold_s=settings.eviction.hold_s),
        )

    # --- circuit breakers (torchrouter_core.breaker): state here, decisions there ---------------------------
    def breaker_changes(self, changes: list[Transition], who: Mapping[str, Any] | None = None) -> None:
        """Write each transition as ``breaker_changed``; an auth breaker turning half-open lifts the auth
        lockout of every profile behind the same credentials, so the next request re-checks them."""
        for change in changes:
            who = who or {}
            self.events.emit(
                EventKind.BREAKER_CHANGED,
                request_id=who.get("request_id"),
                agent_id=who.get("agent_id"),
                tier=who.get("tier"),
                group=None,
                **change.event_fields(),
            )
            auth = self.breakers.state(change.scope, change.target).reason == Failure.AUTH.value
            if change.to_state is State.HALF_OPEN and change.scope is Scope.DEPLOYMENT and auth:
                matrix = self.fleet.store.current
                if change.target in matrix.profiles:
                    shared = set(sharing_credentials(matrix, change.target))
                    lockouts = self.fleet.auth_lockouts
                    self.fleet.set_auth_lockouts(
                        {k: v for k, v in lockouts.items() if k not in shared},
                        lifted="re-checking the credentials: the next request to it is the trial",
                    )

    def blocked(self, matrix: Matrix, now: float) -> dict[str, str]:
        """Profile key -> why its breaker (or its host's) refuses it now."""
        blocked, changes = self.breakers.blocked(matrix.host_of(), now)
        self.breaker_changes(changes)
        return blocked

    def book(self, call_id: object, cost: object, now: float) -> None:
        """Book one call's cost (USD) once: in this worker's book, then saved to the durable file
        (TORCHROUTER_SPEND_PATH), or, with the shared book in Redis, queued for :meth:`sync_spend`."""
        key = call_id if isinstance(call_id, str) else None
        if not self.spend.record(key, cost, now):
            return
        if self.shared_spend is None:
            spend_file.save(self.settings.spend_path, self.spend.daily, now)
            return
        if len(self.unbooked) >= MAX_UNBOOKED:  # Redis has been away for a long time: keep the newest
            log.warning("spend book: %d calls not yet in Redis; forgetting the oldest", len(self.unbooked))
            del self.unbooked[0]
        self.unbooked.append((key or uuid.uuid4().hex, float(cost), now))  # type: ignore[arg-type]

    async def sync_spend(self, now: float) -> None:
        """With the shared book: book what Redis has not taken yet (idempotent per call id, so a retry
        never counts twice), then mirror today's shared total into this worker's view. Redis not
        answering is logged; this worker's own count (the shared total it last saw plus what it booked
        since) stands until Redis answers again."""
        shared = self.shared_spend
        if shared is None:
            return
        try:
            while self.unbooked:
                call = self.unbooked.pop(0)
                try:
                    await shared.book(*call)
                except BaseException:
                    self.unbooked.insert(0, call)
                    raise
            total = await shared.today(now)
        except Exception as exc:
            # The last shared total this worker saw plus what it booked since stands (never less); the
            # report says the book is degraded, so the classifier keeps the higher total it knew.
            self.reservations.faults.failed("spend_book", "this worker counts on its own", exc)
            return
        self.reservations.faults.ok("spend_book")
        if not self.unbooked:  # booked meanwhile by another task: it mirrors after its own booking
            self.spend.daily.mirror(total, now)
        self.spend_synced = True

    def rank(
        self,
        group: str,
        keys: Sequence[str | None],
        needs: RequestNeeds,
        tier: str | None,
        state: tuple[Matrix, LiveOverlay, float],
        *,
        in_flight: Mapping[str, int],
        reserved: Mapping[str, HostLedger],
        breakers: Mapping[str, str],
    ) -> Selection:
        """:func:`~torchrouter_core.ranker.select.select` with this worker's learned state (service and load
        times, recent use, evictions), its tier's weights and eviction rules; ``state``: the live matrix,
        overlay and ``now`` (Unix s) the caller ranks on."""
        matrix, overlay, now = state
        return select(
            group,
            keys,
            needs,
            matrix=matrix,
            overlay=overlay,
            in_flight=in_flight,
            reserved=reserved,
            weights=weights_for(tier, self.settings.tier_weights),
            observed=self.observed,
            breakers=breakers,
            now=now,
            rules=self.settings.eviction,
            evicted_at=self.evictions.evicted_at,
            use=self.use,
        )

    def live_matrix(self, now: float) -> Matrix:
        store = self.fleet.store
        store.maybe_reload(time.monotonic())
        if store.generation != self.generation:
            # An operator's edit of the matrix is the "I fixed it" signal: auth lockouts start over.
            self.generation = store.generation
            self.fleet.set_auth_lockouts({}, lifted="the matrix was edited: the credentials are tried again")
            register_local_models(store.current, self.registered)
        return self.fleet.matrix(now)

    async def probe(self) -> None:
        interval = self.settings.probe_interval_s
        async with aiohttp.ClientSession() as session:
            probe = FleetProbe(lambda: self.fleet.store.current, session, timeout_s=min(2.0, interval))

            def on_update(observations: dict[str, Any]) -> None:
                self.fleet.on_observations(observations)
                now = time.time()
                for host_id, seen in observations.items():  # the probe breaker
                    self.breaker_changes(self.breakers.probed(host_id, bool(seen.reachable), now))
                self.first_round.set()

            try:
                on_update(await probe.poll_once(time.time()))
                await probe.run(interval, on_update)
            finally:  # cancelled with LiteLLM's loop at shutdown: the Ollama clients' sessions close too
                await self.local_clients.aclose()


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


def _attempt_of(ctx: dict[str, Any], reported: str | None, *, failed: bool) -> str | None:
    """Which of this request's attempts an outcome belongs to. LiteLLM's attempts for one request run one
    after another, but it may log an attempt's failure after the next one started, with the next one's
    deployment in the call's parameters (a stream cut midway that it continued from its fallback group):
    a failure belongs to the oldest attempt not yet reported; a success to the deployment it names. A
    failure when every attempt has been reported already is the same failure told twice: ``None``."""
    pending = ctx.get("pending")
    if not isinstance(pending, list):
        return reported
    if not pending:
        return None if failed and ctx.get("tried") else reported
    if not failed and reported in pending:
        pending.remove(reported)
        return reported
    attempt = pending.pop(0)
    return attempt if isinstance(attempt, str) else reported


def _claim(runtime: HooksRuntime, ctx: Mapping[str, Any], pick: Profile, now: float) -> Callable[[], None]:
    """Count ``pick`` as this request's in flight, and as loading when it is cold and no load of it is
    under way, before the request waits for the ledger; answers the undo (a refusal, a cancellation)."""
    rid = str(ctx["request_id"]) if ctx.get("request_id") else None
    starts_load = (
        pick.is_local and pick.warm_state not in RESIDENT and pick.key not in runtime.observed.loading
    )
    if rid is not None:
        runtime.in_flight.start(pick.key, rid, now)
    if starts_load:
        runtime.observed.started_load(pick.key, now, runtime.observed.load_time_s(pick))

    def undo() -> None:
        if rid is not None:
            runtime.in_flight.finish(pick.key, rid)
        if starts_load:
            runtime.observed.load_ended(pick.key)

    return undo


def _no_deployment(exc: object) -> bool:
    """LiteLLM's "no deployments available" error: raised when our filter left a hop no candidate (its
    ``route_selected`` says ``no_candidate``). That hop made no attempt, so its failure, logged while the
    next hop's attempt may already be under way, must not be taken for that attempt's."""
    return isinstance(exc, RouterRateLimitError | RouterRateLimitErrorBasic) or (
        isinstance(exc, Exception) and "no deployments available" in str(exc).lower()
    )


def _first_report(ctx: dict[str, Any], exc: object) -> bool:
    """True the first time this request's failure ``exc`` is seen (LiteLLM may pass the same exception
    twice: the request's exceptions stay alive while it runs, so their ids name them)."""
    if exc is None:
        return True
    seen = ctx.setdefault("failures_seen", [])
    if not isinstance(seen, list):
        return True
    if id(exc) in seen:
        return False
    seen.append(id(exc))
    return True


def _rearm_failure_log(kwargs: Mapping[str, Any]) -> None:
    """LiteLLM 1.102.4 keeps one logging object for a request's whole fallback chain and logs its failure
    once (``has_logged_async_failure``): every later hop's failure would never reach
    ``async_log_failure_event``. A new attempt starts after the previous one's failure was logged (LiteLLM
    awaits that log before falling back), so the flag is cleared here for this attempt's own failure."""
    logging_obj = kwargs.get("litellm_logging_obj")
    details = getattr(logging_obj, "model_call_details", None)
    if isinstance(details, dict):
        details.pop("has_logged_async_failure", None)


def _status_of(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _needs_of(ctx: Mapping[str, Any], kwargs: Mapping[str, Any], messages: object) -> RequestNeeds:
    """The classifier's needs (carried in our context); else worked out by the same rule from the body."""
    carried = ctx.get("needs")
    if isinstance(carried, str):
        return decode_needs(carried)
    return request_needs({**kwargs, "messages": messages if messages is not None else kwargs.get("messages")})


def _seconds_between(start: object, end: object) -> float | None:
    """LiteLLM passes datetimes (or floats) for start, end and completion_start_time."""
    if isinstance(start, datetime) and isinstance(end, datetime):
        return (end - start).total_seconds()
    if isinstance(start, int | float) and isinstance(end, int | float):
        return float(end) - float(start)
    return None


def _price_list(deployment: Mapping[str, Any]) -> list[Any]:
    """[LiteLLM model, input USD per token or None, output USD per token or None] of a deployment (plain
    values: it is kept in our request context, which LiteLLM copies)."""
    params = deployment.get("litellm_params") or {}
    return [params.get("model"), params.get("input_cost_per_token"), params.get("output_cost_per_token")]


def _cost_from_usage(ctx: Mapping[str, Any], key: str | None, response: object) -> float | None:
    """USD of an answer from its usage at the deployment's prices (:func:`_priced`). None for a deployment
    without a price list (a local one) or an answer without usage."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    return _priced(ctx, key, prompt, int(getattr(usage, "completion_tokens", 0) or 0), usage)


def _priced(
    ctx: Mapping[str, Any], key: str | None, prompt_tokens: int, completion_tokens: int, usage: Any = None
) -> float | None:
    """USD of ``prompt_tokens`` and ``completion_tokens`` at deployment ``key``'s prices: its own
    ``input_cost_per_token``/``output_cost_per_token`` when both are set, else LiteLLM's cost map for its
    model (``litellm.cost_per_token``); None for a deployment without a price list (a local one)."""
    prices = (ctx.get("prices") or {}).get(key) if key else None
    if not isinstance(prices, list) or len(prices) != 3 or not isinstance(prices[0], str):
        return None
    model, input_cost, output_cost = prices
    custom = None
    if isinstance(input_cost, int | float) and isinstance(output_cost, int | float):
        custom = CostPerToken(
            input_cost_per_token=float(input_cost), output_cost_per_token=float(output_cost)
        )
    prompt_usd, completion_usd = litellm.cost_per_token(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_object=usage,
        custom_cost_per_token=custom,
    )
    return prompt_usd + completion_usd


def _response_cost(response: object) -> object:
    hidden = getattr(response, "_hidden_params", None)
    return hidden.get("response_cost") if isinstance(hidden, Mapping) else None


class RouterHooks(CustomLogger):
    def __init__(self, load_settings: Callable[[], HooksSettings] = HooksSettings.from_env) -> None:
        super().__init__()
        self._load_settings = load_settings
        self._runtime: HooksRuntime | None = None
        self.errors = 0
        self.client_watches = ClientWatches()  # is the client still there? (litellm_hooks/client_watch.py)

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the settings and start the probe on the running loop (idempotent). LiteLLM's start-up hook
        calls it (``litellm_hooks.lifecycle``)."""
        self._ensure(started_by="litellm_startup")

    async def stop(self) -> None:
        runtime = self._runtime
        if runtime is not None and runtime.probe_task is not None:
            runtime.probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runtime.probe_task
            runtime.probe_task = None

    def _ensure(self, started_by: str = "first_hook_call") -> HooksRuntime:
        if self._runtime is None:
            self._runtime = HooksRuntime.build(self._load_settings())
            register_local_models(self._runtime.fleet.store.current, self._runtime.registered)
        runtime = self._runtime
        if runtime.probe_task is None:
            runtime.probe_task = asyncio.get_running_loop().create_task(runtime.probe(), name="hooks-probe")
            settings = runtime.settings
            runtime.events.emit(
                EventKind.HOOKS_STARTED,
                request_id=None,
                agent_id=None,
                tier=None,
                group=None,
                matrix_path=str(settings.matrix_path),
                probe_interval_s=settings.probe_interval_s,
                daily_budget_usd=settings.daily_budget_usd,
                started_by=started_by,
                spend_book="redis" if runtime.shared_spend else "file" if settings.spend_path else "memory",
                worker=os.getpid(),
            )
        return runtime

    def _failed(self, where: str) -> None:
        self.errors += 1
        log.exception("torchrouter hook %s failed; request continues without it", where)

    # --- request entry: the classifier's RouteRequest into LiteLLM's metadata ----------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        try:
            self._ensure()
            headers = (data.get("proxy_server_request") or {}).get("headers") or {}
            request = RouteRequest.from_headers(
                headers,
                default_request_id=str(data.get("litellm_call_id") or ""),
                default_group=str(data.get("model") or ""),
            )
            needs = request.needs or request_needs(data)  # a request that bypassed the classifier
            chain = data.get("fallbacks")  # the tier's failure chain, as the classifier sent it
            data.setdefault("metadata", {})[_CTX] = {
                "request_id": request.request_id or None,
                "agent_id": request.agent_id,
                "tier": request.tier,
                "group": request.group,
                "route": list(request.route),
                "chain": [g for g in chain if isinstance(g, str)] if isinstance(chain, list) else [],
                # The classifier always says (a chain, or `disable_fallbacks`); a client of LiteLLM itself
                # may say neither, and then LiteLLM's configured fallbacks stand.
                "chain_set": isinstance(chain, list) or data.get("disable_fallbacks") is True,
                "needs": encode_needs(needs),
                "lease_token": uuid.uuid4().hex,  # names this request's VRAM reservations (every attempt)
                "hops": request.hops,  # failure hops taken before this forward: ours number on from there
            }
            if data.get("stream") is True:
                self.client_watches.add(data.get("litellm_call_id"), watch_current_client())
        except Exception:
            self._failed("pre_call")
        return data

    # --- per attempt (fallbacks included): filter, rank, pick one deployment -----------------------------
    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[dict[str, Any]],
        messages: list[Any] | None,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[dict[str, Any]]:
        undo: Callable[[], None] | None = None  # this request's claim on its pick (see _claim)
        try:
            runtime = self._ensure()
            if not runtime.first_round.is_set():  # right after start: rank on observed state, not "unknown"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runtime.first_round.wait(), FIRST_ROUND_WAIT_S)
            kwargs = request_kwargs or {}
            ctx = _ctx_of(kwargs)
            if ctx.get("last_group"):  # a later hop of this request (an earlier one may have had no
                _rearm_failure_log(kwargs)  # candidate and logged that): its failure must be logged too
            now = time.time()
            if runtime.shared_spend is not None and not runtime.spend_synced:  # after a restart: the book
                await runtime.sync_spend(now)
            # Breakers first: an auth breaker turning half-open now lifts its lockout, and this very request
            # (not the next one) is the re-check.
            blocked_now = runtime.blocked(runtime.fleet.store.current, now)
            matrix, overlay = runtime.live_matrix(now), runtime.fleet.overlay(now)
            keys = [(d.get("model_info") or {}).get("id") for d in healthy_deployments]
            needs = _needs_of(ctx, kwargs, messages)
            reservations = runtime.reservations
            token = str(ctx.get("lease_token") or uuid.uuid4().hex)
            in_flight = runtime.in_flight.counts(now)
            # The ranker's rooms have the ledger's reservations taken off (and its planned evictions'
            # memory added); a pick that must load a model reserves its memory (naming what it evicts, if
            # anything), and a refusal (another request or worker took it first) ranks again without
            # that candidate.
            # A deployment this request already tried is never tried again (a later hop may hold it).
            breakers = {
                **dict.fromkeys(ctx.get("tried") or (), "already_tried"),
                **blocked_now,
            }
            own_chain = ctx.get("chain") if ctx.get("chain_set") else None
            off_chain = not hop_allowed(own_chain, ctx.get("last_group") or ctx.get("group"), model)
            if off_chain:  # a hop the request's own chain does not have (see hop_allowed): none is picked
                breakers.update(dict.fromkeys((k for k in keys if isinstance(k, str)), "not_in_chain"))
            reserved, refused, held = await reservations.view(matrix, now), {}, None
            while True:
                selection = runtime.rank(
                    model,
                    [k for k in keys if k not in refused],
                    needs,
                    ctx.get("tier"),
                    (matrix, overlay, now),
                    in_flight=in_flight,
                    reserved=reserved,
                    breakers=breakers,
                )
                if selection.chosen is None:
                    break
                host_id = selection.chosen.host_id
                room = host_rooms(matrix, overlay, hosts=(host_id,)).get(host_id)
                # A cold pick's reserve lets other requests rank meanwhile: they see this one's place in the
                # line and the load it starts now (a burst does not all pick the same cold copy), taken back
                # if the ledger refuses or the request goes away.
                undo = _claim(runtime, ctx, selection.chosen, now)
                try:
                    outcome = await reservations.reserve(
                        token,
                        selection.chosen,
                        room,
                        matrix,
                        now,
                        placement=selection.placement or FITS,
                        observed_gb=overlay.observed_gb,
                    )
                except BaseException:
                    undo()
                    undo = None
                    raise
                if outcome is not False:
                    held = outcome
                    break
                undo()
                undo = None
                refused[selection.chosen.key] = "ledger_refused"
            who = {k: ctx.get(k) for k in ("request_id", "agent_id", "tier")}
            first_group = ctx.get("group")
            last_group = ctx.get("last_group") or first_group
            if last_group and last_group != model and not off_chain:  # a failure hop: a fallback and a step
                hop = int(ctx.get("hops") or 0) + 1
                ctx["hops"] = hop
                failure = ctx.get("last_failure") or "unknown"
                if "reported" in ctx and ctx.get("pending"):
                    # LiteLLM continues a stream whose attempt failed before its first chunk (the response
                    # headers were made) from its fallback group, and logs that failure after this pick.
                    failure = "before_first_chunk"
                reason = f"attempt_failed:{failure}"
                runtime.events.emit(
                    EventKind.FALLBACK_SELECTED,
                    **who,
                    group=first_group,
                    from_group=last_group,
                    to_group=model,
                    planned=model in (ctx.get("chain") or ()) or model in (ctx.get("route") or ()),
                    hop=hop,
                    reason=reason,
                )
                runtime.events.emit(
                    EventKind.DEGRADATION_LADDER_STEP,
                    **who,
                    group=first_group,
                    from_group=last_group,
                    to_group=model,
                    reason=reason,
                    estimated_wait_ms=None,
                    step=ladder_step_kind(model),
                )
            ctx["last_group"] = model
            groups = ctx.setdefault("groups", [])
            if not groups or groups[-1] != model:
                groups.append(model)
            fields = selection.event_fields()
            fields["rejected"] = {**fields["rejected"], **refused}
            fields["reservation"] = None if held is None else held.event_fields()
            if held is not None and held.victims:  # the evicted-recently rule's memory
                runtime.evictions.record(held.host_id, held.model, now)
            runtime.events.emit("route_selected", **who, **fields, worker=os.getpid())
            chosen = selection.chosen
            if chosen is None:
                # Why, for the classifier: a static reason is a 400 there, a lockout a 503 (feasibility).
                ctx["no_candidate"] = ",".join(sorted(set(selection.rejected.values())))
                ctx["last_failure"] = "no_candidate"  # the next hop's reason (this hop made no attempt)
                return []
            ctx.update(deployment=chosen.key, warm_state=chosen.warm_state.value, score_ms=selection.score_ms)
            if chosen.is_local:  # recent use prices evicting this model later
                runtime.use.record(chosen.host_id, chosen.model, now)
            # (in flight, and loading when cold: counted by its claim, _claim, before the ledger's reserve)
            breaker_refused = sorted(k for k, why in selection.rejected_now().items() if "breaker" in why)
            if breaker_refused:  # a breaker sent this attempt past a candidate it would have ranked
                runtime.events.emit(
                    EventKind.DEGRADATION_LADDER_STEP,
                    **who,
                    group=first_group,
                    from_group=model,
                    to_group=model,
                    reason="breaker:" + ",".join(breaker_refused)[:500],
                    estimated_wait_ms=None,
                    step="another_deployment",
                )
            ctx.setdefault("tried", []).append(chosen.key)
            ctx.setdefault("pending", []).append(chosen.key)
            if runtime.breakers.picked(chosen.key, chosen.host_id, now):
                ctx.setdefault("trials", []).append(chosen.key)  # given back if it ends with no verdict
            picked = [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") == chosen.key]
            if picked and not chosen.is_local:  # its price list, should its cost have to be worked out here
                ctx.setdefault("prices", {})[chosen.key] = _price_list(picked[0])
            if request_kwargs is not None and picked:  # this attempt's budgets (read per attempt)
                budget = budget_for(runtime.settings.time_budgets, ctx.get("tier"))
                cold = chosen.is_local and chosen.warm_state not in RESIDENT
                expected = selection.ranking.ttft_s.get(chosen.key) if selection.ranking else None
                first_byte_s = budget.first_byte_for(cold, expected)  # a long prompt is not cut at 8 s
                apply_budget(request_kwargs, picked[0], first_byte_s, budget.connect_s, runtime.local_clients)
            quiet = runtime.prewarm_quiet.get(model, 0.0) > now
            if (
                chosen.is_local
                and runtime.settings.prewarm.enabled
                and model not in runtime.prewarming
                and not quiet
            ):
                counts = runtime.in_flight.counts(now)  # now: requests that ranked meanwhile included
                if not ctx.get("request_id"):  # not counted in flight: this one included all the same
                    counts[chosen.key] = counts.get(chosen.key, 0) + 1
                loading = runtime.observed.loading_s(now)
                demand, slots = prewarm.pressure(
                    matrix, [k for k in keys if isinstance(k, str)], counts, loading
                )
                if prewarm.wanted(runtime.settings.prewarm, demand, slots):
                    task = asyncio.ensure_future(
                        self._prewarm(runtime, model, healthy_deployments, needs, who, (demand, slots))
                    )
                    runtime.prewarming[model] = task  # held until it ends (its own `finally` forgets it)
            return picked[:1]
        except Exception:
            if undo is not None:  # LiteLLM picks on its own now: the claim is taken back
                undo()
            self._failed("filter_deployments")
            return healthy_deployments

    # --- one more copy before the line forms (torchrouter_core.prewarm) ------------------------------------
    async def _prewarm(
        self,
        runtime: HooksRuntime,
        group: str,
        deployments: list[dict[str, Any]],
        needs: RequestNeeds,
        who: Mapping[str, Any],
        pressure: tuple[int, int],
    ) -> None:
        """Rank ``group``'s deployments for the request that found its copies this busy, every resident or
        loading copy set aside; load the pick if it is cold (in free memory, or evicting what the eviction
        rules let a request's pick evict), holding its memory in the VRAM ledger until the load is done (the
        probe lists the model by then). Events: ``prewarm``, ``outcome`` started, then loaded or failed."""
        token = "prewarm-" + uuid.uuid4().hex
        load: asyncio.Future[None] | None = None
        try:
            now = time.time()
            matrix, overlay = runtime.live_matrix(now), runtime.fleet.overlay(now)
            by_key = {(d.get("model_info") or {}).get("id"): d for d in deployments}
            keys = [k for k in by_key if isinstance(k, str)]
            loading = runtime.observed.loading_s(now)
            aside = prewarm.set_aside(matrix, keys, loading)
            if len(aside) == len(keys):
                return
            selection = runtime.rank(
                group,
                keys,
                needs,
                who.get("tier"),
                (matrix, overlay, now),
                in_flight=runtime.in_flight.counts(now),
                reserved=await runtime.reservations.view(matrix, now),
                breakers={**runtime.breakers.not_closed_keys(matrix.host_of()), **aside},
            )
            chosen = prewarm.candidate(selection.chosen)
            if chosen is None:  # no cold copy has room now: ask again once the probe has looked again
                runtime.prewarm_quiet[group] = now + runtime.settings.probe_interval_s
                return
            room = host_rooms(matrix, overlay, hosts=(chosen.host_id,)).get(chosen.host_id)
            placement = selection.placement or FITS
            held = await runtime.reservations.reserve(
                token, chosen, room, matrix, now, placement=placement, observed_gb=overlay.observed_gb
            )
            if not held:  # refused (another request or worker took the memory first), or nothing to hold
                runtime.prewarm_quiet[group] = now + runtime.settings.probe_interval_s
                return
            if held.victims:  # the evicted-recently rule's memory, as for a request's pick
                runtime.evictions.record(held.host_id, held.model, now)
            expected_s = runtime.observed.load_time_s(chosen)
            runtime.observed.started_load(chosen.key, now, expected_s)
            runtime.use.record(chosen.host_id, chosen.model, now)  # a fresh copy is not evicted straight away
            demand, slots = pressure
            entry: dict[str, Any] = {
                **who,
                "group": group,
                "deployment": chosen.key,
                "host_id": chosen.host_id,
                "model": chosen.model,
                "demand": demand,
                "slots": slots,
                "reservation": held.event_fields(),
                "eviction": eviction_fields(placement),
                "estimated_load_ms": round(expected_s * 1e3, 1),
                "worker": os.getpid(),
            }
            runtime.events.emit(EventKind.PREWARM, **entry, outcome="started", load_ms=None, error=None)
            params = by_key[chosen.key].get("litellm_params") or {}
            budget = budget_for(runtime.settings.time_budgets, who.get("tier"))
            started = time.monotonic()
            load = asyncio.ensure_future(
                load_model(
                    str(params.get("api_base") or chosen.api_base),
                    chosen.model,
                    params.get("keep_alive"),
                    budget.first_byte(cold=True),
                )
            )
            try:
                while not load.done():  # a load longer than a lease keeps its reservation, as a stream does
                    await asyncio.wait({load}, timeout=runtime.reservations.ledger.ttl_s / 3)
                    if not load.done():
                        await runtime.reservations.renew(token, time.time())
                load.result()
            except LoadFailed as exc:
                runtime.observed.load_ended(chosen.key)
                runtime.events.emit(
                    EventKind.PREWARM, **entry, outcome="failed", load_ms=None, error=str(exc)
                )
                return
            took_s = time.monotonic() - started
            runtime.observed.record(chosen.key, service_s=None, ttft_s=took_s, was_cold=True)
            load_ms = round(took_s * 1e3, 1)
            runtime.events.emit(EventKind.PREWARM, **entry, outcome="loaded", load_ms=load_ms, error=None)
        except Exception:
            self._failed("prewarm")
        finally:
            if load is not None and not load.done():  # cancelled (LiteLLM stopping): the call goes too
                load.cancel()
            runtime.prewarming.pop(group, None)
            with contextlib.suppress(Exception):
                await runtime.reservations.release(token, None, time.time())

    # --- the picked deployment's call: think: false from the matrix -----------------------------------------
    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """Profiles with ``requires_think_false`` get ``think: false`` (Ollama's native ``/api/chat``), read
        from the live matrix on every call, so an edit of the matrix takes effect without the config."""
        try:
            runtime = self._ensure()
            model_info = kwargs.get("model_info") or {}
            key = model_info.get("id") if isinstance(model_info, Mapping) else None
            profile = runtime.fleet.store.current.profiles.get(key) if isinstance(key, str) else None
            if profile is not None and profile.requires_think_false:
                kwargs["think"] = False
        except Exception:
            self._failed("pre_call_deployment")
        return kwargs

    # --- outcomes: free the in-flight slot, learn warm and auth state, book the spend --------------------
    def _finished(self, kwargs: dict[str, Any], status: int | None, exc: object = None) -> None:
        runtime = self._runtime
        ctx = _ctx_of(kwargs)
        key = _attempt_of(ctx, _deployment_key(kwargs), failed=status is not None)
        if runtime is None or key is None:
            return
        if ctx.get("request_id"):
            runtime.in_flight.finish(key, str(ctx["request_id"]))
        matrix = runtime.fleet.store.current
        if key not in matrix.profiles:
            return
        if status is None:
            runtime.fleet.served(key)
        fleet = runtime.fleet
        profile = matrix.profiles[key]
        who = {k: ctx.get(k) for k in ("request_id", "agent_id", "tier")}
        now = time.time()
        if status is None:
            runtime.breaker_changes(runtime.breakers.succeeded(key, profile.host_id, now), who)
        else:
            failure, retry_after = classify(exc, now)
            runtime.observed.load_ended(key)  # whatever failed, a load it started is not known to go on
            ctx["last_failure"] = failure.value if failure is not None else f"status_{status}"
            runtime.events.emit(
                EventKind.ATTEMPT_FAILED,
                **who,
                group=profile.lane,
                deployment=key,
                failure=failure.value if failure is not None else None,
                status=status or None,
                retry_after_s=retry_after,
            )
            if failure is not None:
                changes = runtime.breakers.failed(key, profile.host_id, failure, now, retry_after)
                runtime.breaker_changes(changes, who)
            else:  # no verdict on its health (a client that left: LiteLLM logs 499): a trial is given back
                self._release_trials(ctx, [key])
        fleet.set_auth_lockouts(
            next_auth_lockouts(matrix, fleet.auth_lockouts, key, 200 if status is None else status)
        )

    def _observe(self, kwargs: Mapping[str, Any], start_time: Any, end_time: Any) -> None:
        """A success teaches the ranker this deployment's service time (Ollama's own timings when the answer
        carries them, :mod:`torchrouter_core.ollama_timings`, else the call's wall time), its prompt pace
        (those timings only) and, when its pick was cold, its load time (Ollama's ``load_duration``, else a
        stream's TTFT)."""
        runtime, key = self._runtime, _deployment_key(kwargs)
        if runtime is None or key is None or key not in runtime.fleet.store.current.profiles:
            return
        first = kwargs.get("completion_start_time")
        matrix = runtime.fleet.store.current
        model = matrix.profiles[key].model
        run = parse_ollama_run(kwargs.get("original_response"))
        wall_s = _seconds_between(start_time, end_time)
        runtime.observed.record(
            key,
            service_s=wall_s if run is None else run.service_s(wall_s),
            ttft_s=_seconds_between(start_time, first) if run is None else None,
            was_cold=_ctx_of(kwargs).get("warm_state") == WarmState.COLD.value,
            model=model,
            peers={p.key: p.speed_score for p in matrix.local_with_model(model)},
            prompt=None if run is None else run.prompt,
            # A cold call's load as Ollama timed it (absent: nothing was loaded, no sample), never its TTFT
            # then: for an answer not streamed that is the whole call (LiteLLM's completion_start_time is
            # its end), the prompt and the answer included.
            load_s=None if run is None else run.load_s,
        )

    async def _release(self, kwargs: dict[str, Any]) -> None:
        """Release the VRAM this attempt's deployment held (exactly once; see litellm_hooks.reservations)."""
        runtime, key, token = self._runtime, _deployment_key(kwargs), _ctx_of(kwargs).get("lease_token")
        if runtime is not None and key is not None and isinstance(token, str):
            await runtime.reservations.release(token, (key,), time.time())

    # --- a stream: renew its reservations while chunks flow, release them however it ends ----------------
    @staticmethod
    async def _leased(
        stream: AsyncGenerator[Any, None], runtime: HooksRuntime, token: str, failed: Callable[[str], None]
    ) -> AsyncGenerator[Any, None]:
        try:
            async for item in stream:
                try:
                    await runtime.reservations.renew(token, time.time())
                except Exception:
                    failed("stream_renew")
                yield item
        finally:  # the whole stream, a stream cut midway, a client gone (the generator is closed)
            try:
                await runtime.reservations.release(token, None, time.time())
            except Exception:
                failed("stream_release")

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            await self._release(kwargs)
            self._finished(kwargs, None)
            ctx, cost = _ctx_of(kwargs), kwargs.get("response_cost")
            if ctx.get("switched"):
                # A stream LiteLLM continued from its fallback: LiteLLM 1.102.4 logs it with the first
                # attempt's cost (0.0 for a local one), and its start time is the first attempt's. The cost
                # is worked out from the usage at the deployment's own prices; no times are learnt.
                cost = _cost_from_usage(ctx, _deployment_key(kwargs), response_obj)
            else:
                self._observe(kwargs, start_time, end_time)
            if self._runtime is not None:  # streamed answers' cost is known only here
                self._runtime.book(kwargs.get("litellm_call_id"), cost, time.time())
                if self._runtime.unbooked:
                    await self._runtime.sync_spend(time.time())
        except Exception:
            self._failed("log_success")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            self.client_watches.take(kwargs.get("litellm_call_id"))  # a stream that never started
            await self._release(kwargs)
            exc = kwargs.get("exception")
            if _no_deployment(exc):  # a hop where no candidate was left: no attempt of it to account for
                # LiteLLM may log it late, while the next hop's attempt runs, and that log marks the
                # request's failure as logged: the attempt's own failure would then never be told.
                _rearm_failure_log(kwargs)
                return
            if _first_report(_ctx_of(kwargs), exc):
                self._finished(kwargs, _status_of(exc) or 0, exc)
        except Exception:
            self._failed("log_failure")

    # --- response headers (errors too): the RouteReport ---------------------------------------------------
    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        try:
            runtime = self._runtime
            now = time.time()
            if runtime is not None:  # a non-streamed answer's cost is known now: book it before reporting
                runtime.book(data.get("litellm_call_id"), _response_cost(response), now)
                await runtime.sync_spend(now)  # the shared book's total (other workers' spend included)
            ctx = _ctx_of(data)
            ctx["reported"] = ctx.get("deployment")  # a stream's first chunk checks it (_stream_report)
            return (await self._report(data, now)).to_headers()
        except Exception:
            self._failed("response_headers")
            return None

    async def _report(self, data: dict[str, Any], now: float) -> RouteReport:
        """The request's :class:`RouteReport` as of ``now`` (its attempts so far, the fleet as seen now)."""
        runtime, ctx = self._runtime, _ctx_of(data)
        warm = ctx.get("warm_state")
        ledger = own = None
        if runtime is not None:
            matrix = runtime.fleet.matrix(now)
            ledger = host_reports(
                matrix, await runtime.reservations.view(matrix, now), runtime.in_flight.counts(now)
            )
            token, request_id = ctx.get("lease_token"), ctx.get("request_id")
            own = own_report(
                matrix,
                runtime.reservations.of_token(token) if isinstance(token, str) else [],
                runtime.in_flight.of_request(str(request_id)) if request_id else [],
            )
        return RouteReport(
            deployment=ctx.get("deployment"),
            warm_state=WarmState(warm) if isinstance(warm, str) else None,
            score_ms=ctx.get("score_ms"),
            auth_lockouts=frozenset(runtime.fleet.auth_lockouts) if runtime is not None else None,
            daily_spend_usd=runtime.spend.today(now) if runtime is not None else None,
            hook_errors=self.errors,
            no_candidate=ctx.get("no_candidate") or None,
            ledger=ledger,
            breakers=frozenset(runtime.blocked(runtime.fleet.store.current, now)) if runtime else None,
            groups=tuple(ctx.get("groups") or ()),
            degraded=runtime.reservations.faults.report() if runtime is not None else None,
            own=own,
        )

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        """The request failed as a whole: every attempt failed, or its client left and LiteLLM cancelled
        the call (``cancel_on_disconnect``, which runs no log hook). Nothing of it runs any more, so what it
        still holds is given back: its VRAM reservations and its in-flight entries."""
        try:
            runtime, ctx = self._runtime, _ctx_of(request_data)
            if runtime is None:
                return None
            token, request_id = ctx.get("lease_token"), ctx.get("request_id")
            if isinstance(token, str):
                await runtime.reservations.release(token, None, time.time())
            pending = ctx.get("pending")
            failure, _ = classify(original_exception, time.time())
            left = isinstance(pending, list) and bool(pending)
            if failure is not None and left and _first_report(ctx, original_exception):
                # The last attempt's failure that no failure log told (a catch-up; normally none is left).
                self._finished(request_data, _status_of(original_exception) or 0, original_exception)
            elif left and _no_deployment(original_exception):
                # A chain whose first hop had no candidate: LiteLLM ends with that hop's error and may
                # never log a later attempt's own failure. Each attempt still pending failed, of a cause
                # nobody told (recorded without one; no breaker is charged for an unknown cause).
                for _ in range(len(pending)):  # type: ignore[arg-type]  # left: a non-empty list
                    self._finished(request_data, 0, None)  # no verdict: a trial it took is given back
            if isinstance(pending, list) and pending:  # attempts no verdict came for (a client that left)
                self._release_trials(ctx, pending)
            if request_id:
                runtime.in_flight.finish_request(str(request_id))
        except Exception:
            self._failed("post_call_failure")
        return None

    def _release_trials(self, ctx: dict[str, Any], keys: list[Any]) -> None:
        """Give back the half-open breaker trials that these attempts of the request took (they ended with
        no verdict on the deployment's health)."""
        runtime, trials = self._runtime, ctx.get("trials")
        if runtime is None or not isinstance(trials, list):
            return
        profiles = runtime.fleet.store.current.profiles
        for key in keys:
            if key in trials and key in profiles:
                trials.remove(key)
                runtime.breakers.released(key, profiles[key].host_id)

    def _abandoned(self, request_data: dict[str, Any], relayed_chars: int) -> None:
        """A stream closed because its client left: LiteLLM reports neither success nor failure for it
        reliably, so the deployment's in-flight count is ended here, the trail says so
        (``upstream_cancelled``), and a cloud answer's cost is booked from an estimate (the request's
        prompt tokens as the classifier counted them, and the answer relayed so far at 4 characters a
        token), once per call: a client that leaves never takes tokens off the day's budget."""
        try:
            runtime, ctx = self._runtime, _ctx_of(request_data)
            key, request_id = ctx.get("deployment"), ctx.get("request_id")
            if runtime is None:
                return
            if key and request_id:
                runtime.in_flight.finish(str(key), str(request_id))
            self._release_trials(ctx, [key])
            needs = ctx.get("needs")
            prompt = decode_needs(needs).prompt_tokens if isinstance(needs, str) else 0
            cost = _priced(ctx, key if isinstance(key, str) else None, prompt, -(-relayed_chars // 4))
            if cost is not None:
                runtime.book(request_data.get("litellm_call_id"), cost, time.time())
            runtime.events.emit(
                EventKind.UPSTREAM_CANCELLED,
                request_id=request_id,
                agent_id=ctx.get("agent_id"),
                tier=ctx.get("tier"),
                group=ctx.get("group"),
                deployment=key,
                reason="client_disconnected",
            )
        except Exception:
            self._failed("stream_abandoned")

    async def _stream_report(self, request_data: dict[str, Any]) -> bytes | None:
        """At a stream's first chunk: when the deployment that produced it is not the one the response
        headers named (LiteLLM continued the stream from its fallback group after the first attempt failed
        before its first chunk), the report of what answered, as the stream's first event; else None."""
        try:
            ctx = _ctx_of(request_data)
            if "reported" not in ctx or ctx.get("deployment") == ctx["reported"]:
                return None
            ctx["reported"], ctx["switched"] = ctx.get("deployment"), True
            return encode_stream_report(await self._report(request_data, time.time()))
        except Exception:
            self._failed("stream_report")
            return None

    # --- answers and streams in OpenAI's shape, streams stopped for a client that left (streams.py) ---
    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        try:
            name_the_group(data, response)
        except Exception:
            self._failed("post_call_success")
        return None

    def async_post_call_streaming_iterator_hook(  # returns a generator itself: no extra hop per chunk
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """OpenAI's chunk shape, the provider stream closed once the client has gone (streams.py), and the
        request's VRAM reservations renewed while chunks flow and released however the stream ends."""
        shaped = shaped_stream(
            response,
            request_data,
            client_gone=self.client_watches.take(request_data.get("litellm_call_id")),
            on_error=self._failed,
            on_abandoned=lambda relayed: self._abandoned(request_data, relayed),
            before_first=lambda: self._stream_report(request_data),
        )
        runtime, token = self._runtime, _ctx_of(request_data).get("lease_token")
        if runtime is None or not isinstance(token, str):
            return shaped
        return self._leased(shaped, runtime, token, self._failed)
