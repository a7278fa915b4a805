"""The memory and slot model of one simulated Ollama host, pure and synchronous.

Owns which models are resident, how much GPU memory they hold, who may run now and who waits, keep-alive
expiry, and the counters tests read (loads, evictions, spills, ...). It imitates Ollama's scheduler:
`num_parallel` slots per model, at most `max_loaded_models` resident, idle models evicted before a load
(shortest remaining keep-alive first: the least recently used when keep-alives are equal, the order the
router's eviction planner walks, `torchrouter_core.eviction`), a load that cannot fit waits for busy
models, and a model that can never fit loads partly on the GPU ("spill") and runs at a fifth of its speed.
A host's `gpu_overhead_gb` (Ollama's OLLAMA_GPU_OVERHEAD) is kept free, as Ollama's memory estimate does.

Every method takes `now` (seconds on any monotonic clock); nothing here sleeps or does I/O. The async edge
drives it with submit -> try_start (until Start) -> release, and re-tries waiting tickets whenever anything
changed (any release, start, reset or external-memory change).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from torchrouter.sim.spec import HostSpec, ModelSpec

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: 5 minutes
NEVER = math.inf
SPILL_SPEED_FACTOR = 0.2
_EPS = 1e-9

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: object) -> float:
    """Seconds a model stays loaded after its last request ends; NEVER for a negative value.

    Accepts what Ollama accepts: None (the default), a number of seconds, a numeric string, or a Go duration
    such as "5m", "30s", "1h30m", "-1m". Raises ValueError otherwise.
    """
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text)
    else:
        raise ValueError(f"invalid keep_alive {value!r}")
    return NEVER if seconds < 0 else seconds


def _parse_go_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    parts = _GO_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"invalid keep_alive duration {text!r}")
    return sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)


def think_key(value: object) -> str:
    """How a request's `think` value is counted: "true", "false", "absent", or a level such as "high"."""
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Counters:
    requests: int = 0
    loads: int = 0
    evictions: int = 0  # idle models unloaded to make room
    spills: int = 0  # loads that did not fit on the GPU; the router must never cause one
    unloads: int = 0  # models unloaded because their keep-alive ran out
    errors: int = 0  # error answers and cut streams the simulator produced
    cancelled: int = 0  # clients that went away before their answer ended
    think: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> think_key -> count

    def note_request(self, model: str, think: object) -> None:
        self.requests += 1
        per_model = self.think.setdefault(model, {})
        key = think_key(think)
        per_model[key] = per_model.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resident:
    """A loaded (or loading) model. Memory is held from the moment the load starts."""

    model: ModelSpec
    vram_gb: float  # the part on the GPU; less than model.size_gb when spilled
    ready_at: float  # load completes at this time
    keep_alive_s: float  # set by the latest request that used it, as in Ollama
    active: int = 0
    expires_at: float = NEVER  # only meaningful while idle
    spilled: bool = False

    def expires_in(self, now: float) -> float:
        """Seconds until unload if it stays idle; for a busy model, the keep-alive it will get."""
        if self.active:
            return self.keep_alive_s
        return self.expires_at - now


@dataclass
class Ticket:
    id: int
    model: str
    keep_alive_s: float


@dataclass(frozen=True)
class Start:
    ready_at: float  # the request may generate from this time on; later than now while the model loads
    loaded: bool  # this request started the load
    evicted: tuple[str, ...]
    speed_factor: float  # 1.0, or SPILL_SPEED_FACTOR on a spilled model


@dataclass(frozen=True)
class Wait:
    # "slot" (model busy), "memory" / "max_loaded" (busy models in the way), "queue" (an earlier load waits).
    # Only a release, start, reset or external-memory change can end a wait: an idle model expiring never
    # does, because a load only waits when evicting every idle model would not be enough.
    reason: str


class UnknownModel(LookupError):
    pass


class HostScheduler:
    def __init__(self, spec: HostSpec, *, time_scale: float = 1.0) -> None:
        self.spec = spec
        self.time_scale = time_scale
        self.external_gb = 0.0  # memory used by something else on the GPU (operator/test knob)
        self.resident: dict[str, Resident] = {}
        self.counters = Counters()
        self._waiting: dict[int, Ticket] = {}  # insertion order is arrival order
        self._running: dict[int, Ticket] = {}
        self._ids = itertools.count(1)  # survives reset so stale tickets never alias new ones

    # -- memory -------------------------------------------------------------------------------------------
    @property
    def capacity_gb(self) -> float:
        return self.spec.gpu_memory_gb - self.external_gb - self.spec.gpu_overhead_gb

    @property
    def in_use_gb(self) -> float:
        return sum(r.vram_gb for r in self.resident.values())

    @property
    def free_gb(self) -> float:
        return self.capacity_gb - self.in_use_gb

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._running)

    def waiting_for(self, model: str) -> int:
        return sum(1 for t in self._waiting.values() if t.model == model)

    # -- the request life cycle ---------------------------------------------------------------------------
    def submit(self, model: str, now: float, *, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> Ticket:
        if self.spec.model(model) is None:
            raise UnknownModel(model)
        ticket = Ticket(next(self._ids), model, keep_alive_s)
        self._waiting[ticket.id] = ticket
        return ticket

    def try_start(self, ticket: Ticket, now: float) -> Start | Wait:
        """Start the ticket now (loading or evicting as needed) or say what it waits for."""
        if ticket.id not in self._waiting:
            raise ValueError(f"ticket {ticket.id} is not waiting")
        self._expire(now)
        earlier = [t for t in self._waiting.values() if t.id < ticket.id]
        res = self.resident.get(ticket.model)
        if res is not None:
            # Slots are handed out in arrival order, as Ollama's per-runner semaphore does.
            if res.active >= self.spec.num_parallel or any(t.model == ticket.model for t in earlier):
                return Wait("slot")
            return self._begin(ticket, res, loaded=False, evicted=())
        # Ollama handles loads one at a time in arrival order: a load waiting for memory holds up later ones.
        if any(t.model not in self.resident for t in earlier):
            return Wait("queue")
        return self._load(ticket, now)

    def release(self, ticket: Ticket, now: float) -> None:
        """The request finished, failed or went away (waiting or running). Unknown tickets are ignored."""
        if self._waiting.pop(ticket.id, None) is not None:
            return
        if self._running.pop(ticket.id, None) is None:
            return
        res = self.resident.get(ticket.model)
        if res is None:  # unloaded by reset() while it ran
            return
        res.active -= 1
        if res.active == 0:
            res.expires_at = now + res.keep_alive_s  # keep_alive 0 expires right here, NEVER stays NEVER
            self._expire(now)

    # -- knobs --------------------------------------------------------------------------------------------
    def set_external(self, gb: float) -> None:
        self.external_gb = max(0.0, gb)

    def reset(self) -> None:
        """Unload everything and zero counters. Waiting tickets stay queued; running ones are forgotten."""
        self.resident.clear()
        self._running.clear()
        self.counters = Counters()
        self.external_gb = 0.0

    def loaded(self, now: float) -> list[Resident]:
        """Resident models after unloading the expired ones, in load order (what /api/ps lists)."""
        self._expire(now)
        return list(self.resident.values())

    def snapshot(self, now: float) -> dict[str, Any]:
        self._expire(now)
        waiting: dict[str, int] = {}
        for t in self._waiting.values():
            waiting[t.model] = waiting.get(t.model, 0) + 1
        return {
            "host_id": self.spec.host_id,
            "gpu_memory_gb": self.spec.gpu_memory_gb,
            "external_gb": self.external_gb,
            "memory_in_use_gb": round(self.in_use_gb, 6),
            "free_gb": round(self.free_gb, 6),
            "num_parallel": self.spec.num_parallel,
            "max_loaded_models": self.spec.max_loaded_models,
            "resident": [
                {
                    "model": r.model.name,
                    "size_gb": r.model.size_gb,
                    "vram_gb": r.vram_gb,
                    "active": r.active,
                    "waiting": waiting.get(r.model.name, 0),
                    "loading": r.ready_at > now,
                    "spilled": r.spilled,
                    "expires_in_s": None if r.expires_in(now) == NEVER else round(r.expires_in(now), 3),
                }
                for r in self.resident.values()
            ],
            "waiting": waiting,
            "in_flight": self.in_flight,
            "counters": self.counters.as_dict(),
        }

    # -- internals ----------------------------------------------------------------------------------------
    def _begin(self, ticket: Ticket, res: Resident, *, loaded: bool, evicted: tuple[str, ...]) -> Start:
        del self._waiting[ticket.id]
        self._running[ticket.id] = ticket
        res.active += 1
        res.keep_alive_s = ticket.keep_alive_s
        res.expires_at = NEVER
        speed = SPILL_SPEED_FACTOR if res.spilled else 1.0
        return Start(ready_at=res.ready_at, loaded=loaded, evicted=evicted, speed_factor=speed)

    def _load(self, ticket: Ticket, now: float) -> Start | Wait:
        model = self.spec.model(ticket.model)
        assert model is not None  # submit() checked
        idle = sorted((r for r in self.resident.values() if r.active == 0), key=lambda r: r.expires_at)
        victims: list[Resident] = []

        def fits() -> bool:
            freed = sum(v.vram_gb for v in victims)
            room = model.size_gb <= self.free_gb + freed + _EPS
            return room and len(self.resident) - len(victims) < self.spec.max_loaded_models

        for r in idle:
            if fits():
                break
            victims.append(r)
        spilled = False
        if not fits():
            if len(victims) < len(self.resident):
                # Busy models hold the memory or the model slots: wait for one to finish. Evicting idle ones
                # now would not be enough, so they stay loaded for whoever wants them meanwhile.
                roomy = model.size_gb <= self.free_gb + sum(v.vram_gb for v in victims) + _EPS
                return Wait("max_loaded" if roomy else "memory")
            spilled = True  # nothing left to evict or wait for: load partly on the GPU
        for v in victims:
            del self.resident[v.model.name]
            self.counters.evictions += 1
        vram = model.size_gb if not spilled else max(0.0, min(model.size_gb, self.free_gb))
        res = Resident(
            model=model,
            vram_gb=vram,
            ready_at=now + model.load_s * self.time_scale,
            keep_alive_s=ticket.keep_alive_s,
            spilled=spilled,
        )
        self.resident[model.name] = res
        self.counters.loads += 1
        self.counters.spills += int(spilled)
        return self._begin(ticket, res, loaded=True, evicted=tuple(v.model.name for v in victims))

    def _expire(self, now: float) -> None:
        for name, r in list(self.resident.items()):
            if r.active == 0 and r.expires_at <= now:
                del self.resident[name]
                self.counters.unloads += 1
