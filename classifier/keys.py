"""The classifier's typed application state (``web.AppKey``), in one module so that the wiring
(:mod:`classifier.app`), the chat handler (:mod:`classifier.chat`) and tests share the same keys."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from capability_matrix import FleetView, MatrixStore
from capability_matrix.probe import Probe
from classifier.admission import Lanes
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
LITELLM_FALLBACKS_KEY = web.AppKey("litellm_fallbacks", dict[str, list[str]])
LEARNED_TIERING_KEY: web.AppKey[LearnedTiering | None] = web.AppKey("learned_tiering")


@dataclass
class HooksSeen:
    """What the last response said about the hooks inside LiteLLM (cumulative since LiteLLM started)."""

    errors: int = 0


HOOKS_SEEN_KEY = web.AppKey("hooks_seen", HooksSeen)
PROBE_KEY = web.AppKey("probe", Probe)
LEDGER_KEY = web.AppKey("ledger", LedgerMirror)
