"""A process's live view of the fleet: the matrix store plus what the probe and the answers told it.

Both processes keep one (DESIGN: each may keep its own view refreshed from the fleet). Inputs: probe
observations (Ollama ``/api/ps`` every interval; when each model was first listed and every ``size_vram``
seen are kept across rounds), the deployments that just answered (hot window, and
"answered after the last poll"), auth lockouts, and the day's cloud spend against a budget. Outputs: the
:class:`LiveOverlay` and the live :class:`Matrix`, rebuilt only when an input that can change them
changed, so a request pays a dictionary lookup, not a rebuild.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import date
from types import MappingProxyType

from capability_matrix.live import (
    HOT_WINDOW_S,
    HostObservation,
    LiveOverlay,
    budget_lockout,
    build_overlay,
    next_since,
    observed_sizes,
    utc_day,
)
from capability_matrix.model import Matrix
from capability_matrix.store import MatrixStore

log = logging.getLogger(__name__)

OnLockoutChange = Callable[[str, str, str], None]  # (profile key or "cloud", new state, reason)


class FleetView:
    def __init__(
        self,
        store: MatrixStore,
        *,
        daily_budget_usd: float | None,
        spend_today: Callable[[float], float],
        spend_unknown: Callable[[float], str | None] | None = None,
        on_lockout_change: OnLockoutChange | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._budget = daily_budget_usd
        self._spend_today = spend_today
        self._spend_unknown = spend_unknown  # why today's spend is unknown (a corrupt book), or None
        self._unknown_why: str | None = None
        self._on_lockout_change = on_lockout_change
        self._clock = clock
        self.observations: dict[str, HostObservation] = {}
        # Kept across rounds: when each model was first listed per host, every size_vram seen.
        self._since: dict[str, dict[str, float | None]] = {}
        self._observed_gb: dict[tuple[str, str], float] = {}
        self._last_served: dict[str, float] = {}
        self._auth: dict[str, str] = {}
        self._budget_locked_day: date | None = None
        self._overlay = LiveOverlay()
        self._live = store.current
        self._matrix_generation = -1
        self._dirty = True

    # --- inputs ---------------------------------------------------------------------------------------
    def on_observations(self, observations: dict[str, HostObservation]) -> None:
        self.observations = observations
        self._since = next_since(self._since, observations)
        self._observed_gb = observed_sizes(self._observed_gb, observations)
        self._dirty = True

    def served(self, profile_key: str) -> None:
        now = self._clock()
        before = self._last_served.get(profile_key)
        self._last_served[profile_key] = now
        # Rebuild only if this answer can change a state: a first answer, one after the host's last poll
        # (the model is resident whatever the poll said), or one after the hot window had lapsed.
        if before is None or now - before > HOT_WINDOW_S:
            self._dirty = True
            return
        profile = self.store.current.profiles.get(profile_key)
        observed = self.observations.get(profile.host_id) if profile is not None else None
        if observed is not None and before <= observed.observed_at:
            self._dirty = True

    def set_auth_lockouts(
        self, keys: dict[str, str], *, lifted: str = "provider accepted the credentials again"
    ) -> None:
        """The hooks' current auth lockouts (they see the provider's 401/403); replaces the previous set.
        ``lifted``: why the ones no longer in ``keys`` were lifted (the ``lockout_changed`` reason)."""
        if keys == self._auth:
            return
        for key in keys.keys() - self._auth.keys():
            self._notify(key, "auth", keys[key])
        for key in self._auth.keys() - keys.keys():
            self._notify(key, "none", lifted)
        self._auth = dict(keys)
        self._dirty = True

    # --- outputs --------------------------------------------------------------------------------------
    @property
    def auth_lockouts(self) -> Mapping[str, str]:
        """The auth lockouts in force (profile key -> why), read-only: change them with set_auth_lockouts."""
        return MappingProxyType(self._auth)

    def spend_unknown(self, now: float) -> str | None:
        """Why today's cloud spend is unknown (a corrupt spend book), or None when the book reads."""
        return self._spend_unknown(now) if self._spend_unknown is not None else None

    def budget_reason(self, now: float) -> str | None:
        if self._budget is None:
            return None
        # Today's spend unknown (the book was corrupt): the cloud stays locked until the book is fixed or
        # the UTC day ends, as if the budget were spent; lifted as soon as the book reads again.
        unknown = self._spend_unknown(now) if self._spend_unknown is not None else None
        if unknown != self._unknown_why:
            self._dirty = True
            self._notify("cloud", "budget" if unknown else "none", unknown or "the spend book reads again")
            self._unknown_why = unknown
        if unknown is not None:
            return (
                f"today's cloud spend is unknown ({unknown}); the cloud stays locked until the book is "
                "fixed or the UTC day ends"
            )
        spend = self._spend_today(now)
        locked = budget_lockout(spend, self._budget, utc_day(now), self._budget_locked_day)
        if locked != self._budget_locked_day:
            self._dirty = True
            state = "budget" if locked else "none"
            self._notify(
                "cloud", state, f"daily spend {_usd(spend)} USD against a budget of {_usd(self._budget)} USD"
            )
            self._budget_locked_day = locked
        if locked is None:
            return None
        return f"daily cloud spend {_usd(spend)} USD passed the budget of {_usd(self._budget)} USD"

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
                since=self._since,
                observed_gb=self._observed_gb,
            )
            self._live = self.store.current.with_live(self._overlay)
            self._dirty = False
        return self._overlay

    def matrix(self, now: float | None = None) -> Matrix:
        """The matrix with live warm states and lockouts applied (rebuilt with the overlay)."""
        self.overlay(now)
        return self._live

    def _notify(self, key: str, state: str, reason: str) -> None:
        log.warning("lockout %s -> %s: %s", key, state, reason)
        if self._on_lockout_change is not None:
            self._on_lockout_change(key, state, reason)


def _usd(amount: float) -> str:
    """Dollars as an operator reads them: cents from a dollar up, three significant digits below it (a
    spend of 0.0253 against a budget of 0.0245 is not shown as 0.03 against 0.02, nor 0.00001 as 0.00)."""
    return f"{amount:.2f}" if amount == 0 or abs(amount) >= 1 else f"{amount:.3g}"
