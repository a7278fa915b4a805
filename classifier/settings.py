"""The one place that reads the classifier's environment.

Everything else receives a :class:`Settings`. Each variable, its default and its meaning is listed in
``ENV_DOCS`` (the README's table has the same rows), including the ones the hooks inside LiteLLM read
(``torchrouter_core.hooks_settings``) and the one LiteLLM itself reads through ``os.environ/`` in
``litellm_config.yaml`` (``TORCHROUTER_CLOUD_API_KEY``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from capability_matrix import DEFAULT_MATRIX_PATH
from torchrouter_core.budgets import DEFAULT_BUDGETS, TimeBudget, parse_time_budgets
from torchrouter_core.capacity import parse_lane_caps
from torchrouter_core.env import SettingsError
from torchrouter_core.env import parse_bool as _bool
from torchrouter_core.env import parse_float as _float
from torchrouter_core.eviction import EvictionRules, parse_eviction_rules
from torchrouter_core.routing import parse_routing_mode
from torchrouter_core.tier_model import DEFAULT_MODEL_PATH as DEFAULT_TIER_MODEL_PATH

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AGENTS_PATH = PACKAGE_ROOT / "classifier" / "agents.yaml"
DEFAULT_ALIASES_PATH = PACKAGE_ROOT / "classifier" / "aliases.yaml"

ENV_DOCS: dict[str, tuple[str, str]] = {
    "LITELLM_URL": ("http://127.0.0.1:4000", "where the classifier forwards (the LiteLLM proxy)"),
    "LITELLM_MASTER_KEY": ("(none)", "key the classifier presents to LiteLLM; never logged"),
    "ROUTING_MODE": ("local-first", "local-first, local-only or cloud-only"),
    "TORCHROUTER_QUEUE_ENABLED": ("true", "false bypasses the per-group queues (reported in /queue/status)"),
    "TORCHROUTER_FAST_CHAT_CANARY_SHARE": (
        "0",
        "0..1 share of eligible H-tier traffic canaried to fast-chat",
    ),
    "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": ("(off)", "JSONL trail written by classifier and hooks"),
    "TORCHROUTER_CAPABILITY_MATRIX_PATH": ("capability_matrix/matrix.yaml", "the fleet contract"),
    "TORCHROUTER_AGENTS_PATH": ("classifier/agents.yaml", "agent -> tier directory (hot-reloaded)"),
    "TORCHROUTER_ALIASES_PATH": ("classifier/aliases.yaml", "model name -> auto or a group (hot-reloaded)"),
    "TORCHROUTER_DAILY_BUDGET_USD": ("(none)", "cloud spend per UTC day after which cloud is locked out"),
    "TORCHROUTER_CLOUD_API_KEY": (
        "(none; sim-cloud-key under torchrouter up)",
        "the cloud provider key LiteLLM itself reads (os.environ/ in litellm_config.yaml)",
    ),
    "TORCHROUTER_MAX_BODY_BYTES": ("8388608", "larger request bodies get 413"),
    "TORCHROUTER_UPSTREAM_TIMEOUT_S": ("600", "total time allowed for one upstream call"),
    "TORCHROUTER_LITELLM_CONFIG_PATH": ("litellm_config.yaml", "read for the fallbacks /queue/status shows"),
    "TORCHROUTER_CLIENT_KEYS": (
        "(none: open)",
        "comma-separated keys agents must present; set it off loopback",
    ),
    "TORCHROUTER_LOCAL_HOST_ID": (
        "(none)",
        "the matrix host this machine is; its GPU memory is read with NVML",
    ),
    "TORCHROUTER_LANE_LIMITS": ("(none)", "operator caps on lane concurrency, e.g. balanced=4,code=2"),
    "TORCHROUTER_PROBE_INTERVAL_S": ("2", "how often the fleet probe polls each host's /api/ps"),
    "TORCHROUTER_TIER_MODEL": (
        "torchrouter_core/tier_model.json",
        "learned tier model for unknown agents (torchrouter tiers train); off: keyword rules only",
    ),
    "TORCHROUTER_TIER_MIN_CONFIDENCE": ("0.4", "0..1; below it the learned model's tier is not trusted"),
    "TORCHROUTER_TIER_DEFAULT": ("H", "tier (H, R or C) of a request the learned model is unsure of"),
    "TORCHROUTER_LEDGER_REDIS_URL": (
        "(none: in-process)",
        "redis://host:port/db: the VRAM ledger and the daily spend book shared across LiteLLM workers "
        "(the classifier reads the spend at start)",
    ),
    "TORCHROUTER_LEDGER_LEASE_S": ("60", "seconds a VRAM reservation lives unless renewed (streams renew)"),
    "TORCHROUTER_RANKER_WEIGHTS": (
        "H:ttft=0.5,quality=0.5;R:ttft=0.85,quality=0.15;C:ttft=0.65,quality=0.35",
        "the ranker's weights per tier (scorers: ttft, quality, speed, warm, idle)",
    ),
    "TORCHROUTER_SPEND_PATH": (
        "(off: in memory; var/spend.json under torchrouter up)",
        "the durable daily spend book (written by the hooks, read by both at start)",
    ),
    "TORCHROUTER_BREAKER": (
        "(defaults)",
        "circuit-breaker settings, e.g. consecutive_failures=3,cool_off_s=10 (read by the hooks)",
    ),
    "TORCHROUTER_TIME_BUDGETS": (
        "(defaults)",
        "per-tier time budgets, e.g. R.first_byte_s=8,H.total_s=300 (first byte: hooks; total: both)",
    ),
    "TORCHROUTER_EVICTION": (
        "min_residency_s=60,hold_s=300,unload_s=1.5",
        "the eviction rules (placement and lane capacity): off, or any of min_residency_s, hold_s, unload_s",
    ),
    "TORCHROUTER_PREWARM": (
        "share=0.75",
        "load one more copy of a model when its group's demand passes this share of its resident slots "
        "(placed as a request's pick; read by the hooks): off, or share=<number in (0, 4]>",
    ),
}


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    litellm_url: str = "http://127.0.0.1:4000"
    master_key: Secret = field(default_factory=lambda: Secret(""))
    routing_mode: str = "local-first"
    queue_enabled: bool = True
    canary_share: float = 0.0
    event_path: str | None = None
    matrix_path: Path = DEFAULT_MATRIX_PATH
    agents_path: Path = DEFAULT_AGENTS_PATH
    aliases_path: Path = DEFAULT_ALIASES_PATH
    daily_budget_usd: float | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    upstream_timeout_s: float = 600.0
    litellm_config_path: Path = PACKAGE_ROOT / "litellm_config.yaml"
    lane_caps: Mapping[str, int] = field(default_factory=dict)
    time_budgets: Mapping[str, TimeBudget] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    eviction: EvictionRules = field(default_factory=EvictionRules)
    spend_path: Path | None = None
    spend_redis_url: str | None = None  # TORCHROUTER_LEDGER_REDIS_URL: the spend book is in Redis
    probe_interval_s: float = 2.0
    local_host_id: str | None = None
    client_keys: tuple[Secret, ...] = ()
    tier_model_path: Path | None = DEFAULT_TIER_MODEL_PATH  # None: keyword rules only
    tier_min_confidence: float = 0.4
    tier_default: str = "H"
    host: str = "127.0.0.1"
    port: int = 4001

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "LITELLM_URL" in env:
            values["litellm_url"] = env["LITELLM_URL"].rstrip("/")
        if "LITELLM_MASTER_KEY" in env:
            values["master_key"] = Secret(env["LITELLM_MASTER_KEY"])
        if "ROUTING_MODE" in env:
            try:
                values["routing_mode"] = parse_routing_mode(env["ROUTING_MODE"]).value
            except ValueError as exc:
                raise SettingsError(f"ROUTING_MODE: {exc}") from None
        if "TORCHROUTER_QUEUE_ENABLED" in env:
            values["queue_enabled"] = _bool("TORCHROUTER_QUEUE_ENABLED", env["TORCHROUTER_QUEUE_ENABLED"])
        if "TORCHROUTER_FAST_CHAT_CANARY_SHARE" in env:
            values["canary_share"] = _float(
                "TORCHROUTER_FAST_CHAT_CANARY_SHARE", env["TORCHROUTER_FAST_CHAT_CANARY_SHARE"], 0.0, 1.0
            )
        if env.get("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH"):
            values["event_path"] = env["TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH"]
        if env.get("TORCHROUTER_CAPABILITY_MATRIX_PATH"):
            values["matrix_path"] = Path(env["TORCHROUTER_CAPABILITY_MATRIX_PATH"])
        if env.get("TORCHROUTER_AGENTS_PATH"):
            values["agents_path"] = Path(env["TORCHROUTER_AGENTS_PATH"])
        if env.get("TORCHROUTER_ALIASES_PATH"):
            values["aliases_path"] = Path(env["TORCHROUTER_ALIASES_PATH"])
        if env.get("TORCHROUTER_DAILY_BUDGET_USD"):
            values["daily_budget_usd"] = _float(
                "TORCHROUTER_DAILY_BUDGET_USD", env["TORCHROUTER_DAILY_BUDGET_USD"], 0
            )
        if env.get("TORCHROUTER_MAX_BODY_BYTES"):
            values["max_body_bytes"] = int(
                _float("TORCHROUTER_MAX_BODY_BYTES", env["TORCHROUTER_MAX_BODY_BYTES"], 1)
            )
        if env.get("TORCHROUTER_UPSTREAM_TIMEOUT_S"):
            values["upstream_timeout_s"] = _float(
                "TORCHROUTER_UPSTREAM_TIMEOUT_S", env["TORCHROUTER_UPSTREAM_TIMEOUT_S"], 0.1
            )
        if env.get("TORCHROUTER_LITELLM_CONFIG_PATH"):
            values["litellm_config_path"] = Path(env["TORCHROUTER_LITELLM_CONFIG_PATH"])
        if env.get("TORCHROUTER_LANE_LIMITS"):
            try:
                values["lane_caps"] = parse_lane_caps(env["TORCHROUTER_LANE_LIMITS"])
            except ValueError as exc:
                raise SettingsError(f"TORCHROUTER_LANE_LIMITS: {exc}") from None
        if env.get("TORCHROUTER_SPEND_PATH"):
            values["spend_path"] = Path(env["TORCHROUTER_SPEND_PATH"])
        if env.get("TORCHROUTER_LEDGER_REDIS_URL"):
            values["spend_redis_url"] = env["TORCHROUTER_LEDGER_REDIS_URL"]
        if env.get("TORCHROUTER_TIME_BUDGETS"):
            try:
                values["time_budgets"] = parse_time_budgets(env["TORCHROUTER_TIME_BUDGETS"])
            except ValueError as exc:
                raise SettingsError(f"TORCHROUTER_TIME_BUDGETS: {exc}") from None
        if env.get("TORCHROUTER_EVICTION"):
            try:
                values["eviction"] = parse_eviction_rules(env["TORCHROUTER_EVICTION"])
            except ValueError as exc:
                raise SettingsError(f"TORCHROUTER_EVICTION: {exc}") from None
        if env.get("TORCHROUTER_CLIENT_KEYS"):
            values["client_keys"] = tuple(
                Secret(k.strip()) for k in env["TORCHROUTER_CLIENT_KEYS"].split(",") if k.strip()
            )
        if env.get("TORCHROUTER_LOCAL_HOST_ID"):
            values["local_host_id"] = env["TORCHROUTER_LOCAL_HOST_ID"].strip()
        if env.get("TORCHROUTER_PROBE_INTERVAL_S"):
            values["probe_interval_s"] = _float(
                "TORCHROUTER_PROBE_INTERVAL_S", env["TORCHROUTER_PROBE_INTERVAL_S"], 0.1
            )
        if env.get("TORCHROUTER_TIER_MODEL"):
            raw = env["TORCHROUTER_TIER_MODEL"].strip()
            values["tier_model_path"] = None if raw.lower() in {"off", "none", "false"} else Path(raw)
        if env.get("TORCHROUTER_TIER_MIN_CONFIDENCE"):
            values["tier_min_confidence"] = _float(
                "TORCHROUTER_TIER_MIN_CONFIDENCE", env["TORCHROUTER_TIER_MIN_CONFIDENCE"], 0.0, 1.0
            )
        if env.get("TORCHROUTER_TIER_DEFAULT"):
            tier = env["TORCHROUTER_TIER_DEFAULT"].strip().upper()
            if tier not in {"H", "R", "C"}:
                raise SettingsError(f"TORCHROUTER_TIER_DEFAULT={tier!r}: expected H, R or C")
            values["tier_default"] = tier
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


__all__ = ["DEFAULT_AGENTS_PATH", "ENV_DOCS", "PACKAGE_ROOT", "Secret", "Settings", "SettingsError"]
