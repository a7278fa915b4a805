"""Reading the trail back: its published schema, and one request's story (pure: events in, text out).

- :func:`schema` -- the JSON Schema every event conforms to (``event_schemas/events.schema.json``, one
  definition per :class:`~torchrouter_core.events.EventKind`); :func:`problems` checks events against it
  (the test suite checks every event it writes).
- :func:`story` -- everything the trail says about one request, in order, as one JSON-able dict
  (``torchrouter explain REQUEST_ID --json``); :func:`render` words it for a person (``torchrouter
  explain``); :func:`last_request_id` is the newest request in the file (``--last``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent / "event_schemas" / "events.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


def problems(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per schema violation: ``<line number> <kind>: <where>: <message>`` (empty: all valid)."""
    out: list[str] = []
    validator = _validator()
    for n, event in enumerate(events, 1):
        for error in validator.iter_errors(dict(event)):
            where = "/".join(str(p) for p in error.absolute_path) or "(event)"
            out.append(f"{n} {event.get('event')}: {where}: {error.message}")
    return out


_STARTS = frozenset({"request_classified", "request_completed", "queue_rejected"})


def last_request_id(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest request in the trail: of the newest ``request_classified`` event, or of a request refused
    before it was classified (a bad body: only its ``request_completed``; a cloud lockout: its
    ``queue_rejected``), whichever came last. None: the trail has no request."""
    for event in reversed(events):
        request_id = event.get("request_id")
        if event.get("event") in _STARTS and isinstance(request_id, str) and request_id:
            return request_id
    return None


def story(events: Iterable[Mapping[str, Any]], request_id: str) -> dict[str, Any]:
    """Everything about ``request_id``, in trail order. Keys: ``request_id``, ``found`` (any event at
    all), ``classified`` (tier and why, ladder), ``ladder_steps``, ``attempts`` (one per routing step in
    LiteLLM: group, pick, warm state, scores, rejected candidates and why, reservation when recorded),
    ``failures`` (attempts that failed, and how), ``breakers`` (breaker changes this request caused),
    ``breakers_met`` (candidates a breaker refused), ``prewarms`` (loads of one more copy this request's
    pick set off, :mod:`torchrouter_core.prewarm`), ``fallbacks``, ``rejected`` (a queue refusal),
    ``completed`` (outcome, status, deployment, timings, queue wait against its estimate); milliseconds
    as recorded."""
    mine = [dict(e) for e in events if e.get("request_id") == request_id]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in mine:
        by_kind.setdefault(str(event.get("event")), []).append(event)

    def first(kind: str) -> dict[str, Any] | None:
        found = by_kind.get(kind)
        return found[0] if found else None

    attempts = [
        {
            "group": e.get("group"),
            "outcome": e.get("outcome"),
            "deployment": e.get("deployment"),
            "warm_state": e.get("warm_state"),
            "scores": e.get("scores") or {},
            "rejected": e.get("rejected") or {},
            "reservation": e.get("reservation"),
            "score_ms": e.get("score_ms"),
        }
        for e in by_kind.get("route_selected", [])
    ]
    met = sorted(
        {
            (key, str(why))
            for e in by_kind.get("route_selected", [])
            for key, why in (e.get("rejected") or {}).items()
            if "breaker" in str(why)
        }
    )
    return {
        "request_id": request_id,
        "found": bool(mine),
        "classified": first("request_classified"),
        "ladder_steps": by_kind.get("degradation_ladder_step", []),
        "attempts": attempts,
        "failures": by_kind.get("attempt_failed", []),
        "breakers": by_kind.get("breaker_changed", []),
        "breakers_met": [{"deployment": k, "why": why} for k, why in met],
        "prewarms": by_kind.get("prewarm", []),
        "fallbacks": by_kind.get("fallback_selected", []),
        "rejected": first("queue_rejected"),
        "completed": first("request_completed"),
    }


def _ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "n/a"


def render(s: Mapping[str, Any]) -> str:
    """The story as lines for a person."""
    rid = s["request_id"]
    if not s["found"]:
        return f"request {rid}: not in the trail"
    lines = [f"request {rid}"]
    c = s["classified"]
    if c:
        signals = ", ".join(c.get("signals") or []) or "none"
        lines.append(
            f"  tier {c.get('tier')} ({c.get('tier_source')}; signals: {signals}); agent "
            f"{c.get('agent_id') or 'unknown'} ({c.get('identity_source')})"
        )
        lines.append(
            f"  ladder: {' -> '.join(c.get('ladder') or [])}" + ("  [canary]" if c.get("canary") else "")
        )
    for step in s["ladder_steps"]:
        if step.get("step") == "wait":
            lines.append(
                f"  ladder step: wait for {step.get('from_group')} ({step.get('reason')}: "
                f"{step.get('busy')} of {step.get('slots')} slots busy, {step.get('ahead')} ahead; "
                f"estimated wait {_ms(step.get('estimated_wait_ms'))}, "
                f"budget {_ms(step.get('wait_budget_ms'))})"
            )
            continue
        lines.append(
            f"  ladder step: {step.get('from_group')} -> {step.get('to_group') or '(none left)'} "
            f"({step.get('reason')}; estimated wait {_ms(step.get('estimated_wait_ms'))})"
        )
    done = s["completed"]
    if done and done.get("group") is not None:  # routed: it had a lane to wait for
        lines.append(
            f"  queue: waited {_ms(done.get('queue_ms'))} against an estimate of "
            f"{_ms(done.get('estimated_wait_ms'))} in {done.get('group')}"
        )
    failed = {f.get("deployment"): f for f in s.get("failures", [])}
    for n, a in enumerate(s["attempts"], 1):
        pick = a["deployment"] or "nothing (every candidate refused)"
        lines.append(f"  attempt {n} in {a['group']}: {pick} ({a.get('warm_state') or a['outcome']})")
        for key, score in sorted(a["scores"].items(), key=lambda kv: -float(kv[1])):
            lines.append(f"      candidate {key}: score {float(score):.3f}")
        for key, why in sorted(a["rejected"].items()):
            lines.append(f"      rejected {key}: {why}")
        if a.get("reservation"):
            lines.append(f"      reservation: {json.dumps(a['reservation'], sort_keys=True)}")
        if a["deployment"] and a["deployment"] in failed:
            f = failed.pop(a["deployment"])
            lines.append(f"      failed: {f.get('failure') or 'status ' + str(f.get('status'))}")
    for met in s["breakers_met"]:
        lines.append(f"  breaker met: {met['deployment']} ({met['why']})")
    for b in s["breakers"]:
        lines.append(
            f"  breaker {b.get('scope')} {b.get('target')}: {b.get('from_state')} -> {b.get('to_state')} "
            f"({b.get('reason')})"
        )
    for p in s.get("prewarms", []):
        how = {"loaded": f"loaded in {_ms(p.get('load_ms'))}", "failed": f"failed: {p.get('error')}"}
        lines.append(
            f"  prewarm of {p.get('deployment')}: {how.get(str(p.get('outcome')), 'started')} "
            f"({p.get('demand')} in flight on {p.get('slots')} resident slots of {p.get('group')})"
        )
        if p.get("outcome") == "started" and p.get("reservation"):
            lines.append(f"      reservation: {json.dumps(p['reservation'], sort_keys=True)}")
    if done and done.get("fallbacks"):
        lines.append(f"  failure chain: {' -> '.join(done['fallbacks'])}")
    for f in s["fallbacks"]:
        planned = "planned" if f.get("planned") else "not planned"
        hop = f"hop {f['hop']}, " if f.get("hop") else ""
        why = f", after {f['reason']}" if f.get("reason") else ""
        lines.append(f"  fallback: {f.get('from_group')} -> {f.get('to_group')} ({hop}{planned}{why})")
    if s["rejected"]:
        r = s["rejected"]
        lines.append(
            f"  rejected: {r.get('status')} ({r.get('message')}; retry after {r.get('retry_after_s')} s)"
        )
    if done:
        deployment = done.get("deployment")
        answered = (
            f" from {deployment}" if deployment and deployment != "none" else " (no deployment answered)"
        )
        error = "".join(f", {k} {done[k]}" for k in ("code", "param") if done.get(k) is not None)
        fallback = done.get("fallback")
        lines.append(
            f"  outcome: {done.get('outcome')} (status {done.get('status')}{error}){answered}"
            + (f"; fallback {fallback}" if fallback and fallback != "none" else "")
        )
        lines.append(f"  timings: total {_ms(done.get('total_ms'))}, first token {_ms(done.get('ttft_ms'))}")
    else:
        lines.append("  outcome: not recorded (still running, or the process stopped)")
    return "\n".join(lines)
