"""Requests in flight per deployment, as the hooks saw them start and finish (pure; time is passed in).

An entry that never hears its finish (a log hook LiteLLM skipped on a client disconnect, say) expires
after ``ttl_s`` so a lost event can under-count load for a while but never pin a deployment as busy.
"""

from __future__ import annotations

from collections import Counter


class InFlight:
    def __init__(self, ttl_s: float = 900.0) -> None:
        self.ttl_s = ttl_s
        self._started: dict[tuple[str, str], float] = {}

    def start(self, key: str, token: str, now: float) -> None:
        self._started[(key, token)] = now

    def finish(self, key: str, token: str) -> bool:
        return self._started.pop((key, token), None) is not None

    def finish_request(self, token: str) -> int:
        """End every entry of one request (``token``), whichever deployments it reached; how many."""
        entries = [entry for entry in self._started if entry[1] == token]
        for entry in entries:
            del self._started[entry]
        return len(entries)

    def of_request(self, token: str) -> list[str]:
        """The deployments one request (``token``) has in flight now."""
        return [key for key, held_by in self._started if held_by == token]

    def counts(self, now: float) -> dict[str, int]:
        expired = [entry for entry, t in self._started.items() if now - t > self.ttl_s]
        for entry in expired:
            del self._started[entry]
        return dict(Counter(key for key, _ in self._started))

    def __len__(self) -> int:
        return len(self._started)
