"""The classifier's typed application state (``web.AppKey``), in one module so that the wiring
(:mod:`classifier.app`), the chat handler (:mod:`classifier.chat`) and tests share the same keys."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from capability_matrix import FleetView, MatrixStore
from capability_matrix.probe import Probe
from classifier.admission import Lanes
from classifier.deadlines import Deadlines
from classifier.fleet_status import LedgerMirror
from classifier.forwarder import Forwarder
from classifier.metrics import Metrics
from classifier.routing_headers import RequestIds
from classifier.settings import Settings
from torchrouter_core.aliases import AliasesStore
from torchrouter_core.decide import AgentsStore
from torchrouter_core.events import EventSink
from torchrouter_core.spend import DailySpend
from torchrouter_core.tiering import LearnedTiering

SETTINGS_KEY = web.AppKey("settings", Settings)
FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
METRICS_KEY = web.AppKey("metrics", Metrics)
EVENTS_KEY = web.AppKey("events", EventSink)
MATRIX_KEY = web.AppKey("matrix", MatrixStore)
AGENTS_KEY = web.AppKey("agents", AgentsStore)
ALIASES_KEY = web.AppKey("aliases", AliasesStore)
SPEND_KEY = web.AppKey("spend", DailySpend)
FLEET_KEY = web.AppKey("fleet", FleetView)
LANES_KEY = web.AppKey("lanes", Lanes)
REQUEST_IDS_KEY = web.AppKey("request_ids", RequestIds)
DEADLINES_KEY = web.AppKey("deadlines", Deadlines)  # the tiers' total budgets of requests in flight
LITELLM_FALLBACKS_KEY = web.AppKey("litellm_fallbacks", dict[str, list[str]])
LEARNED_TIERING_KEY: web.AppKey[LearnedTiering | None] = web.AppKey("learned_tiering")


BREAKERS_TTL_S = 15.0


@dataclass
class HooksSeen:
    """What the last response said about the hooks inside LiteLLM (cumulative since LiteLLM started)."""

    errors: int = 0
    # Profile keys the hooks' circuit breakers refuse, as of ``breakers_at`` (time.time()).
    breakers: frozenset[str] = frozenset()
    breakers_at: float = 0.0
    # The shared backends (VRAM ledger, spend book in Redis) failing as of the last report: /health.
    degraded: tuple[str, ...] = ()
    # Why the last forward could not reach LiteLLM at all; None once an answer came (/health: degraded).
    litellm_unreachable: str | None = None

    def refused(self, now: float) -> frozenset[str]:
        """The mirrored set while fresh; after ``BREAKERS_TTL_S`` without a report, nothing (the hooks
        still filter: a stale mirror must not keep a recovered lane empty when no traffic reports)."""
        return self.breakers if now - self.breakers_at <= BREAKERS_TTL_S else frozenset()


HOOKS_SEEN_KEY = web.AppKey("hooks_seen", HooksSeen)
PROBE_KEY = web.AppKey("probe", Probe)
LEDGER_KEY = web.AppKey("ledger", LedgerMirror)
