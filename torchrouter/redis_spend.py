"""Today's cloud spend in Redis: the one book, shared by every LiteLLM worker and read by the classifier.

Selected by the same setting as the shared VRAM ledger, ``TORCHROUTER_LEDGER_REDIS_URL`` (unset: the
book is the hooks' own, durable in ``TORCHROUTER_SPEND_PATH``, :mod:`torchrouter_core.spend_file`).
Layout, under a ``prefix`` (default ``torchrouter:spend``), per UTC day ``D`` (``YYYY-MM-DD``):

- ``<prefix>:<D>`` -- the day's cloud spend in USD, a float string (``INCRBYFLOAT``);
- ``<prefix>:<D>:calls`` -- a set of the LiteLLM call ids booked that day, so that a call reported twice
  (its response headers and its success log, or a retry after Redis did not answer) is counted once.

A booking is one Lua script (atomic: ``SADD`` the call id; only if it was new, ``INCRBYFLOAT`` the total;
both keys expire :data:`KEEP_S` after the last write, so a finished day cleans itself up). Amounts are the
costs LiteLLM reports (``response_cost``, USD); the caller passes only finite, positive ones. Times are the
callers' Unix seconds; the day is the UTC day of ``now``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from capability_matrix import utc_day
from torchrouter.redis_ledger import redis_client

KEEP_S = 3 * 86400  # a day's keys outlive it by two days (read at a restart just after midnight, say)

# KEYS: day total, day's call-id set. ARGV: call id, cost (USD), seconds to keep. Returns the day's total.
_BOOK = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return redis.call('GET', KEYS[1]) or '0'
end
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return total
"""


class RedisSpendBook:
    """The day's spend on a Redis server at ``url`` (``redis://host:port/db``).

    Raises ``redis.exceptions.RedisError`` (connection refused, timeout) from every method; the hooks then
    keep counting in their own book and book the call again later (idempotent per call id)."""

    def __init__(self, url: str, *, prefix: str = "torchrouter:spend") -> None:
        self.prefix = prefix
        self._redis: aioredis.Redis = redis_client(url, max_connections=16)
        self._book: Any = self._redis.register_script(_BOOK)

    def day_key(self, now: float) -> str:
        return f"{self.prefix}:{utc_day(now).isoformat()}"

    async def book(self, call_id: str, cost_usd: float, now: float) -> float:
        """Add one call's cost to today's total (once per call id); today's total after it, USD."""
        day = self.day_key(now)
        total = await self._book(keys=[day, day + ":calls"], args=[call_id, repr(float(cost_usd)), KEEP_S])
        return float(total)

    async def today(self, now: float) -> float:
        """Today's total, USD (0 when nothing was booked today)."""
        raw = await self._redis.get(self.day_key(now))
        return float(raw) if raw is not None else 0.0

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
