"""The spend book's file (``TORCHROUTER_SPEND_PATH``): read at start, replaced atomically on each change.

Both processes read it (the classifier at start, to begin from today's total); only the hooks write it.
A write goes to a temporary file in the same directory and is moved over the old one (``os.replace``), so a
reader sees the old book or the new one, never half of one. A missing file is no spend. A file that cannot be
read or parsed is *unknown* spend: set aside (renamed ``<name>.corrupt-<UTC time>``), logged in one line,
and, with a daily budget, the cloud stays locked until a valid book is written back (read again every few
seconds) or the UTC day ends (:func:`load`, :func:`unknown_reason`). A failed write is logged and the
request continues.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

from torchrouter_core.spend import DailySpend

log = logging.getLogger("torchrouter.spend")


RECHECK_S = 5.0  # while today's spend is unknown, the file is read again at most this often
_ASIDE = ".corrupt-"


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _valid(record: object) -> bool:
    """A book as written by :func:`save`: an object with a day (string or null) and a number."""
    if not isinstance(record, dict) or not isinstance(record.get("day"), str | None):
        return False
    total = record.get("total_usd")
    return (
        isinstance(total, int | float) and not isinstance(total, bool) and math.isfinite(total) and total >= 0
    )


def _unknown(why: str, now: float) -> DailySpend:
    spend = DailySpend()
    spend.unknown(now)  # rolls to today first: the reason holds for today only
    spend.unknown_why = why
    spend.checked_at = now
    return spend


def load(path: Path | None, now: float) -> DailySpend:
    """Today's spend from the book. A corrupt book is renamed aside (``spend.json.corrupt-<UTC time>``)
    and today's spend is *unknown* (:meth:`DailySpend.unknown`): with a daily budget the cloud stays
    locked until a valid book is written back or the UTC day ends. A book set aside today by the other
    process (the file missing, its ``.corrupt-`` copy of today there) is unknown too."""
    if path is None:
        return DailySpend()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        today = _stamp(now)[:8]
        aside = sorted(path.parent.glob(f"{path.name}{_ASIDE}{today}T*"))
        if aside:
            return _unknown(f"the spend book was corrupt and is kept aside as {aside[-1].name}", now)
        return DailySpend()
    except OSError as exc:
        log.error(
            "spend book %s unreadable (%s); today's cloud spend is unknown: with a daily budget the cloud "
            "stays locked until it reads again or the UTC day ends",
            path,
            exc.strerror or type(exc).__name__,
        )
        return _unknown(f"the spend book {path.name} is unreadable", now)
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if _valid(record):
        return DailySpend.from_record(record, now)
    aside_path = path.with_name(f"{path.name}{_ASIDE}{_stamp(now)}")
    try:
        os.replace(path, aside_path)
    except OSError:
        aside_path = path
    log.error(
        "spend book %s is corrupt (kept aside as %s); today's cloud spend is unknown: with a daily budget "
        "the cloud stays locked until a valid book is written to %s or the UTC day ends",
        path,
        aside_path.name,
        path.name,
    )
    return _unknown(f"the spend book was corrupt and is kept aside as {aside_path.name}", now)


def unknown_reason(path: Path | None, spend: DailySpend, now: float) -> str | None:
    """Why today's spend is unknown, or None; while it is, the book's file is read again (at most every
    :data:`RECHECK_S`), and a valid book there (the operator's fix) makes it known again."""
    why = spend.unknown(now)
    if why is None or path is None or now - spend.checked_at < RECHECK_S:
        return why
    spend.checked_at = now
    fresh = load(path, now)
    if fresh.unknown_why is not None:
        spend.unknown_why = fresh.unknown_why
        return spend.unknown_why
    spend.unknown_why = None
    spend.total_usd = fresh.today(now)
    log.warning("spend book %s reads again: today's cloud spend is %.4f USD", path, spend.total_usd)
    return None


def save(path: Path | None, spend: DailySpend, now: float) -> None:
    if path is None:
        return
    if spend.unknown(now) is not None:  # never write over the book the operator has to fix
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".spend-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(spend.to_record(now), out)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("spend book %s not saved: %s", path, exc)
