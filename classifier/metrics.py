"""Every Prometheus family the classifier exports, declared once, on a registry passed in.

Label values come from closed sets: tiers (H, R, C, none), groups named in configuration (plus
``none``), outcomes from :data:`OUTCOMES`. Agent ids never become label values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = (
    "ok",
    "bad_request",
    "locked_out",
    "upstream_error",
    "upstream_unavailable",
    "timeout",
    "shed",
    "cancelled",
    "error",
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class LaneReading:
    depth: int
    active: int
    limit: int
    wait_estimate_s: float


class ScrapeReadings(Collector):
    """Values read, not counted: taken from the live objects at scrape time (set the callables once wired)."""

    def __init__(self) -> None:
        self.event_write_errors: Callable[[], int] = lambda: 0
        self.lanes: Callable[[], Mapping[str, LaneReading]] = dict
        self.hook_errors: Callable[[], int] = lambda: 0
        self.breakers: Callable[[], Mapping[str, int]] = dict

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "classifier_event_write_errors", "JSONL trail writes that failed", value=self.event_write_errors()
        )
        yield GaugeMetricFamily(
            "classifier_litellm_hook_errors",
            "Exceptions the TorchRouter hooks inside LiteLLM caught since LiteLLM started (as last reported)",
            value=self.hook_errors(),
        )
        refused = GaugeMetricFamily(
            "classifier_breaker_refused_deployments",
            "Deployments the hooks' circuit breakers refuse now, per group (as last reported)",
            labels=["group"],
        )
        for group, count in self.breakers().items():
            refused.add_metric([group], float(count))
        yield refused
        lanes = self.lanes()
        families = {
            "depth": GaugeMetricFamily(
                "classifier_queue_depth", "Requests waiting for a lane slot", labels=["group"]
            ),
            "active": GaugeMetricFamily("classifier_queue_active", "Lane slots in use", labels=["group"]),
            "limit": GaugeMetricFamily(
                "classifier_queue_limit", "Lane concurrency limit now", labels=["group"]
            ),
            "wait_estimate_s": GaugeMetricFamily(
                "classifier_queue_wait_estimate_seconds", "Estimated wait for a new arrival", labels=["group"]
            ),
        }
        for group, reading in lanes.items():
            for field_name, family in families.items():
                family.add_metric([group], float(getattr(reading, field_name)))
        yield from families.values()


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.requests = Counter(
            "classifier_requests_total",
            "Chat requests by tier, first group and outcome",
            ["tier", "group", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "classifier_request_duration_seconds",
            "Time from request arrival to the last byte sent",
            ["tier", "group"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "classifier_time_to_first_token_seconds",
            "Time from request arrival to the first body byte relayed (streams) or the response (non-stream)",
            ["tier", "group"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.tier_decisions = Counter(
            "classifier_tier_decisions_total",
            "Tier decisions by tier and source (agent directory or request content)",
            ["tier", "source"],
            registry=registry,
        )
        self.canary = Counter(
            "classifier_canary_requests_total",
            "Requests sent to the fast-chat lane as a canary",
            registry=registry,
        )
        self.matrix_reloads = Counter(
            "classifier_matrix_reloads_total",
            "Capability matrix reload attempts by outcome (reloaded, rejected)",
            ["outcome"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "classifier_agents_reloads_total",
            "Agent directory reload attempts by outcome (reloaded, rejected)",
            ["outcome"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "classifier_queue_wait_seconds",
            "Time a request waited for a lane slot (0 when admitted at once)",
            ["group"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60),
            registry=registry,
        )
        self.diverts = Counter(
            "classifier_ladder_diverts_total",
            "Requests moved down the degradation ladder, by the group they left and why",
            ["group", "reason"],
            registry=registry,
        )
        self.daily_spend = Gauge(
            "classifier_daily_spend_usd",
            "Cloud spend reported by LiteLLM for the current UTC day",
            registry=registry,
        )
        self.readings = ScrapeReadings()
        registry.register(self.readings)

    def child(self, family: Counter | Histogram, *labels: str) -> Any:
        """``family.labels(*labels)``, remembered: label values come from closed sets, so this stays small,
        and the request path skips prometheus_client's per-call label validation."""
        key = (id(family), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*labels)
        return found
