"""The fleet benchmark's workload: requests whose mix shifts between chat, code and long prompts, in bursts.

Pure and seeded: :func:`workload` gives the same list of :class:`Request` for the same seed, so every router
sees exactly the same arrivals. Times are seconds of simulated time (the benchmark multiplies them by its
time scale). :func:`lower_bound_s` is a request served warm on an idle slot by the fastest deployment of
its group, at the simulated Ollama's own pace (``torchrouter.sim``: prompt at ``PROMPT_SPEEDUP`` times the
generation speed, then ``max_tokens`` tokens, since a simulated model given a budget always uses all of it).

The shape, and why:

- **Three kinds**, one per local lane, sized like agent traffic on Ollama: ``chat`` (short prompt, a
  paragraph of answer, on ``fast-chat``), ``code`` (a file or two of context, a function or a diff back, on
  ``code``) and ``long`` (a document of 4-12 k tokens summarised or questioned, on ``balanced``). Service
  times on an idle slot are about 1-4 s, 5-13 s and 3-9 s: long enough that LiteLLM's own few tens of
  milliseconds per request stay small at the benchmark's time scale.
- **Six phases** whose mix shifts (chat-heavy, code-heavy, long-heavy, mixed, code and long, chat-heavy
  again): the models a phase wants do not all fit on the fleet at once, so a router must move them, and a
  router that loaded for the last phase pays for it in the next.
- **Background arrivals** (Poisson) of the phase's mix, plus **bursts** of the phase's leading kind (an agent
  fanning out: 6-14 requests within ``BURST_SPREAD_S``), which need more slots than one copy of a model has.
- **Enough requests** (about 350) that the loads a good router cannot avoid (the first copy of each model,
  a copy more when a burst needs it) touch well under 5% of them, so p95 measures routing, not the start.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchrouter.sim.ollama_app import PROMPT_SPEEDUP

BURST_SPREAD_S = 2.0  # a burst's requests arrive within this many seconds (an agent's fan-out, not one tick)
_FILLER = "the quick brown fox jumps over the lazy dog while the router keeps every model warm "


@dataclass(frozen=True)
class Kind:
    name: str
    group: str  # the LiteLLM model group (the lane) it is sent to
    prompt_tokens: tuple[int, int]  # uniform range, as the simulated Ollama counts them
    max_tokens: tuple[int, int]


KINDS: dict[str, Kind] = {
    "chat": Kind("chat", "fast-chat", (80, 600), (120, 400)),
    "code": Kind("code", "code", (600, 3000), (150, 450)),
    "long": Kind("long", "balanced", (4000, 12000), (100, 300)),
}


@dataclass(frozen=True)
class Phase:
    name: str
    duration_s: float
    mix: Mapping[str, float]  # kind -> share of the background arrivals
    rate_per_s: float  # background arrivals per second
    bursts: int  # bursts of the leading kind, at random times in the phase
    burst_size: tuple[int, int]

    @property
    def leading(self) -> str:
        return max(self.mix, key=lambda k: self.mix[k])


PHASES: tuple[Phase, ...] = (
    Phase("chat", 180, {"chat": 0.75, "code": 0.15, "long": 0.10}, 0.35, 3, (6, 10)),
    Phase("code", 180, {"chat": 0.20, "code": 0.65, "long": 0.15}, 0.35, 3, (4, 6)),
    Phase("long", 180, {"chat": 0.20, "code": 0.15, "long": 0.65}, 0.35, 3, (3, 4)),
    Phase("mixed", 180, {"chat": 0.40, "code": 0.30, "long": 0.30}, 0.45, 2, (4, 7)),
    Phase("code+long", 180, {"chat": 0.10, "code": 0.45, "long": 0.45}, 0.35, 3, (3, 5)),
    Phase("chat again", 180, {"chat": 0.70, "code": 0.15, "long": 0.15}, 0.35, 3, (6, 10)),
)


@dataclass(frozen=True)
class Request:
    index: int
    at: float  # arrival, seconds of simulated time from the start
    phase: str
    kind: str
    group: str
    prompt_tokens: int
    max_tokens: int
    burst: bool

    @property
    def label(self) -> str:
        """How the request names itself at the start of its prompt (the simulated hosts' history keeps it)."""
        return f"req-{self.index:04d}"

    def prompt(self) -> str:
        """A user message the simulated Ollama counts as exactly ``prompt_tokens`` tokens (4 + chars / 4)."""
        head = f"{self.label} {self.kind}: "
        chars = 4 * (self.prompt_tokens - 4)
        body = (_FILLER * (chars // len(_FILLER) + 1))[: max(0, chars - len(head))]
        return head + body


def workload(seed: int, phases: Sequence[Phase] = PHASES) -> list[Request]:
    """The requests of all phases in arrival order, the same for the same seed."""
    rng = random.Random(seed)
    drafts: list[tuple[float, str, str, bool]] = []  # at, phase, kind, burst
    start = 0.0
    for phase in phases:
        t = start + rng.expovariate(phase.rate_per_s)
        kinds, weights = list(phase.mix), list(phase.mix.values())
        while t < start + phase.duration_s:
            drafts.append((t, phase.name, rng.choices(kinds, weights)[0], False))
            t += rng.expovariate(phase.rate_per_s)
        for _ in range(phase.bursts):
            at = start + rng.uniform(0.05, 0.9) * phase.duration_s
            for _ in range(rng.randint(*phase.burst_size)):
                drafts.append((at + rng.uniform(0.0, BURST_SPREAD_S), phase.name, phase.leading, True))
        start += phase.duration_s
    drafts.sort(key=lambda d: d[0])
    out = []
    for i, (at, phase_name, kind_name, burst) in enumerate(drafts):
        kind = KINDS[kind_name]
        out.append(
            Request(
                index=i,
                at=round(at, 3),
                phase=phase_name,
                kind=kind_name,
                group=kind.group,
                prompt_tokens=rng.randint(*kind.prompt_tokens),
                max_tokens=rng.randint(*kind.max_tokens),
                burst=burst,
            )
        )
    return out


def tokens_per_s(profile: Mapping[str, Any]) -> float:
    """The simulated Ollama's generation speed for a matrix profile (``torchrouter.sim.spec``)."""
    return 20.0 + 130.0 * float(profile.get("speed_score", 0.5))


def service_s(profile: Mapping[str, Any], prompt_tokens: int, max_tokens: int) -> float:
    """Seconds on an idle, warm slot of ``profile``: prompt processing, then ``max_tokens`` tokens."""
    tps = tokens_per_s(profile)
    return prompt_tokens / (tps * PROMPT_SPEEDUP) + max_tokens / tps


def lower_bound_s(matrix: Mapping[str, Any], request: Request) -> float:
    """The request served warm on an idle slot by the fastest local deployment of its group."""
    return min(
        service_s(p, request.prompt_tokens, request.max_tokens)
        for p in matrix["profiles"].values()
        if p["lane"] == request.group and p["provider"] == "ollama"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
