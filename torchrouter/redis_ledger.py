"""The VRAM ledger in Redis, shared by every LiteLLM worker (and readable by the classifier).

The rule is :mod:`torchrouter_core.ledger`'s; here it runs inside Redis as one Lua script per reserve
(``EVALSHA``: Redis runs a script atomically, so two workers can never both be granted the same free
memory). Layout, under a ``prefix`` (default ``torchrouter:ledger``):

- ``<prefix>:host:<host_id>`` -- a hash, lease id -> ``"<model>\\t<gb>\\t<expires_at>\\t<victims>"``,
  victims ``"<model>=<gb> <model>=<gb>"`` (empty: no eviction; a value of three fields is read as none);
- ``<prefix>:hosts`` -- a set of the host ids that ever had a lease;
- ``<prefix>:peak`` -- a hash, host id -> the most GB ever reserved there at once (for the tests and
  ``/fleet``).

Release is a script too (``HGET``, ``HDEL``, the settling lease; atomic: exactly one caller gets 1).
Expired leases are dropped by the next reserve or renew on that host and ignored by every read. Times
are the callers' Unix seconds (the workers share a machine's clock).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import redis.asyncio as aioredis

from torchrouter_core.ledger import (
    DEFAULT_LEASE_TTL_S,
    SETTLE_SUFFIX,
    HostLedger,
    Lease,
    ReserveRequest,
)

# KEYS: host hash, hosts set, peak hash. ARGV: lease id, model, gb, free gb, model slots, now, ttl, host id,
# victims ("<model>=<gb> ..."), then the resident models. Mirrors torchrouter_core.ledger.admits and
# LedgerBook.reserve.
_RESERVE = """
local now = tonumber(ARGV[6])
local resident = {}
for i = 10, #ARGV do resident[ARGV[i]] = true end
local pending, victims, leased = {}, {}, {}
local leases = redis.call('HGETALL', KEYS[1])
for i = 1, #leases, 2 do
  local id, value = leases[i], leases[i + 1]
  local model, gb, expires, evicts = string.match(value, '^([^\\t]*)\\t([^\\t]+)\\t([^\\t]+)\\t?([^\\t]*)$')
  if tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], id)
  elseif id ~= ARGV[1] then
    leased[model] = true
    if not resident[model] then
      local claim = tonumber(gb)
      if pending[model] == nil or claim > pending[model] then pending[model] = claim end
    end
    for item in string.gmatch(evicts, '%S+') do
      local victim, size = string.match(item, '^(.*)=([^=]+)$')
      if resident[victim] then victims[victim] = tonumber(size) end
    end
  end
end
local want = tonumber(ARGV[3])
if not resident[ARGV[2]] then
  if pending[ARGV[2]] == nil or want > pending[ARGV[2]] then pending[ARGV[2]] = want end
end
for item in string.gmatch(ARGV[9], '%S+') do
  local victim, size = string.match(item, '^(.*)=([^=]+)$')
  if resident[victim] then
    if victims[victim] ~= nil or leased[victim] or victim == ARGV[2] then return 0 end
    victims[victim] = tonumber(size)
  end
end
local total, count, freed, nvictims = 0, 0, 0, 0
for _, claim in pairs(pending) do total = total + claim; count = count + 1 end
for _, size in pairs(victims) do freed = freed + size; nvictims = nvictims + 1 end
if total > tonumber(ARGV[4]) + freed + 1e-9 or count > math.max(0, tonumber(ARGV[5]) + nvictims) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1],
  ARGV[2] .. '\\t' .. ARGV[3] .. '\\t' .. (now + tonumber(ARGV[7])) .. '\\t' .. ARGV[9])
redis.call('SADD', KEYS[2], ARGV[8])
local peak = tonumber(redis.call('HGET', KEYS[3], ARGV[8]) or '0')
if total > peak then redis.call('HSET', KEYS[3], ARGV[8], tostring(total)) end
return 1
"""

# KEYS: host hash. ARGV: lease id, now, ttl.
_RENEW = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local model, gb, expires, evicts = string.match(value, '^([^\\t]*)\\t([^\\t]+)\\t([^\\t]+)\\t?([^\\t]*)$')
if tonumber(expires) <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1],
  model .. '\\t' .. gb .. '\\t' .. (tonumber(ARGV[2]) + tonumber(ARGV[3])) .. '\\t' .. evicts)
return 1
"""


# KEYS: host hash. ARGV: lease id, now, settle seconds, settle suffix.
_RELEASE = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local settle = tonumber(ARGV[3])
local suffix = ARGV[4]
if settle > 0 and string.sub(ARGV[1], -#suffix) ~= suffix then
  local model, gb, expires, evicts = string.match(value, '^([^\\t]*)\\t([^\\t]+)\\t([^\\t]+)\\t?([^\\t]*)$')
  local upto = tonumber(ARGV[2]) + settle
  redis.call('HSET', KEYS[1], ARGV[1] .. suffix, model .. '\\t' .. gb .. '\\t' .. upto .. '\\t' .. evicts)
end
return 1
"""


def _victims_text(victims: tuple[tuple[str, float], ...]) -> str:
    return " ".join(f"{model}={gb!r}" for model, gb in victims)


def _parse_victims(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for item in text.split():
        model, _, gb = item.rpartition("=")
        out.append((model, float(gb)))
    return tuple(out)


def _parse(lease_id: str, host_id: str, value: str) -> Lease | None:
    fields = value.split("\t")
    if len(fields) not in (3, 4):
        return None
    try:
        victims = _parse_victims(fields[3]) if len(fields) == 4 else ()
        return Lease(lease_id, host_id, fields[0], float(fields[1]), float(fields[2]), victims)
    except ValueError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


MAX_CONNECTIONS = 64  # per LiteLLM worker; Redis serves thousands
TIMEOUT_S = 2.0  # to connect, for one command, and to wait for a free connection of the pool


def redis_client(url: str, *, max_connections: int) -> aioredis.Redis:
    """A client on a blocking pool: under a burst a call waits (up to ``TIMEOUT_S``) for a free connection
    instead of failing at once with MaxConnectionsError (redis-py's plain pool), which would drop a
    release and leave the memory reserved until its lease expires. Replies decoded to str. The VRAM
    ledger's and the spend book's (torchrouter/redis_spend.py) one way to reach Redis."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=TIMEOUT_S,
        decode_responses=True,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
    )
    return aioredis.Redis(connection_pool=pool)


class RedisLedger:
    """:class:`torchrouter_core.ledger.Ledger` on a Redis server at ``url`` (``redis://host:port/db``).

    Raises ``redis.exceptions.RedisError`` (connection refused, timeout) from every method; the hooks
    treat a failed reserve as refused and a failed release as left to expire.
    """

    def __init__(
        self, url: str, *, ttl_s: float = DEFAULT_LEASE_TTL_S, prefix: str = "torchrouter:ledger"
    ) -> None:
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._redis: aioredis.Redis = redis_client(url, max_connections=MAX_CONNECTIONS)
        self._reserve: Any = self._redis.register_script(_RESERVE)
        self._renew: Any = self._redis.register_script(_RENEW)
        self._release: Any = self._redis.register_script(_RELEASE)

    def _host_key(self, host_id: str) -> str:
        return f"{self.prefix}:host:{host_id}"

    async def reserve(self, request: ReserveRequest, now: float) -> bool:
        keys = [self._host_key(request.host_id), f"{self.prefix}:hosts", f"{self.prefix}:peak"]
        args: list[str | float | int] = [
            request.lease_id,
            request.model,
            repr(float(request.gb)),
            repr(float(request.free_gb)),
            int(request.model_slots),
            repr(float(now)),
            repr(float(self.ttl_s)),
            request.host_id,
            _victims_text(request.victims),
            *sorted(request.resident),
        ]
        return int(await self._reserve(keys=keys, args=args)) == 1

    async def release(self, lease_id: str, host_id: str, now: float, settle_s: float = 0.0) -> bool:
        args = [lease_id, repr(float(now)), repr(float(settle_s)), SETTLE_SUFFIX]
        return int(await self._release(keys=[self._host_key(host_id)], args=args)) == 1

    async def renew(self, lease_id: str, host_id: str, now: float) -> bool:
        args = [lease_id, repr(float(now)), repr(float(self.ttl_s))]
        return int(await self._renew(keys=[self._host_key(host_id)], args=args)) == 1

    async def view(self, now: float, resident: Mapping[str, Collection[str]]) -> dict[str, HostLedger]:
        hosts = sorted(_text(h) for h in await self._redis.smembers(f"{self.prefix}:hosts"))
        out: dict[str, HostLedger] = {}
        for host_id in hosts:
            raw = await self._redis.hgetall(self._host_key(host_id))
            leases: list[Lease] = []
            for lease_id, value in raw.items():
                lease = _parse(_text(lease_id), host_id, _text(value))
                if lease is not None and lease.expires_at > now:
                    leases.append(lease)
            if leases:
                out[host_id] = HostLedger.of(leases, resident.get(host_id, ()))
        return out

    async def peaks(self) -> dict[str, float]:
        raw = await self._redis.hgetall(f"{self.prefix}:peak")
        return {_text(host): float(_text(gb)) for host, gb in raw.items()}

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
