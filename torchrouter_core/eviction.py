"""Evictions as the last resort: which resident models a load may push out, in which order, at what price.

A cold model that does not fit in a host's free memory is still a candidate when unloading idle resident
models there would make room. This module owns the rules that decide which ones may go (pure: values and
``now`` in, values out); :func:`torchrouter_core.usability.place` walks a host's residents with them, and
the ranker prices the result (:func:`torchrouter_core.ranker.scorers.estimated_ttft_s`).

**Order: Ollama's.** Ollama unloads idle runners one at a time until the new model fits, never a busy one
(``server/sched.go`` ``findRunnerToUnload``: "First try to find a runner that's already idle"; a busy one
is only ever waited for, ``refCount`` > 0 blocks its unload). Which idle one first: the simulated host
(``torchrouter/sim/scheduler.py``) takes the shortest remaining keep-alive first, i.e. the least recently
used when keep-alives are equal; that is the ``expires_at`` order ``/api/ps`` reports, and the order the
planner walks. (Ollama itself sorts by the keep-alive *duration*, ties in map order; with one keep-alive
for every model a real host may unload a different idle model than planned. Memory stays safe either way,
since Ollama only loads once the model fits and never unloads a busy runner; the ledger's view is
corrected by the next poll.)

**Who is never taken** (:class:`Keep`, in the order checked). Skipped, as Ollama skips them:

- ``busy`` -- requests in flight on it (this worker's count): never evicted;
- ``evicting`` -- already another live reservation's victim: its memory is counted once, for that load.

Refused: a plan that would have to pass one of these (Ollama would unload it, since it is idle) is no
plan, and the candidate is filtered out as ``no_room``:

- ``reserved`` -- a live VRAM lease for the model on this host (the load of it that is under way or just
  finished, settling lease included);
- ``hot`` -- served within the hot window (30 s, :data:`capability_matrix.live.HOT_WINDOW_S`);
- ``loaded_recently`` -- first listed by ``/api/ps`` less than ``min_residency_s`` ago (60 s);
- ``evicted_recently`` -- its own load evicted another model on this host less than ``hold_s`` ago
  (300 s).

The two hysteresis numbers: with ``min_residency_s = 60`` a model is unloaded at most once a minute per
host, so two models swapping on one host spend at most ``load / 60`` of the time loading (a sixth with a
10 s load, the low end of cold loads in the field); ``hold_s = 300`` is Ollama's default keep-alive
(``OLLAMA_KEEP_ALIVE``, 5 min): a model that pushed another out keeps its place at least as long as
Ollama would keep it idle, so the evicted one cannot push it straight back (it goes elsewhere, or waits
for free memory). A model resident when this process first polled its host counts as loaded long ago.

**Price** (what the ranker adds to the expected time): each victim costs ``unload_s`` (1.5 s: Ollama waits
for the freed VRAM to show before loading, "typical convergence is 0.5-1.5s", ``waitForVRAMRecovery``)
and a charge for its recent use, :func:`eviction_charge_s`: the probability that it is asked for again
before its keep-alive would have unloaded it anyway, ``1 - exp(-rate * remaining keep-alive)``, times its
reload time. A model nobody asked for since it loaded costs nothing to evict; one in steady use costs
about a reload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from torchrouter_core.env import finite_float, non_negative

MIN_RESIDENCY_S: Final = 60.0
EVICTOR_HOLD_S: Final = 300.0
UNLOAD_S: Final = 1.5
KEEP_ALIVE_HORIZON_S: Final = 300.0  # Ollama's default keep-alive: the longest a charge looks ahead
USE_WINDOW_S: Final = 300.0  # the recent-use rate's time constant (seconds)


class Keep(StrEnum):
    """Why a resident model is not evicted (a closed set: event field and test label)."""

    BUSY = "busy"
    EVICTING = "evicting"
    RESERVED = "reserved"
    HOT = "hot"
    LOADED_RECENTLY = "loaded_recently"
    EVICTED_RECENTLY = "evicted_recently"


# Walked past (Ollama skips them too); the rest stop a plan.
SKIPPED: Final = frozenset({Keep.BUSY, Keep.EVICTING})


@dataclass(frozen=True, slots=True)
class EvictionRules:
    """The rules' numbers (seconds); ``enabled`` False: never plan an eviction (the pre-#9 behaviour)."""

    enabled: bool = True
    min_residency_s: float = MIN_RESIDENCY_S
    hold_s: float = EVICTOR_HOLD_S
    unload_s: float = UNLOAD_S


DEFAULT_RULES: Final = EvictionRules()


def keep_reason(
    *,
    busy: bool,
    evicting: bool,
    reserved: bool,
    hot: bool,
    since: float | None,
    evicted_at: float | None,
    now: float | None,
    rules: EvictionRules = DEFAULT_RULES,
) -> Keep | None:
    """Why a resident model must stay (the module's order), or ``None`` when it may be evicted.

    ``since``: when ``/api/ps`` first listed it (``None``: before this process watched the host);
    ``evicted_at``: when its own load last evicted another model on this host (``None``: never);
    ``now`` ``None`` skips the two time rules (no clock given)."""
    if evicting:
        return Keep.EVICTING
    if busy:
        return Keep.BUSY
    if reserved:
        return Keep.RESERVED
    if hot:
        return Keep.HOT
    if now is not None:
        if since is not None and now - since < rules.min_residency_s:
            return Keep.LOADED_RECENTLY
        if evicted_at is not None and now - evicted_at < rules.hold_s:
            return Keep.EVICTED_RECENTLY
    return None


def eviction_charge_s(rate_per_s: float, reload_s: float, expires_in_s: float | None) -> float:
    """Expected seconds later requests lose to reloading a model evicted now: ``(1 - exp(-rate * r)) *
    reload_s`` with ``r`` its remaining keep-alive, clamped to [0, 300] s (``None``: it would never unload,
    300 s). ``rate_per_s``: its recent requests per second (:class:`RecentUse`)."""
    horizon = (
        KEEP_ALIVE_HORIZON_S if expires_in_s is None else min(max(expires_in_s, 0.0), KEEP_ALIVE_HORIZON_S)
    )
    if rate_per_s <= 0.0 or reload_s <= 0.0:
        return 0.0
    return (1.0 - math.exp(-rate_per_s * horizon)) * reload_s


@dataclass
class RecentUse:
    """Requests per second per ``(host_id, model)``, an exponentially decayed count (time constant
    ``window_s``): each pick adds one; ``rate`` is the count divided by the window. Pure: takes ``now``
    (any clock, used consistently); keys are the matrix's (bounded by it)."""

    window_s: float = USE_WINDOW_S
    _count: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # key -> (count, at)

    def record(self, host_id: str, model: str, now: float) -> None:
        key = (host_id, model)
        count, at = self._count.get(key, (0.0, now))
        self._count[key] = (count * math.exp(-max(0.0, now - at) / self.window_s) + 1.0, now)

    def rate(self, host_id: str, model: str, now: float) -> float:
        entry = self._count.get((host_id, model))
        if entry is None:
            return 0.0
        count, at = entry
        return count * math.exp(-max(0.0, now - at) / self.window_s) / self.window_s


@dataclass
class EvictionLog:
    """When each ``(host_id, model)``'s load last evicted another model (Unix seconds), for the
    ``evicted_recently`` rule. Entries older than ``hold_s`` are dropped on each record (bounded)."""

    hold_s: float = EVICTOR_HOLD_S
    evicted_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def record(self, host_id: str, model: str, now: float) -> None:
        self.evicted_at = {k: t for k, t in self.evicted_at.items() if now - t < self.hold_s}
        self.evicted_at[(host_id, model)] = now


def parse_eviction_rules(text: str) -> EvictionRules:
    """``"off"`` or ``"min_residency_s=60,hold_s=300,unload_s=1.5"`` (any subset; empty: defaults) ->
    :class:`EvictionRules`. Raises ValueError naming the bad part."""
    text = text.strip()
    off_words = ("off", "false", "0", "no")
    if text.lower() in off_words:
        return EvictionRules(enabled=False)
    values: dict[str, float] = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for part in parts:
        if part.lower() in off_words:
            raise ValueError(
                f"{part!r} stands alone: it turns eviction off and takes no rules beside it (got {text!r})"
            )
        name, eq, raw = (x.strip() for x in part.partition("="))
        number = finite_float(raw)
        if not eq or name not in ("min_residency_s", "hold_s", "unload_s") or number is None:
            raise ValueError(
                f"eviction rule {part!r}: expected off, or "
                "min_residency_s|hold_s|unload_s=<finite seconds >= 0>"
            )
        if not non_negative(number):
            raise ValueError(f"eviction rule {part!r}: seconds must be >= 0 (no minus sign)")
        if name in values:
            raise ValueError(f"eviction rule {name!r} is given twice; give each rule once")
        values[name] = number
    return EvictionRules(
        min_residency_s=values.get("min_residency_s", MIN_RESIDENCY_S),
        hold_s=values.get("hold_s", EVICTOR_HOLD_S),
        unload_s=values.get("unload_s", UNLOAD_S),
    )
