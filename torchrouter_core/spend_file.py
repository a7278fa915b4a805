"""The spend book's file (``TORCHROUTER_SPEND_PATH``): read at start, replaced atomically on each change.

Both processes read it (the classifier at start, to begin from today's total); only the hooks write it.
A write goes to a temporary file in the same directory and is moved over the old one (``os.replace``), so a
reader sees the old book or the new one, never half of one. A file that cannot be read or parsed is no
spend (logged); a failed write is logged and the request continues.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from torchrouter_core.spend import DailySpend

log = logging.getLogger("torchrouter.spend")


def load(path: Path | None, now: float) -> DailySpend:
    if path is None:
        return DailySpend()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DailySpend()
    except (OSError, ValueError) as exc:
        log.warning("spend book %s unreadable (%s); starting today's spend at 0", path, type(exc).__name__)
        return DailySpend()
    return DailySpend.from_record(record, now)


def save(path: Path | None, spend: DailySpend, now: float) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".spend-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(spend.to_record(now), out)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("spend book %s not saved: %s", path, exc)
