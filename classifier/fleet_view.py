"""The classifier's live view of the fleet: the matrix store plus what the probe and responses told us.

Inputs: probe observations (Ollama ``/api/ps`` every ``interval``), the deployments that just answered
(hot window), auth lockouts reported by the hooks on responses, and the day's cloud spend against the
budget. Output: a :class:`LiveOverlay` (rebuilt on each probe round and on each input change) and the
live matrix that ``/capability-matrix`` serves and lane limits are derived from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date

from capability_matrix import (
    HostObservation,
    LiveOverlay,
    MatrixStore,
    budget_lockout,
    build_overlay,
    utc_day,
)

log = logging.getLogger("torchrouter.classifier")

OnLockoutChange = Callable[[str, str, str], None]  # (profile key or "cloud", new state, reason)


class FleetView:
    def __init__(
        self,
        store: MatrixStore,
        *,
        daily_budget_usd: float | None,
        spend_today: Callable[[float], float],
        on_lockout_change: OnLockoutChange | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._budget = daily_budget_usd
        self._spend_today = spend_today
        self._on_lockout_change = on_lockout_change
        self._clock = clock
        self.observations: dict[str, HostObservation] = {}
        self._last_served: dict[str, float] = {}
        self._auth: dict[str, str] = {}
        self._budget_locked_day: date | None = None
        self._overlay = LiveOverlay()
        self._matrix_generation = -1
        self._dirty = True
        self.hook_errors = 0  # exceptions the hooks inside LiteLLM caught (cumulative since LiteLLM started)

    # --- inputs ---------------------------------------------------------------------------------------
    def on_observations(self, observations: dict[str, HostObservation]) -> None:
        self.observations = observations
        self._dirty = True

    def served(self, profile_key: str) -> None:
        if self._last_served.get(profile_key) is None:
            self._dirty = True  # a first serve may change warm -> hot; later ones only refresh the window
        self._last_served[profile_key] = self._clock()

    def set_auth_lockouts(self, keys: dict[str, str]) -> None:
        """The hooks' current auth lockouts (they see the provider's 401/403); replaces the previous set."""
        if keys == self._auth:
            return
        for key in keys.keys() - self._auth.keys():
            self._notify(key, "auth", keys[key])
        for key in self._auth.keys() - keys.keys():
            self._notify(key, "none", "provider accepted the credentials again")
        self._auth = dict(keys)
        self._dirty = True

    # --- outputs --------------------------------------------------------------------------------------
    def budget_reason(self, now: float) -> str | None:
        if self._budget is None:
            return None
        spend = self._spend_today(now)
        locked = budget_lockout(spend, self._budget, utc_day(now), self._budget_locked_day)
        if locked != self._budget_locked_day:
            self._dirty = True
            state = "budget" if locked else "none"
            self._notify(
                "cloud", state, f"daily spend {spend:.4f} USD against a budget of {self._budget} USD"
            )
            self._budget_locked_day = locked
        if locked is None:
            return None
        return f"daily cloud spend {spend:.4f} USD passed the budget of {self._budget:.2f} USD"

    def overlay(self, now: float | None = None) -> LiveOverlay:
        now = self._clock() if now is None else now
        budget = self.budget_reason(now)
        if self._dirty or self.store.generation != self._matrix_generation:
            self._matrix_generation = self.store.generation
            self._overlay = build_overlay(
                self.store.current,
                self.observations,
                now=now,
                last_served=self._last_served,
                auth=self._auth,
                budget_reason=budget,
            )
            self._dirty = False
        return self._overlay

    def _notify(self, key: str, state: str, reason: str) -> None:
        log.warning("lockout %s -> %s: %s", key, state, reason)
        if self._on_lockout_change is not None:
            self._on_lockout_change(key, state, reason)
