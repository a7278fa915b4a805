"""Every Prometheus family the classifier exports, declared once, on a registry passed in.

Label values come from closed sets: tiers (H, R, C, none), groups named in configuration (plus
``none``), outcomes from :data:`OUTCOMES`. Agent ids never become label values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.event_write_errors = Counter(
            "classifier_event_write_errors_total", "JSONL trail writes that failed", registry=registry
        )
