"""The JSONL continuity trail: one JSON object per line, appended whole.

Both processes (the classifier and the hooks inside LiteLLM) append to the same file, named by
``TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH``. Lines are written with ``os.write`` on a descriptor
opened with ``O_APPEND``: the kernel moves the offset and writes the bytes under the inode lock, so
concurrent writers (threads or processes) never tear or interleave a line on a local filesystem.
Inside a running event loop the lines of one loop iteration are gathered and written with one call
at the end of it (one syscall instead of one per event, under load); elsewhere each is written at once.

Every event carries ``event``, ``ts``, ``request_id``, ``agent_id``, ``tier`` and ``group``; the
rest is what the event is about. Nothing here ever receives headers or keys, so no secret can reach
the trail through this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    """The kinds a reader of the trail can rely on. New kinds are added here, never invented ad hoc.
    A kind is a ``str``: ``emit(EventKind.ROUTE_SELECTED, ...)`` and ``emit("route_selected", ...)`` agree."""

    REQUEST_CLASSIFIED = "request_classified"
    ROUTE_SELECTED = "route_selected"
    REQUEST_COMPLETED = "request_completed"
    FALLBACK_SELECTED = "fallback_selected"
    DEGRADATION_LADDER_STEP = "degradation_ladder_step"
    QUEUE_REJECTED = "queue_rejected"
    MATRIX_RELOADED = "matrix_reloaded"
    MATRIX_REJECTED = "matrix_rejected"
    LOCKOUT_CHANGED = "lockout_changed"
    HOOKS_STARTED = "hooks_started"  # the hooks inside LiteLLM started (their settings, not secrets)
    UPSTREAM_CANCELLED = "upstream_cancelled"  # the hooks closed a provider stream whose client had gone
    ATTEMPT_FAILED = "attempt_failed"  # one LiteLLM attempt failed: which deployment, and how
    BREAKER_CHANGED = "breaker_changed"  # a circuit breaker opened, turned half-open or closed, and why
    PREWARM = "prewarm"  # one more copy of a model loaded ahead of a burst: started, then loaded or failed


EVENT_KINDS = frozenset(k.value for k in EventKind)


class EventSink(Protocol):
    """Where events go: the JSONL file (:class:`JsonlEventSink`) or nowhere (:class:`NullEventSink`)."""

    def emit(
        self,
        kind: str,
        *,
        request_id: str | None,
        agent_id: str | None,
        tier: str | None,
        group: str | None,
        **fields: Any,
    ) -> None: ...

    @property
    def write_errors(self) -> int: ...

    def close(self) -> None: ...


def check_kind(kind: str) -> None:
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")


def build_event(
    kind: str,
    *,
    request_id: str | None,
    agent_id: str | None,
    tier: str | None,
    group: str | None,
    ts: float,
    fields: Mapping[str, Any],
) -> bytes:
    """Serialise one event as a complete line (pure)."""
    return _line(kind, request_id, agent_id, tier, group, ts, fields)


def _line(
    kind: str,
    request_id: str | None,
    agent_id: str | None,
    tier: str | None,
    group: str | None,
    ts: float,
    fields: Mapping[str, Any],
) -> bytes:
    # build_event's body, called positionally by the sink's emit (a few events on every request).
    if kind not in EVENT_KINDS:
        check_kind(kind)
    record: dict[str, Any] = {
        "event": kind,
        "ts": round(ts, 6),
        "request_id": request_id,
        "agent_id": agent_id,
        "tier": tier,
        "group": group,
    }
    if _COMMON_KEYS.isdisjoint(fields):  # always, from emit(): one merge in C instead of a loop
        record.update(fields)
    else:
        for key, value in fields.items():
            if key not in record:
                record[key] = value
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE, default=str)
    except orjson.JSONEncodeError:
        # A key that is not a str (an int, an enum): OPT_NON_STR_KEYS writes it, and costs a third more on
        # every event, so it is only used when needed; a str-keyed event serialises the same either way.
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS, default=str)


_COMMON_KEYS = frozenset({"event", "ts", "request_id", "agent_id", "tier", "group"})


class NullEventSink:
    """Used when no event path is configured: the trail is off, requests are unaffected."""

    def emit(
        self,
        kind: str,
        *,
        request_id: str | None,
        agent_id: str | None,
        tier: str | None,
        group: str | None,
        **fields: Any,
    ) -> None:
        check_kind(kind)  # a misspelt kind fails with the trail off as it would with it on

    @property
    def write_errors(self) -> int:
        return 0

    def close(self) -> None:
        pass


class JsonlEventSink:
    """Appends events to a file; a failing disk is logged and counted, never raised into a request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._fd = self._open()
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self.write_errors = 0

    def emit(
        self,
        kind: str,
        *,
        request_id: str | None,
        agent_id: str | None,
        tier: str | None,
        group: str | None,
        **fields: Any,
    ) -> None:
        line = _line(kind, request_id, agent_id, tier, group, time.time(), fields)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)
            return
        with self._lock:
            self._pending.append(line)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        loop.call_soon(self.flush)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _follow_rotation(self) -> None:
        """Once a second: if the path now names another file (logrotate moved ours away), reopen it."""
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return
        self._checked_at = now
        try:
            same = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except OSError:
            same = False
        if not same:
            os.close(self._fd)
            self._fd = self._open()

    def flush(self) -> None:
        with self._lock:
            lines, self._pending, self._flush_scheduled = self._pending, [], False
        if lines:
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        try:
            with self._lock:
                if self._fd < 0:
                    raise OSError("the sink is closed")
                self._follow_rotation()
                written = os.write(self._fd, data)
                if written != len(data):
                    # A full disk: end the partial line so the next write starts on a line of its own.
                    os.write(self._fd, b"\n")
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            self.write_errors += 1
            log.warning("event trail write to %s failed: %s", self.path, exc)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def open_sink(path: str | None) -> JsonlEventSink | NullEventSink:
    return JsonlEventSink(path) if path else NullEventSink()
