"""The one place that reads the hooks' environment (inside the LiteLLM process), once, at start; ``torchrouter
up`` and ``torchrouter validate`` read it the same way first, so a bad value stops them in one line before
anything starts. Imported by the hooks as ``litellm_hooks.settings.HooksSettings``.

The variables are the classifier's own names (``classifier.settings.ENV_DOCS`` documents them all):
``TORCHROUTER_CAPABILITY_MATRIX_PATH``, ``TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH``,
``TORCHROUTER_DAILY_BUDGET_USD``, ``TORCHROUTER_PROBE_INTERVAL_S``, the VRAM ledger's
``TORCHROUTER_LEDGER_REDIS_URL`` (unset: the in-process ledger and the file spend book, right for one
LiteLLM worker; set: every worker shares the Redis ledger and the Redis spend book) and
``TORCHROUTER_LEDGER_LEASE_S``, the ranker's per-tier weights ``TORCHROUTER_RANKER_WEIGHTS``
(``torchrouter_core.ranker.scorers.parse_tier_weights``),
``TORCHROUTER_SPEND_PATH``, ``TORCHROUTER_BREAKER`` (circuit-breaker settings,
:func:`torchrouter_core.breaker.parse_breaker_config`) and ``TORCHROUTER_TIME_BUDGETS``
(:func:`torchrouter_core.budgets.parse_time_budgets`) and ``TORCHROUTER_EVICTION`` (the eviction rules,
:func:`torchrouter_core.eviction.parse_eviction_rules`) and ``TORCHROUTER_PREWARM`` (loading one more copy
ahead of a burst, :func:`torchrouter_core.prewarm.parse_prewarm_rules`). A bad value raises
:class:`~torchrouter_core.env.SettingsError` naming the variable, which stops LiteLLM at start. A Redis URL
must be ``redis://``, ``rediss://`` (with a host) or ``unix://`` (with a path).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from capability_matrix.loader import DEFAULT_MATRIX_PATH
from torchrouter_core.breaker import BreakerConfig, parse_breaker_config
from torchrouter_core.budgets import DEFAULT_BUDGETS, TimeBudget, parse_time_budgets
from torchrouter_core.env import SettingsError, parse_float
from torchrouter_core.eviction import EvictionRules, parse_eviction_rules
from torchrouter_core.prewarm import PrewarmRules, parse_prewarm_rules
from torchrouter_core.ranker.scorers import TIER_WEIGHTS, parse_tier_weights


@dataclass(frozen=True)
class HooksSettings:
    matrix_path: Path = DEFAULT_MATRIX_PATH
    event_path: str | None = None
    daily_budget_usd: float | None = None  # cloud profiles are locked out past it (as in the classifier)
    probe_interval_s: float = 2.0  # seconds between polls of every host's /api/ps
    ledger_redis_url: str | None = None  # None: in-process ledger (one worker)
    ledger_lease_s: float = 60.0  # a reservation not released or renewed within this expires
    tier_weights: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: dict(TIER_WEIGHTS))
    spend_path: Path | None = None  # the durable spend book (None: in memory only)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    time_budgets: Mapping[str, TimeBudget] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    eviction: EvictionRules = field(default_factory=EvictionRules)
    prewarm: PrewarmRules = field(default_factory=PrewarmRules)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HooksSettings:
        env = os.environ if env is None else env
        defaults = cls()
        budget = env.get("TORCHROUTER_DAILY_BUDGET_USD")
        interval = env.get("TORCHROUTER_PROBE_INTERVAL_S")
        lease = env.get("TORCHROUTER_LEDGER_LEASE_S")
        weights = env.get("TORCHROUTER_RANKER_WEIGHTS")
        try:
            tier_weights = parse_tier_weights(weights) if weights else dict(TIER_WEIGHTS)
        except ValueError as exc:
            raise SettingsError(f"TORCHROUTER_RANKER_WEIGHTS={weights!r}: {exc}") from None
        try:
            breaker_config = parse_breaker_config(env.get("TORCHROUTER_BREAKER") or "")
        except ValueError as exc:
            raise SettingsError(f"TORCHROUTER_BREAKER: {exc}") from None
        try:
            time_budgets = parse_time_budgets(env.get("TORCHROUTER_TIME_BUDGETS") or "")
        except ValueError as exc:
            raise SettingsError(f"TORCHROUTER_TIME_BUDGETS: {exc}") from None
        try:
            eviction = parse_eviction_rules(env.get("TORCHROUTER_EVICTION") or "")
        except ValueError as exc:
            raise SettingsError(f"TORCHROUTER_EVICTION: {exc}") from None
        try:
            prewarm = parse_prewarm_rules(env.get("TORCHROUTER_PREWARM") or "")
        except ValueError as exc:
            raise SettingsError(f"TORCHROUTER_PREWARM: {exc}") from None
        return cls(
            matrix_path=Path(env.get("TORCHROUTER_CAPABILITY_MATRIX_PATH") or defaults.matrix_path),
            event_path=env.get("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH") or None,
            daily_budget_usd=parse_float("TORCHROUTER_DAILY_BUDGET_USD", budget, 0) if budget else None,
            probe_interval_s=(
                parse_float("TORCHROUTER_PROBE_INTERVAL_S", interval, 0.1)
                if interval
                else defaults.probe_interval_s
            ),
            ledger_redis_url=_redis_url(env.get("TORCHROUTER_LEDGER_REDIS_URL") or None),
            ledger_lease_s=(
                parse_float("TORCHROUTER_LEDGER_LEASE_S", lease, 1.0) if lease else defaults.ledger_lease_s
            ),
            tier_weights=tier_weights,
            spend_path=Path(env["TORCHROUTER_SPEND_PATH"]) if env.get("TORCHROUTER_SPEND_PATH") else None,
            breaker=breaker_config,
            time_budgets=time_budgets,
            eviction=eviction,
            prewarm=prewarm,
        )


def _redis_url(raw: str | None) -> str | None:
    """``TORCHROUTER_LEDGER_REDIS_URL`` checked as redis-py's ``from_url`` reads it, or None when unset."""
    if raw is None:
        return None
    try:
        parts = urllib.parse.urlsplit(raw.strip())
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError on a non-number
    except ValueError:  # "[::1" and the like: not even a URL
        parts, port_ok = urllib.parse.urlsplit(""), False
    db = parts.path.strip("/")
    fine = (
        port_ok
        and not parts.query
        and (
            (parts.scheme in ("redis", "rediss") and bool(parts.hostname) and (db == "" or db.isdigit()))
            or (parts.scheme == "unix" and bool(parts.path))
        )
    )
    if not fine:
        raise SettingsError(
            f"TORCHROUTER_LEDGER_REDIS_URL={redacted_url(raw)!r}: expected redis://host[:port][/db], "
            "rediss://host[:port][/db] (db a number) or unix:///path/to/redis.sock"
        )
    return raw.strip()


def redacted_url(raw: str) -> str:
    """``raw`` with any password in it replaced by ``***`` (``redis://user:***@host``), for messages: a
    secret never goes to a log or an error. Works on URLs too malformed to parse (it cuts at the last
    ``@`` of the part before the path)."""
    scheme, sep, rest = raw.strip().partition("://")
    if not sep:
        return raw.strip()
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return raw.strip()
    user, colon, _ = userinfo.partition(":")
    hidden = f"{user}:***" if colon else "***"
    return f"{scheme}://{hidden}@{host}{slash}{path}"
