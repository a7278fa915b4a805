"""Circuit breakers per deployment and per host (pure: outcomes and ``now`` in, state and transitions out).

A breaker guards one *target*: a deployment (profile key, scope ``deployment``) or a host (host id, scope
``host``: a dead host takes every model on it down). Its states:

- ``closed`` -- traffic flows. A run of ``consecutive_failures`` failures, or a failure rate of at least
  ``failure_rate`` over the last ``window_s`` seconds (with at least ``min_requests`` outcomes in the
  window), opens it.
- ``open`` -- no traffic until ``retry_at`` (``now + cool_off_s``; for a 429 the provider's
  ``Retry-After``, capped at ``max_retry_after_s``; for a 401/403 ``auth_recheck_s``).
- ``half_open`` -- after the cool-off: at most ``half_open_trials`` requests at a time are let through as
  trials. A success closes it; a failure opens it again for another cool-off.

What counts as a failure (:class:`Failure`): refused or reset connections, timeouts, 5xx, broken streams
(request breaker), a host that did not answer its ``/api/ps`` poll (probe breaker, host scope), 429 (a
back-off honouring ``Retry-After``: opens at once, never judged by rate) and 401/403 (the auth lockout:
opens at once with a periodic half-open re-check instead of waiting for an operator's matrix edit).
Connection-level failures (refused, connect timeout, probe) count against the host as well as the
deployment; the others only against the deployment.

The state machine follows the classic circuit-breaker pattern (M. Nygard, *Release It!*, 2007; the
closed/open/half-open vocabulary of resilience4j and Envoy's outlier detection).

:class:`Breakers` keeps every target's :class:`BreakerState` (values only, time passed in); each call that
changes a state answers the :class:`Transition` values the caller writes to the trail as
``breaker_changed`` events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from torchrouter_core.env import non_negative


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Scope(StrEnum):
    DEPLOYMENT = "deployment"
    HOST = "host"


class Failure(StrEnum):
    """Why an attempt failed (a closed set: an event field and a metric label)."""

    REFUSED = "refused"  # connection refused or reset before any answer
    CONNECT_TIMEOUT = "connect_timeout"
    TIMEOUT = "timeout"  # no first byte, or no whole answer, within the budget
    SERVER_ERROR = "server_error"  # 5xx
    STREAM_BROKEN = "stream_broken"  # the answer stopped midway
    RATE_LIMITED = "rate_limited"  # 429
    AUTH = "auth"  # 401/403
    PROBE = "probe_failed"  # the host did not answer its /api/ps poll

    @property
    def hits_host(self) -> bool:
        """A failure that says the host itself is gone, not just this model on it."""
        return self in (Failure.REFUSED, Failure.CONNECT_TIMEOUT, Failure.PROBE)


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds (counts), windows and cool-offs (seconds). ``half_open_trials``: requests let through
    at once while half-open."""

    consecutive_failures: int = 3
    failure_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 10
    cool_off_s: float = 10.0
    half_open_trials: int = 1
    auth_recheck_s: float = 60.0
    default_retry_after_s: float = 5.0
    max_retry_after_s: float = 300.0
    # A trial that never reports back (its client left before LiteLLM logged it) frees its place after this.
    trial_timeout_s: float = 300.0


@dataclass(frozen=True)
class BreakerState:
    """One target's breaker. ``outcomes``: (time, ok) within the window; ``trials``: half-open trials in
    flight; ``retry_at``: when an open breaker turns half-open; ``reason``: why it last opened."""

    state: State = State.CLOSED
    failures_in_row: int = 0
    outcomes: tuple[tuple[float, bool], ...] = ()
    retry_at: float = 0.0
    reason: str | None = None
    trials: int = 0
    trial_at: float = 0.0
    opened_total: int = 0


@dataclass(frozen=True)
class Transition:
    """A state change, written to the trail as ``breaker_changed``."""

    scope: Scope
    target: str
    from_state: State
    to_state: State
    reason: str
    at: float

    def event_fields(self) -> dict[str, object]:
        return {
            "scope": self.scope.value,
            "target": self.target,
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "reason": self.reason,
        }


def _window(
    outcomes: Iterable[tuple[float, bool]], now: float, window_s: float
) -> tuple[tuple[float, bool], ...]:
    return tuple(o for o in outcomes if now - o[0] <= window_s)


def _open(b: BreakerState, retry_at: float, reason: str) -> BreakerState:
    return replace(
        b, state=State.OPEN, retry_at=retry_at, reason=reason, trials=0, failures_in_row=0, outcomes=(),
        opened_total=b.opened_total + 1,
    )  # fmt: skip


def tick(b: BreakerState, now: float) -> tuple[BreakerState, tuple[State, str] | None]:
    """An open breaker whose cool-off has passed turns half-open."""
    if b.state is State.OPEN and now >= b.retry_at:
        return replace(b, state=State.HALF_OPEN, trials=0), (State.HALF_OPEN, "cool_off_elapsed")
    return b, None


def expire_trials(b: BreakerState, cfg: BreakerConfig, now: float) -> BreakerState:
    if b.state is State.HALF_OPEN and b.trials and now - b.trial_at > cfg.trial_timeout_s:
        return replace(b, trials=0)
    return b


def admits(b: BreakerState, cfg: BreakerConfig) -> str | None:
    """``None`` when a request may go to the target now (after :func:`tick`), else a stable reason."""
    if b.state is State.OPEN:
        return "breaker_open"
    if b.state is State.HALF_OPEN and b.trials >= cfg.half_open_trials:
        return "breaker_half_open"
    return None


def on_success(
    b: BreakerState, cfg: BreakerConfig, now: float
) -> tuple[BreakerState, tuple[State, str] | None]:
    if b.state is State.HALF_OPEN:
        return BreakerState(opened_total=b.opened_total), (State.CLOSED, "trial_succeeded")
    if b.state is State.OPEN:  # an answer that started before it opened: no evidence of recovery yet
        return b, None
    return replace(
        b, failures_in_row=0, outcomes=(*_window(b.outcomes, now, cfg.window_s), (now, True))
    ), None


def on_failure(
    b: BreakerState, cfg: BreakerConfig, now: float, why: Failure, retry_after_s: float | None = None
) -> tuple[BreakerState, tuple[State, str] | None]:
    if why is Failure.RATE_LIMITED:
        wait = cfg.default_retry_after_s if retry_after_s is None else retry_after_s
        wait = min(max(wait, 0.0), cfg.max_retry_after_s)
        if b.state is State.OPEN and b.retry_at >= now + wait:
            return b, None
        change = None if b.state is State.OPEN else (State.OPEN, why.value)
        return _open(b, now + wait, why.value), change
    if why is Failure.AUTH:
        if b.state is State.OPEN:
            return replace(b, retry_at=max(b.retry_at, now + cfg.auth_recheck_s), reason=why.value), None
        return _open(b, now + cfg.auth_recheck_s, why.value), (State.OPEN, why.value)
    if b.state is State.OPEN:
        return b, None
    if b.state is State.HALF_OPEN:
        return _open(b, now + cfg.cool_off_s, f"trial_failed:{why.value}"), (
            State.OPEN,
            f"trial_failed:{why.value}",
        )
    outcomes = (*_window(b.outcomes, now, cfg.window_s), (now, False))
    in_row = b.failures_in_row + 1
    failed = sum(1 for _, ok in outcomes if not ok)
    if in_row >= cfg.consecutive_failures:
        reason = f"{in_row}_in_a_row:{why.value}"
        return _open(b, now + cfg.cool_off_s, reason), (State.OPEN, reason)
    if len(outcomes) >= cfg.min_requests and failed / len(outcomes) >= cfg.failure_rate:
        reason = f"failure_rate:{why.value}"
        return _open(b, now + cfg.cool_off_s, reason), (State.OPEN, reason)
    return replace(b, failures_in_row=in_row, outcomes=outcomes), None


@dataclass
class Breakers:
    """Every target's breaker (deployments and hosts). Mutable holder of immutable states; every method
    takes ``now`` and answers the transitions it caused."""

    config: BreakerConfig = field(default_factory=BreakerConfig)
    states: dict[tuple[Scope, str], BreakerState] = field(default_factory=dict)
    # The targets whose breaker is not closed (open or half-open), kept by _set: what tick and blocked
    # read on every request, instead of every target with a window of recent outcomes.
    not_closed: set[tuple[Scope, str]] = field(default_factory=set)

    def _set(
        self, scope: Scope, target: str, new: BreakerState, change: tuple[State, str] | None, now: float
    ) -> list[Transition]:
        old = self.states.get((scope, target), BreakerState())
        if new == BreakerState():
            self.states.pop((scope, target), None)  # a target that never tripped keeps no entry
        else:
            self.states[(scope, target)] = new
        if new.state is State.CLOSED:
            self.not_closed.discard((scope, target))
        else:
            self.not_closed.add((scope, target))
        if change is None or change[0] is old.state:
            return []
        return [Transition(scope, target, old.state, change[0], change[1], now)]

    def state(self, scope: Scope, target: str) -> BreakerState:
        return self.states.get((scope, target), BreakerState())

    def tick(self, now: float) -> list[Transition]:
        """Turn every open breaker whose cool-off passed half-open."""
        out: list[Transition] = []
        for scope, target in list(self.not_closed):  # tick and expire_trials leave a closed one as it is
            b = self.states[(scope, target)]
            new, change = tick(expire_trials(b, self.config, now), now)
            if new != b:
                out += self._set(scope, target, new, change, now)
        return out

    def blocked(self, hosts: Mapping[str, str], now: float) -> tuple[dict[str, str], list[Transition]]:
        """Profile key -> why it may not take a request now, for ``hosts`` (profile key -> host id), after
        ticking; plus the transitions the tick caused."""
        changes = self.tick(now)
        out: dict[str, str] = {}
        # Only breakers that refuse matter (a target with no entry is closed and admits): this runs on every
        # request, over every profile, so the common case (nothing refusing) costs one pass over the states.
        host_why: dict[str, str] = {}
        key_why: dict[str, str] = {}
        for scope, target in self.not_closed:
            why = admits(self.states[(scope, target)], self.config)
            if why is not None:
                (host_why if scope is Scope.HOST else key_why)[target] = why
        if host_why:  # a host refusing takes every profile on it: one pass over the profiles
            for key, host in hosts.items():
                why = host_why.get(host)
                if why is not None:
                    out[key] = f"host_{why}"
        for key, why in key_why.items():
            if key in hosts and key not in out:
                out[key] = why
        return out, changes

    def not_closed_keys(self, hosts: Mapping[str, str]) -> dict[str, str]:
        """Profile key -> ``breaker_not_closed`` for every key of ``hosts`` (profile key -> host id) whose
        own breaker or whose host's is open or half-open, as last set (no tick, no transition): what work
        that is not a request (a prewarm) stays away from, trial or not."""
        if not self.not_closed:
            return {}
        return {
            key: "breaker_not_closed"
            for key, host in hosts.items()
            if (Scope.DEPLOYMENT, key) in self.not_closed or (Scope.HOST, host) in self.not_closed
        }

    def picked(self, key: str, host: str, now: float) -> bool:
        """A request was sent to ``key``: a half-open breaker counts it as a trial. True when it is one
        (the deployment's or its host's)."""
        trial = False
        for scope, target in ((Scope.HOST, host), (Scope.DEPLOYMENT, key)):
            b = self.states.get((scope, target))
            if b is not None and b.state is State.HALF_OPEN:
                self.states[(scope, target)] = replace(b, trials=b.trials + 1, trial_at=now)
                trial = True
        return trial

    def released(self, key: str, host: str) -> None:
        """A trial sent to ``key`` ended with no verdict on its health (its client left): the trial is
        given back, so the next request is the trial (rather than none until ``trial_timeout_s``)."""
        for scope, target in ((Scope.HOST, host), (Scope.DEPLOYMENT, key)):
            b = self.states.get((scope, target))
            if b is not None and b.state is State.HALF_OPEN and b.trials:
                self.states[(scope, target)] = replace(b, trials=b.trials - 1)

    def succeeded(self, key: str, host: str, now: float) -> list[Transition]:
        out: list[Transition] = []
        for scope, target in ((Scope.HOST, host), (Scope.DEPLOYMENT, key)):
            new, change = on_success(self.state(scope, target), self.config, now)
            out += self._set(scope, target, new, change, now)
        return out

    def failed(
        self, key: str, host: str, why: Failure, now: float, retry_after_s: float | None = None
    ) -> list[Transition]:
        out: list[Transition] = []
        new, change = on_failure(self.state(Scope.DEPLOYMENT, key), self.config, now, why, retry_after_s)
        out += self._set(Scope.DEPLOYMENT, key, new, change, now)
        if why.hits_host:
            new, change = on_failure(self.state(Scope.HOST, host), self.config, now, why, retry_after_s)
            out += self._set(Scope.HOST, host, new, change, now)
        return out

    def probed(self, host: str, answered: bool, now: float) -> list[Transition]:
        """The probe breaker: a host's ``/api/ps`` poll. A failed poll counts against the host; an answer
        closes a half-open host (the poll is its trial) and clears a closed one's run of failures."""
        b = self.state(Scope.HOST, host)
        if answered:
            if b.state is State.OPEN:
                return []
            new, change = on_success(b, self.config, now)
        else:
            new, change = on_failure(b, self.config, now, Failure.PROBE)
        return self._set(Scope.HOST, host, new, change, now)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every target not plainly closed, for ``GET /breakers`` (after ticking)."""
        self.tick(now)
        rows: list[dict[str, object]] = []
        for (scope, target), b in sorted(self.states.items()):
            rows.append(
                {
                    "scope": scope.value,
                    "target": target,
                    "state": b.state.value,
                    "reason": b.reason,
                    "retry_in_s": round(max(0.0, b.retry_at - now), 3) if b.state is State.OPEN else None,
                    "failures_in_row": b.failures_in_row,
                    "opened_total": b.opened_total,
                }
            )
        return rows


_CONFIG_FIELDS = {f: type(getattr(BreakerConfig(), f)) for f in BreakerConfig.__dataclass_fields__}


def parse_breaker_config(text: str, base: BreakerConfig | None = None) -> BreakerConfig:
    """``"consecutive_failures=2,cool_off_s=1.5"`` over ``base`` (the defaults); raises ValueError naming
    the bad part."""
    config = base or BreakerConfig()
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (x.strip() for x in part.partition("="))
        kind = _CONFIG_FIELDS.get(name)
        try:
            number = kind(value) if sep and kind is not None else None
        except ValueError:
            number = None
        if number is not None and (not math.isfinite(number) or not non_negative(number)):
            number = None
        if number is None or (name == "failure_rate" and number > 1):
            raise ValueError(
                f"breaker setting {part!r}: expected <{'|'.join(sorted(_CONFIG_FIELDS))}>="
                "<finite number >= 0>"
            )
        if name in seen:
            raise ValueError(f"breaker setting {name!r} is given twice; give each setting once")
        seen.add(name)
        config = replace(config, **{name: number})
    return config
