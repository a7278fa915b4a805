"""Requests in flight per deployment, as the hooks saw them start and finish (pure; time is passed in).

An entry that never hears its finish (a log hook LiteLLM skipped on a client disconnect, say) expires
after ``ttl_s`` so a lost event can under-count load for a while but never pin a deployment as busy.

The hooks read :meth:`InFlight.counts` on every pick (twice for a local one: the ranker's snapshot, then
the prewarm's demand after any wait for the ledger), so it costs what the deployments in flight number, not
the requests: the count per deployment is kept as entries come and go, and entries are kept in the order
they (re)started, so expiry looks only at the oldest (a clock that steps back only delays an expiry).
"""

from __future__ import annotations

from collections import Counter, OrderedDict


class InFlight:
    def __init__(self, ttl_s: float = 900.0) -> None:
        self.ttl_s = ttl_s
        self._started: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest start first
        self._per_key: Counter[str] = Counter()

    def start(self, key: str, token: str, now: float) -> None:
        entry = (key, token)
        if entry in self._started:
            self._started.move_to_end(entry)  # started again: its expiry counts from now
        else:
            self._per_key[key] += 1
        self._started[entry] = now

    def _forget(self, entry: tuple[str, str]) -> None:
        key = entry[0]
        left = self._per_key[key] - 1
        if left:
            self._per_key[key] = left
        else:
            del self._per_key[key]

    def finish(self, key: str, token: str) -> bool:
        if self._started.pop((key, token), None) is None:
            return False
        self._forget((key, token))
        return True

    def finish_request(self, token: str) -> int:
        """End every entry of one request (``token``), whichever deployments it reached; how many."""
        entries = [entry for entry in self._started if entry[1] == token]
        for entry in entries:
            del self._started[entry]
            self._forget(entry)
        return len(entries)

    def of_request(self, token: str) -> list[str]:
        """The deployments one request (``token``) has in flight now."""
        return [key for key, held_by in self._started if held_by == token]

    def counts(self, now: float) -> dict[str, int]:
        """Deployment key -> requests in flight on it, after dropping entries older than ``ttl_s``."""
        started = self._started
        while started:
            entry, at = next(iter(started.items()))
            if now - at <= self.ttl_s:
                break
            del started[entry]
            self._forget(entry)
        return dict(self._per_key)

    def __len__(self) -> int:
        return len(self._started)
