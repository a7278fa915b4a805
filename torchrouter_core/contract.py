"""The one contract between the classifier and the hooks inside LiteLLM: typed, versioned, in headers.

The classifier sends a :class:`RouteRequest` as request headers on what it forwards; the hooks answer
with a :class:`RouteReport` as response headers (errors included). Each type encodes and decodes itself,
and both sides use these functions, so a header name or format lives here only. The README's
"Protocol" section is the written form of this module (every header, its format, MUST/CAN per side).

Version history (``x-torchrouter-protocol``):

- 1: request id, agent, tier, group, request needs, route plan; deployment, warm state, score time,
  auth lockouts, daily spend, hook errors; LiteLLM's ``x-litellm-attempted-fallbacks`` read as the
  fallback count. Added compatibly (a peer without it reads as "not reported"): the profiles the
  hooks' circuit breakers refuse (``x-torchrouter-breakers``); the group of each of the request's
  attempts, in order (``x-torchrouter-groups``: the failure fallbacks' path, which LiteLLM's count does
  not give when a hop's own fallback walk carried the request on). The stream report: when LiteLLM
  continued a stream from its fallback before the first chunk (after the response headers were made),
  the stream opens with one SSE comment carrying the whole report again (:func:`encode_stream_report`).

Decoding never raises: a missing value is ``None`` (or the stated default), a malformed one is logged in
one line naming the header and treated as missing, and a peer speaking another version is logged (the
fields this version knows are still read). Header names are lower-case: LiteLLM lower-cases request
headers, and the classifier reads responses through a case-insensitive mapping.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from capability_matrix.model import WarmState
from torchrouter_core.needs import TEXT_ONLY
from torchrouter_core.ranker.interfaces import RequestNeeds

log = logging.getLogger("torchrouter.contract")

PROTOCOL_VERSION = 1
_VERSION_TEXT = str(PROTOCOL_VERSION)

# Both directions.
VERSION_HEADER = "x-torchrouter-protocol"
# Classifier -> hooks (request headers).
REQUEST_ID_HEADER = "x-torchrouter-request-id"
AGENT_HEADER = "x-torchrouter-agent-id"
TIER_HEADER = "x-torchrouter-tier"
GROUP_HEADER = "x-torchrouter-group"
NEEDS_HEADER = "x-torchrouter-needs"
ROUTE_HEADER = "x-torchrouter-route"
HOPS_HEADER = "x-torchrouter-hops"
# Hooks -> classifier (response headers).
DEPLOYMENT_HEADER = "x-torchrouter-deployment"
WARM_STATE_HEADER = "x-torchrouter-warm-state"
SCORE_MS_HEADER = "x-torchrouter-score-ms"
AUTH_LOCKOUTS_HEADER = "x-torchrouter-auth-lockouts"
DAILY_SPEND_HEADER = "x-torchrouter-daily-spend-usd"
HOOK_ERRORS_HEADER = "x-torchrouter-hook-errors"
NO_CANDIDATE_HEADER = "x-torchrouter-no-candidate"
LEDGER_HEADER = "x-torchrouter-ledger"
BREAKERS_HEADER = "x-torchrouter-breakers"
GROUPS_HEADER = "x-torchrouter-groups"
DEGRADED_HEADER = "x-torchrouter-degraded"
OWN_HEADER = "x-torchrouter-own"
# LiteLLM's own response headers, read by the classifier.
LITELLM_MODEL_ID_HEADER = "x-litellm-model-id"
LITELLM_FALLBACKS_HEADER = "x-litellm-attempted-fallbacks"

TIERS = frozenset({"H", "R", "C"})
# Profile keys, group names, agent ids and request ids: printable ASCII without separators we use.
_TOKEN = re.compile(r"[A-Za-z0-9._:/@+-]{1,256}")
_MAX_ROUTE_STEPS = 16
_MAX_LOCKOUTS = 1024

Problem = Callable[[str, str, str], None]  # (header, shown value, why)


def log_problem(header: str, value: str, why: str) -> None:
    """The default: one warning line naming the header (values are ids and numbers, never secrets)."""
    log.warning("contract: header %s=%r %s; treated as missing", header, value[:80], why)


@dataclass(frozen=True)
class RouteRequest:
    """What the classifier decided for one request, sent to the hooks with it.

    ``tier``: ``H``, ``R`` or ``C``; ``group``: the LiteLLM group forwarded to (the first the hooks rank);
    ``route``: the request's planned groups in order (its ladder), for the hooks' fallback trail;
    ``needs``: what a deployment must offer (:mod:`torchrouter_core.needs` worked it out); ``hops``: the
    failure hops the request already took before this forward (the classifier going on down the chain
    after a stream failed before its first chunk), so the hooks number theirs on from there."""

    request_id: str
    group: str
    tier: str | None = None
    agent_id: str | None = None
    needs: RequestNeeds | None = None
    route: tuple[str, ...] = ()
    hops: int = 0

    def to_headers(self) -> dict[str, str]:
        headers = {
            VERSION_HEADER: _VERSION_TEXT,
            REQUEST_ID_HEADER: self.request_id,
            GROUP_HEADER: self.group,
        }
        if self.tier is not None:
            headers[TIER_HEADER] = self.tier
        if self.agent_id is not None:
            headers[AGENT_HEADER] = self.agent_id
        if self.needs is not None:
            headers[NEEDS_HEADER] = encode_needs(self.needs)
        if self.route:
            headers[ROUTE_HEADER] = ",".join(self.route)
        if self.hops:
            headers[HOPS_HEADER] = str(self.hops)
        return headers

    @classmethod
    def from_headers(
        cls,
        headers: Mapping[str, str],
        *,
        default_request_id: str,
        default_group: str,
        problem: Problem = log_problem,
    ) -> RouteRequest:
        """Never raises. Without a (valid) request id or group, the defaults stand in: LiteLLM's call id and
        the group it was asked for, so a request that did not come through the classifier still routes."""
        if any(h in headers for h in _OUR_REQUEST_HEADERS):
            _check_version(headers, problem)  # a request that bypassed the classifier carries none of ours
        return cls(
            request_id=_token(headers, REQUEST_ID_HEADER, problem) or default_request_id,
            group=_token(headers, GROUP_HEADER, problem) or default_group,
            tier=_choice(headers, TIER_HEADER, TIERS, problem),
            agent_id=_token(headers, AGENT_HEADER, problem),
            needs=_needs(headers, problem),
            route=_token_list(headers, ROUTE_HEADER, _MAX_ROUTE_STEPS, problem),
            hops=min(_count(headers, HOPS_HEADER, problem) or 0, _MAX_ROUTE_STEPS),
        )


class HostReport(NamedTuple):
    """One host in the ``x-torchrouter-ledger`` header: GB reserved (the ledger's counting rule), live
    leases, distinct models those are for (pending loads), and requests in flight there."""

    reserved_gb: float
    leases: int
    pending_models: int
    in_flight: int


@dataclass(frozen=True)
class RouteReport:
    """What the hooks report back on a response (``None``: not reported).

    ``deployment``: the profile key that answered; ``warm_state``: its state when it was picked;
    ``score_ms``: time spent ranking; ``fallbacks``: LiteLLM's count of failure fallbacks taken (its
    ``x-litellm-attempted-fallbacks``; 0 when absent); ``auth_lockouts``: every profile key the hooks hold
    locked out for a 401/403, the whole set each time; ``daily_spend_usd``: today's (UTC) cloud spend as
    the hooks total it, the one book of spend; ``hook_errors``: exceptions the hooks caught since LiteLLM
    started; ``no_candidate``: when the hooks filtered out every deployment of the group, the distinct
    reasons (``context_window``, ``lockout:auth``, ``modality:image``...), which tell the classifier whether
    LiteLLM's 429 "No deployments available" is "never" (400) or "not now" (503); ``ledger``: the VRAM
    ledger and load as the hooks see them, host id -> :class:`HostReport`, every host with a lease or a
    request in flight (empty: nothing anywhere); ``breakers``: every profile key the hooks' circuit breakers
    refuse now (open, or half-open with its trials taken; the host's breaker included), the whole set each
    time; ``groups``: the group of each attempt the hooks routed for this request, in order (a failure
    fallback adds one; empty: not reported); ``degraded``: the shared backends failing now, each
    ``kind:ExceptionClass`` (``vram_ledger_reserve:ConnectionError``, ``spend_book:...``; empty, written
    ``none``: all answer; ``None``: not reported); ``own``: this request's own part of ``ledger`` (its leases,
    held or settling, and its attempts in flight; same format), which the classifier takes off its mirror
    when the request's relay ends."""

    deployment: str | None = None
    warm_state: WarmState | None = None
    score_ms: float | None = None
    fallbacks: int = 0
    auth_lockouts: frozenset[str] | None = None
    daily_spend_usd: float | None = None
    hook_errors: int | None = None
    no_candidate: str | None = None
    ledger: Mapping[str, HostReport] | None = None
    breakers: frozenset[str] | None = None
    groups: tuple[str, ...] = ()
    degraded: tuple[str, ...] | None = None
    own: Mapping[str, HostReport] | None = None

    def to_headers(self) -> dict[str, str]:
        """The hooks' headers (``fallbacks`` is LiteLLM's own header and is not written here)."""
        headers = {VERSION_HEADER: _VERSION_TEXT}
        if self.deployment is not None:
            headers[DEPLOYMENT_HEADER] = self.deployment
        if self.warm_state is not None:
            headers[WARM_STATE_HEADER] = self.warm_state.value
        if self.score_ms is not None:
            headers[SCORE_MS_HEADER] = f"{self.score_ms:.3f}"
        if self.auth_lockouts is not None:
            headers[AUTH_LOCKOUTS_HEADER] = ",".join(sorted(self.auth_lockouts))
        if self.daily_spend_usd is not None:
            headers[DAILY_SPEND_HEADER] = f"{self.daily_spend_usd:.8f}"
        if self.hook_errors is not None:
            headers[HOOK_ERRORS_HEADER] = str(self.hook_errors)
        if self.no_candidate:
            headers[NO_CANDIDATE_HEADER] = self.no_candidate
        if self.ledger is not None:
            headers[LEDGER_HEADER] = encode_ledger(self.ledger)
        if self.breakers is not None:
            headers[BREAKERS_HEADER] = ",".join(sorted(self.breakers))
        if self.groups:
            headers[GROUPS_HEADER] = ",".join(self.groups[:_MAX_GROUPS])
        if self.degraded is not None:  # "none": every backend answers (an empty header may be dropped)
            headers[DEGRADED_HEADER] = ",".join(self.degraded[:_MAX_DEGRADED]) or "none"
        if self.own is not None:
            headers[OWN_HEADER] = encode_ledger(self.own)
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, problem: Problem = log_problem) -> RouteReport:
        """Never raises. The deployment falls back to LiteLLM's ``x-litellm-model-id`` (our deployments'
        ``model_info.id`` is the profile key) when the hooks did not name one."""
        # One lookup per name this reads (each field reader then looks in a small plain dict); a response
        # that carries none of them (one the hooks never saw) is the shared "nothing reported".
        headers = {name: value for name in _REPORT_READS if (value := headers.get(name)) is not None}
        if not headers:
            return _NOTHING_REPORTED
        if any(h in headers for h in _OUR_REPORT_HEADERS):
            _check_version(headers, problem)  # a response the hooks never saw carries none of ours
        warm = _choice(headers, WARM_STATE_HEADER, _WARM_VALUES, problem)
        return cls(
            deployment=_token(headers, DEPLOYMENT_HEADER, problem)
            or _token(headers, LITELLM_MODEL_ID_HEADER, problem),
            warm_state=WarmState(warm) if warm is not None else None,
            score_ms=_number(headers, SCORE_MS_HEADER, problem),
            fallbacks=_count(headers, LITELLM_FALLBACKS_HEADER, problem) or 0,
            auth_lockouts=_lockouts(headers, problem),
            breakers=_lockouts(headers, problem, BREAKERS_HEADER),
            daily_spend_usd=_number(headers, DAILY_SPEND_HEADER, problem),
            hook_errors=_count(headers, HOOK_ERRORS_HEADER, problem),
            no_candidate=_reasons(headers, problem),
            ledger=_ledger(headers, problem),
            groups=_token_list(headers, GROUPS_HEADER, _MAX_GROUPS, problem),
            degraded=_degraded(headers, problem),
            own=_ledger(headers, problem, OWN_HEADER),
        )


_WARM_VALUES = frozenset(s.value for s in WarmState)
_NOTHING_REPORTED = RouteReport()
_OUR_REQUEST_HEADERS = (
    REQUEST_ID_HEADER,
    GROUP_HEADER,
    TIER_HEADER,
    AGENT_HEADER,
    NEEDS_HEADER,
    ROUTE_HEADER,
    HOPS_HEADER,
)
_OUR_REPORT_HEADERS = (
    DEPLOYMENT_HEADER,
    WARM_STATE_HEADER,
    SCORE_MS_HEADER,
    AUTH_LOCKOUTS_HEADER,
    DAILY_SPEND_HEADER,
    HOOK_ERRORS_HEADER,
    NO_CANDIDATE_HEADER,
    LEDGER_HEADER,
    BREAKERS_HEADER,
    GROUPS_HEADER,
    DEGRADED_HEADER,
    OWN_HEADER,
)
# Every response header RouteReport.from_headers reads.
_REPORT_READS = (VERSION_HEADER, *_OUR_REPORT_HEADERS, LITELLM_MODEL_ID_HEADER, LITELLM_FALLBACKS_HEADER)
_MAX_GROUPS = 16  # attempts of one request: LiteLLM's fallback depth is far below this
_MAX_DEGRADED = 8  # kinds of backend failure (litellm_hooks.backend): five today


# --- the stream report: the RouteReport again, as a stream's first event ------------------------------------
# LiteLLM 1.102.4 makes a stream's response headers (ours among them) once the first attempt's provider has
# answered, then may continue the stream from its fallback group when that attempt fails before its first
# chunk (its mid-stream fallback): the headers then describe an attempt that did not answer. The hooks send
# the report of what did as an SSE comment ahead of the first chunk; the classifier reads it over the
# headers and does not relay it. A client of LiteLLM itself sees a comment line, which SSE clients skip.
STREAM_REPORT_PREFIX = b": x-torchrouter-report "
MAX_STREAM_REPORT_BYTES = 64 * 1024  # a report is well under 2 KB; a reader gives up on an event past this


def encode_stream_report(report: RouteReport) -> bytes:
    """``: x-torchrouter-report {"<header>": "<value>", ...}`` and the blank line that ends the event."""
    return STREAM_REPORT_PREFIX + orjson.dumps(report.to_headers()) + b"\n\n"


def decode_stream_report(event: bytes, *, problem: Problem = log_problem) -> dict[str, str] | None:
    """The report headers of one SSE event (its bytes, with or without the blank line that ends it); None
    when the event is not a stream report, or is one that cannot be read (logged by ``problem``)."""
    if not event.startswith(STREAM_REPORT_PREFIX):
        return None
    body = event[len(STREAM_REPORT_PREFIX) :].strip()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problem("stream report", body[:80].decode("utf-8", "replace"), "is not a JSON object of strings")
        return None
    return {k.lower(): v for k, v in value.items() if k.lower().startswith("x-torchrouter-")}


# --- request needs: "prompt_tokens=<int>;max_output_tokens=<int>;tools=<0|1>[;modalities=<m>+<m>...]" ------
_MODALITIES = frozenset({"text", "image", "audio", "file"})


def encode_needs(needs: RequestNeeds) -> str:
    encoded = (
        f"prompt_tokens={needs.prompt_tokens};max_output_tokens={needs.max_output_tokens};"
        f"tools={int(needs.needs_tools)}"
    )
    if needs.modalities != TEXT_ONLY:  # text only (almost every request) is the default: not written
        encoded += ";modalities=" + "+".join(sorted(needs.modalities))
    return encoded


def decode_needs(value: str) -> RequestNeeds:
    """Raises ValueError naming what is wrong (the header decoder turns that into a log line)."""
    fields: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, raw = part.strip().partition("=")
        if not sep:
            raise ValueError(f"expected name=value, got {part!r}")
        fields[name] = raw
    missing = {"prompt_tokens", "max_output_tokens", "tools"} - fields.keys()
    if missing:
        raise ValueError(f"missing {', '.join(sorted(missing))}")
    prompt, output, tools = fields["prompt_tokens"], fields["max_output_tokens"], fields["tools"]
    digits = prompt + output
    if not (digits.isascii() and prompt.isdigit() and output.isdigit() and len(prompt) <= 12 >= len(output)):
        raise ValueError("token counts must be non-negative integers")
    if tools not in ("0", "1"):
        raise ValueError("tools must be 0 or 1")
    modalities = frozenset(fields.get("modalities", "text").split("+")) | TEXT_ONLY
    if not modalities <= _MODALITIES:
        raise ValueError(f"modalities must be among {sorted(_MODALITIES)}")
    return RequestNeeds(
        prompt_tokens=int(prompt),
        max_output_tokens=int(output),
        needs_tools=tools == "1",
        modalities=modalities,
    )


# --- tolerant field readers ------------------------------------------------------------------------------
def _check_version(headers: Mapping[str, str], problem: Problem) -> None:
    raw = headers.get(VERSION_HEADER)
    if raw is None:
        problem(VERSION_HEADER, "", f"is missing (this side speaks {PROTOCOL_VERSION}); reading as version 1")
    elif raw.strip() != str(PROTOCOL_VERSION):
        problem(VERSION_HEADER, raw, f"is not version {PROTOCOL_VERSION}; reading the fields version 1 knows")


def _token(headers: Mapping[str, str], name: str, problem: Problem) -> str | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    if _TOKEN.fullmatch(raw) is None:
        problem(name, raw, "is not an id (letters, digits, . _ : / @ + -, at most 256)")
        return None
    return raw


def _choice(headers: Mapping[str, str], name: str, allowed: Collection[str], problem: Problem) -> str | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        problem(name, raw, f"is not one of {sorted(allowed)}")
        return None
    return raw


def _token_list(headers: Mapping[str, str], name: str, limit: int, problem: Problem) -> tuple[str, ...]:
    raw = headers.get(name)
    if not raw:
        return ()
    items = raw.split(",")
    if len(items) > limit or any(_TOKEN.fullmatch(item) is None for item in items):
        problem(name, raw, f"is not a comma-separated list of at most {limit} ids")
        return ()
    return tuple(items)


def _degraded(headers: Mapping[str, str], problem: Problem) -> tuple[str, ...] | None:
    if headers.get(DEGRADED_HEADER) == "none":
        return ()
    if DEGRADED_HEADER not in headers:
        return None
    return _token_list(headers, DEGRADED_HEADER, _MAX_DEGRADED, problem)


def _lockouts(
    headers: Mapping[str, str], problem: Problem, name: str = AUTH_LOCKOUTS_HEADER
) -> frozenset[str] | None:
    raw = headers.get(name)
    if raw is None:
        return None
    if raw == "":
        return frozenset()  # reported, and empty: nothing is locked out
    keys = _token_list(headers, name, _MAX_LOCKOUTS, problem)
    return frozenset(keys) if keys else None


_MAX_LEDGER_HOSTS = 256


def encode_ledger(ledger: Mapping[str, HostReport]) -> str:
    """``{"h1": HostReport(6.5, 2, 1, 3)}`` -> ``"h1=6.500:2:1:3"`` (comma-separated, sorted by host;
    empty: nothing reserved or in flight anywhere)."""
    return ",".join(
        f"{host}={r.reserved_gb:.3f}:{r.leases}:{r.pending_models}:{r.in_flight}"
        for host, r in sorted(ledger.items())
    )


def _ledger(
    headers: Mapping[str, str], problem: Problem, name: str = LEDGER_HEADER
) -> dict[str, HostReport] | None:
    raw = headers.get(name)
    if raw is None:
        return None
    out: dict[str, HostReport] = {}
    for part in filter(None, raw.split(",")[:_MAX_LEDGER_HOSTS]):
        host, _, rest = part.partition("=")
        fields = rest.split(":")
        try:
            gb, counts = float(fields[0]), [int(f) for f in fields[1:]]
        except (ValueError, IndexError):
            gb, counts = math.nan, []
        if (
            not _TOKEN.fullmatch(host)
            or not math.isfinite(gb)
            or gb < 0
            or len(counts) != 3
            or min(counts) < 0
        ):
            problem(name, raw, "is not <host>=<GB>:<leases>:<pending models>:<in flight>[,...]")
            return None
        out[host] = HostReport(gb, *counts)
    return out


def _number(headers: Mapping[str, str], name: str, problem: Problem) -> float | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        problem(name, raw, "is not a finite non-negative number")
        return None
    return value


def _count(headers: Mapping[str, str], name: str, problem: Problem) -> int | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        problem(name, raw, "is not a non-negative integer")
        return None
    return int(raw)


_REASONS = re.compile(r"[a-z_]+(:[a-z_]+)?(,[a-z_]+(:[a-z_]+)?){0,31}")


def _reasons(headers: Mapping[str, str], problem: Problem) -> str | None:
    raw = headers.get(NO_CANDIDATE_HEADER)
    if not raw:
        return None
    if _REASONS.fullmatch(raw) is None:
        problem(NO_CANDIDATE_HEADER, raw, "is not a comma-separated list of filter reasons")
        return None
    return raw


def _needs(headers: Mapping[str, str], problem: Problem) -> RequestNeeds | None:
    raw = headers.get(NEEDS_HEADER)
    if not raw:
        return None
    try:
        return decode_needs(raw)
    except ValueError as exc:
        problem(NEEDS_HEADER, raw, f"is malformed ({exc})")
        return None
