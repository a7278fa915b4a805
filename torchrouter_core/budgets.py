"""Time budgets per tier: how long one attempt may take to connect, to send its first byte, and in all.

A hung host must fail over in seconds, not after LiteLLM's 300 s default; a cold Ollama load must still
be allowed to finish. The numbers (seconds), and why:

======  =======  ==========  ===============  =====  ======================================================
tier    connect  first byte  first byte cold  total  why
======  =======  ==========  ===============  =====  ======================================================
H       2        15          120              300    long answers (reasoning), the biggest models to load
R       2        8           60               120    short chat on small models: a stall is a failure fast
C       2        15          120              300    code answers are long; code models are mid-sized
======  =======  ==========  ===============  =====  ======================================================

- **connect** 2 s: every host is on the local network or a cloud endpoint; a SYN unanswered for 2 s is a
  dead or black-holed host (a lost SYN is first resent after 1 s by Linux, RFC 6298's initial RTO, so 2 s
  allows one resend). Applied on its own to every attempt (:mod:`litellm_hooks.connect_budget`: LiteLLM's
  HTTP client with the connect timeout lowered for Ollama, an ``httpx.Timeout`` for the OpenAI SDK), so a
  host that drops packets is given up on after this, not after the first-byte budget (a request written
  into a connection kept alive from before: the Ollama client's ``TCP_USER_TIMEOUT``, the same number). A
  refused connection fails at once either way.
- **first byte** (warm): a resident model starts answering in well under a second on our fleet (the
  simulated fleet's warm TTFT is about 0.2 s); 8-15 s is two orders of magnitude of headroom for a
  queue on the host, while a hung host is given up on within that. It is also the longest silence
  allowed between two chunks of a stream (httpx's read timeout), so a stream that stalls midway fails
  the same way.
- **first byte cold**: a cold load is 2 s + 0.4 s per GB on the fleet (README, "Try it"): about 10 s for
  a 20 GB model, 40 s for the largest; 60/120 s covers them with margin.
- **total**: the classifier's whole-request limit for the tier (one request, every hop included).
- **an attempt expected to take longer**: a prompt of tens of thousands of tokens takes tens of seconds to
  evaluate before its first token, and a line on the host adds to it; cutting such an attempt at the tier's
  first-byte budget fails a healthy deployment (and charges its breaker), then the next one. An attempt's
  first-byte budget is therefore the tier's or :data:`EXPECTED_TTFT_FACTOR` times the ranker's expected
  time to first token, whichever is longer, and never more than the tier's total
  (:meth:`TimeBudget.first_byte_for`).

``TORCHROUTER_TIME_BUDGETS`` overrides any of them: ``R.first_byte_s=1.5,H.total_s=60``
(:func:`parse_time_budgets`; each more than 0 and at most a day).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from torchrouter_core.env import finite_float

# The ranker's TTFT estimates of picks that waited came within 0.76-1.57x of the real ones (quartiles,
# BENCHMARKS.md, "Seeds, repeated runs ..."): twice the estimate is an attempt running late, not a queue.
EXPECTED_TTFT_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class TimeBudget:
    """Seconds. ``first_byte_cold_s`` applies when the picked deployment's model is not resident."""

    connect_s: float
    first_byte_s: float
    first_byte_cold_s: float
    total_s: float

    def first_byte(self, cold: bool) -> float:
        return self.first_byte_cold_s if cold else self.first_byte_s

    def first_byte_for(self, cold: bool, expected_ttft_s: float | None) -> float:
        """One attempt's first-byte budget (s): :meth:`first_byte`, or :data:`EXPECTED_TTFT_FACTOR` x
        ``expected_ttft_s`` (the ranker's estimate for the pick; None, not finite or not positive: none)
        when that is longer, at most ``total_s``."""
        base = self.first_byte(cold)
        if expected_ttft_s is None or not 0 < expected_ttft_s < float("inf"):
            return base
        return max(base, min(EXPECTED_TTFT_FACTOR * expected_ttft_s, self.total_s))


DEFAULT_BUDGETS: Mapping[str, TimeBudget] = {
    "H": TimeBudget(2.0, 15.0, 120.0, 300.0),
    "R": TimeBudget(2.0, 8.0, 60.0, 120.0),
    "C": TimeBudget(2.0, 15.0, 120.0, 300.0),
}
_FIELDS = frozenset(f.name for f in fields(TimeBudget))
# One day: no attempt or request is meant to wait longer, and the socket option that carries the connect
# budget (TCP_USER_TIMEOUT, milliseconds in a C int) cannot hold much more than 24 days.
MAX_BUDGET_S = 86_400.0


def budget_for(budgets: Mapping[str, TimeBudget], tier: str | None) -> TimeBudget:
    """The tier's budget; an unknown or missing tier gets H's (the most generous)."""
    return budgets.get(tier or "H") or budgets["H"]


def parse_time_budgets(text: str, base: Mapping[str, TimeBudget] = DEFAULT_BUDGETS) -> dict[str, TimeBudget]:
    """``"R.first_byte_s=1.5,H.total_s=60"`` applied over ``base``; raises ValueError naming the bad part."""
    out = dict(base)
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        tier, dot, field_name = name.strip().partition(".")
        seconds = finite_float(value)
        if (
            not sep
            or not dot
            or tier not in out
            or field_name not in _FIELDS
            or not 0 < (seconds or 0) <= MAX_BUDGET_S
        ):
            raise ValueError(
                f"time budget {part!r}: expected <H|R|C>.<{'|'.join(sorted(_FIELDS))}>="
                f"<seconds, more than 0 and at most {MAX_BUDGET_S:g}>"
            )
        assert seconds is not None
        if name.strip() in seen:
            raise ValueError(f"time budget {name.strip()!r} is given twice; give each budget once")
        seen.add(name.strip())
        out[tier] = replace(out[tier], **{field_name: seconds})
    return out
