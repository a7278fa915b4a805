"""What routing can reach on a fleet, in pure simulation: the fleet benchmark's reference rows.

A discrete-event run of the simulated hosts' own scheduler (:class:`torchrouter.sim.scheduler.HostScheduler`,
the same code the HTTP fleet runs) in virtual time, without HTTP, LiteLLM or a clock: each request of the
workload is placed by a policy at its arrival, then waits, loads and runs exactly as the simulated Ollama
would make it. It answers "how good can a router be here?" in a second, so the benchmark can say whether a
goal is reachable at all on the fleet, apart from any router's or LiteLLM's own cost.

Policies:

- ``informed``: sees every host's scheduler (resident models, free memory, slots, queues) and picks the
  deployment with the earliest expected finish: a resident model's remaining load and the line ahead of
  its slots; a cold one's load when it fits in free memory; a load that evicts idle models nobody waits
  for, plus 20 s per evicted model used in the last minute (so two models do not trade places); never a
  load that would wait for busy models. Greedy and without foresight: a reference, not an optimum.
- ``shuffle`` and ``least-busy``: LiteLLM's ``simple-shuffle`` (uniform over the group) and ``least-busy``
  (fewest requests in flight, ties at random) over the same deployments.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fleet_workload import Request, service_s
from torchrouter.sim.scheduler import HostScheduler, Start, Ticket
from torchrouter.sim.spec import fleet_spec_from_matrix

EVICTION_PENALTY_S = 20.0  # per evicted model that served a request in the last RECENT_S
RECENT_S = 60.0


@dataclass
class FleetState:
    """What a policy may read: the profiles, the hosts' schedulers, requests in flight per profile."""

    profiles: Mapping[str, Mapping[str, Any]]
    hosts: Mapping[str, HostScheduler]
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_used: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(1))


Policy = Callable[[Request, Sequence[str], FleetState, float], str]


def shuffle(request: Request, keys: Sequence[str], fleet: FleetState, now: float) -> str:
    return fleet.rng.choice(list(keys))


def least_busy(request: Request, keys: Sequence[str], fleet: FleetState, now: float) -> str:
    fewest = min(fleet.in_flight[k] for k in keys)
    return fleet.rng.choice([k for k in keys if fleet.in_flight[k] == fewest])


def expected_finish_s(request: Request, key: str, fleet: FleetState, now: float) -> float:
    """The ``informed`` policy's estimate of when ``request`` would end on ``key`` (seconds from now)."""
    profile = fleet.profiles[key]
    sched = fleet.hosts[profile["host_id"]]
    model = sched.spec.model(profile["model"])
    assert model is not None
    service = service_s(profile, request.prompt_tokens, request.max_tokens)
    slots = sched.spec.slots(model)
    resident = sched.resident.get(model.name)
    if resident is not None:
        ahead = max(0, fleet.in_flight[key] - slots + 1)
        return max(0.0, resident.ready_at - now) + ahead * service / slots + service
    room = sched.free_gb
    loaded = len(sched.resident)
    if model.size_gb <= room and loaded < sched.spec.max_loaded_models:
        return model.load_s + service
    idle = sorted(
        (r for r in sched.resident.values() if r.active == 0 and not sched.waiting_for(r.model.name)),
        key=lambda r: r.expires_at,
    )
    penalty = 0.0
    for victim in idle:
        if model.size_gb <= room and loaded < sched.spec.max_loaded_models:
            break
        room += victim.vram_gb
        loaded -= 1
        victim_key = f"{profile['host_id']}/ollama/{victim.model.name}"
        if now - fleet.last_used.get(victim_key, -math.inf) < RECENT_S:
            penalty += EVICTION_PENALTY_S
    if model.size_gb <= room and loaded < sched.spec.max_loaded_models:
        return model.load_s + service + penalty
    return math.inf  # it would wait for busy models


def informed(request: Request, keys: Sequence[str], fleet: FleetState, now: float) -> str:
    return min(keys, key=lambda k: expected_finish_s(request, k, fleet, now))


POLICIES: dict[str, Policy] = {"informed": informed, "shuffle": shuffle, "least-busy": least_busy}


@dataclass(frozen=True)
class Outcome:
    latency_s: dict[int, float]  # request index -> seconds from arrival to its last token
    counters: dict[str, int]  # summed over hosts: loads, evictions, busy_evictions, spills, ...
    history: dict[str, tuple[str, Ticket]]  # request label -> (host id, its ticket)


def simulate(
    matrix: Mapping[str, Any], requests: Sequence[Request], policy: Policy, seed: int = 1
) -> Outcome:
    """Run ``requests`` through the matrix's simulated hosts (nothing loaded at first) under ``policy``."""
    spec = fleet_spec_from_matrix(matrix, cloud_api_key="unused")
    fleet = FleetState(matrix["profiles"], {h.host_id: HostScheduler(h) for h in spec.hosts})
    fleet.rng.seed(seed)
    by_group: dict[str, list[str]] = defaultdict(list)
    for key, p in matrix["profiles"].items():
        if p["provider"] == "ollama":
            by_group[p["lane"]].append(key)
    events: list[tuple[float, int, Callable[[float], None]]] = []
    order = itertools.count()
    waiting: dict[str, list[tuple[Ticket, Request, str]]] = defaultdict(list)
    latency: dict[int, float] = {}

    def at(t: float, action: Callable[[float], None]) -> None:
        heapq.heappush(events, (t, next(order), action))

    def begin(now: float, ticket: Ticket, request: Request, key: str, start: Start) -> None:
        run_s = service_s(fleet.profiles[key], request.prompt_tokens, request.max_tokens) / start.speed_factor
        at(max(now, start.ready_at) + run_s, lambda t: finish(t, ticket, request, key))

    def retry(now: float, host: str) -> None:
        # As the simulated Ollama does after any change: every waiting request asks again, until none starts.
        changed = True
        while changed:
            changed = False
            for item in list(waiting[host]):
                decision = fleet.hosts[host].try_start(item[0], now)
                if isinstance(decision, Start):
                    waiting[host].remove(item)
                    begin(now, *item, decision)
                    changed = True

    def finish(now: float, ticket: Ticket, request: Request, key: str) -> None:
        host = fleet.profiles[key]["host_id"]
        fleet.hosts[host].release(ticket, now)
        fleet.in_flight[key] -= 1
        latency[request.index] = now - request.at
        retry(now, host)

    def arrive(now: float, request: Request) -> None:
        key = policy(request, by_group[request.group], fleet, now)
        fleet.last_used[key] = now
        fleet.in_flight[key] += 1
        host = fleet.profiles[key]["host_id"]
        ticket = fleet.hosts[host].submit(fleet.profiles[key]["model"], now, label=request.label)
        decision = fleet.hosts[host].try_start(ticket, now)
        if isinstance(decision, Start):
            begin(now, ticket, request, key, decision)
            retry(now, host)
        else:
            waiting[host].append((ticket, request, key))

    for request in requests:
        at(request.at, functools.partial(arrive, request=request))
    while events:
        now, _, action = heapq.heappop(events)
        action(now)
    counters: dict[str, int] = defaultdict(int)
    for sched in fleet.hosts.values():
        for name, value in sched.counters.as_dict().items():
            if isinstance(value, int):
                counters[name] += value
    history = {t.label: (host, t) for host, s in fleet.hosts.items() for t in s.history}
    return Outcome(latency, dict(counters), history)
