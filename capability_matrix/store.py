"""Hot reload: a file on disk -> the value in force, with the last good one kept on a bad edit.

`ReloadingFile` is the mechanism, for any operator-edited file (the classifier's agent directory uses it too);
`MatrixStore` is it for the capability matrix. A store owns its file: it loads it once at start (an invalid
file fails startup loudly), then `maybe_reload(now)` looks at the file's identity `(mtime_ns, size, inode)` at
most once per `min_interval_s` and reparses only when that changed. Both kinds of editor save are seen:
writing in place changes mtime/size, writing a temp file and renaming it over changes the inode. A rejected
edit is logged once (every problem, one line each), reported to `on_reject`, and the previous matrix stays in
force until a valid edit arrives.

`watch(store, interval_s)` drives it from an event loop (e.g. an aiohttp `cleanup_ctx` task). Parsing runs on
the loop: the shipped file parses in about a millisecond and only when it changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from capability_matrix.loader import MatrixError, parse_matrix_text
from capability_matrix.model import Matrix

log = logging.getLogger(__name__)

# A file modified this recently before we read it may change again within the filesystem's timestamp
# granularity without its identity changing (git's "racy" entries); until it is older we compare content.
_RACY_WINDOW_NS = 2_000_000_000

_FileId = tuple[int, int, int]
T = TypeVar("T")
E = TypeVar("E", bound=Exception)


class ReloadOutcome(StrEnum):
    """What one `maybe_reload` call did; low-cardinality, fit for a metric label."""

    UNCHANGED = "unchanged"  # not checked yet, file identical, or the same rejected content again
    RELOADED = "reloaded"  # a new valid matrix is in force
    REJECTED = "rejected"  # a new invalid edit; the last good matrix stays in force


class ReloadingFile(Generic[T, E]):
    """A value parsed from a file, reloaded when the file changes; the last good value stays on a bad edit.

    ``parse`` turns the file's bytes into the value and raises one of ``rejects`` for an invalid file;
    ``unreadable`` words an OSError as that same kind of error. ``describe`` says what a value holds, for
    the log (``23 profiles``). Subclasses fix these for one kind of file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        what: str,
        parse: Callable[[bytes], T],
        rejects: tuple[type[E], ...],
        unreadable: Callable[[OSError], E],
        describe: Callable[[T], str],
        on_reload: Callable[[T], None] | None = None,
        on_reject: Callable[[E], None] | None = None,
        min_interval_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._what = what
        self._parse = parse
        self._rejects = rejects
        self._unreadable = unreadable
        self._describe = describe
        self._on_reload = on_reload
        self._on_reject = on_reject
        self._min_interval_s = min_interval_s
        self._last_check: float | None = None
        self._last_rejection: E | None = None
        self._rejected_digest: bytes | None = None
        self._generation = 0
        try:
            self._file_id, data, self._racy = self._read()
        except OSError as exc:
            raise unreadable(exc) from exc
        self._current = parse(data)  # raises: startup must fail loudly
        self._digest = _digest(data)

    @property
    def current(self) -> T:
        return self._current

    @property
    def generation(self) -> int:
        """Counts reloads, starting at 0: a cheap key for anything derived from `current`."""
        return self._generation

    @property
    def last_rejection(self) -> E | None:
        """Why the file on disk is not in force, or None when it is."""
        return self._last_rejection

    def maybe_reload(self, now: float) -> ReloadOutcome:
        """Reload if the file changed; `now` is any monotonic clock, used only to space the checks."""
        if self._last_check is not None and now - self._last_check < self._min_interval_s:
            return ReloadOutcome.UNCHANGED
        self._last_check = now
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return self._reject(_digest(repr(exc).encode()), self._unreadable(exc))
        if _file_id(st) == self._file_id and not self._racy:
            return ReloadOutcome.UNCHANGED
        try:
            file_id, data, self._racy = self._read()
        except OSError as exc:
            return self._reject(_digest(repr(exc).encode()), self._unreadable(exc))
        self._file_id = file_id
        if file_id is None:  # a writer is busy with it: look again next tick, when it is likely done
            return ReloadOutcome.UNCHANGED
        digest = _digest(data)
        if digest == self._digest:  # touched, or edited back to what is in force
            self._clear_rejection()
            return ReloadOutcome.UNCHANGED
        if digest == self._rejected_digest:
            return ReloadOutcome.UNCHANGED
        try:
            value = self._parse(data)
        except self._rejects as exc:
            return self._reject(digest, exc)
        self._current, self._digest = value, digest
        self._generation += 1
        self._clear_rejection()
        log.info("%s %s reloaded: %s", self._what, self.path, self._describe(value))
        if self._on_reload is not None:
            try:
                self._on_reload(value)
            except Exception:
                log.exception("%s on_reload callback failed", self._what)
        return ReloadOutcome.RELOADED

    def _read(self) -> tuple[_FileId | None, bytes, bool]:
        """(identity, bytes, racy) of one read; identity None when the file changed while we read it, so the
        next check reads it again (at startup the bytes are parsed anyway: a torn file fails loudly)."""
        with open(self.path, "rb") as f:
            before = os.fstat(f.fileno())
            data = f.read()
            after = os.fstat(f.fileno())
        racy = time.time_ns() - after.st_mtime_ns < _RACY_WINDOW_NS
        return (_file_id(after) if _file_id(before) == _file_id(after) else None), data, racy

    def _reject(self, digest: bytes, exc: E) -> ReloadOutcome:
        if digest == self._rejected_digest:
            return ReloadOutcome.UNCHANGED
        self._rejected_digest, self._last_rejection = digest, exc
        log.warning("%s\n  keeping the last good %s (%s)", exc, self._what, self._describe(self._current))
        if self._on_reject is not None:
            try:
                self._on_reject(exc)
            except Exception:
                log.exception("%s on_reject callback failed", self._what)
        return ReloadOutcome.REJECTED

    def _clear_rejection(self) -> None:
        self._rejected_digest, self._last_rejection = None, None


class MatrixStore(ReloadingFile[Matrix, MatrixError]):
    """The matrix in force, reloaded from `path` when the file changes."""

    def __init__(
        self,
        path: str | Path,
        *,
        on_reload: Callable[[Matrix], None] | None = None,
        on_reject: Callable[[MatrixError], None] | None = None,
        min_interval_s: float = 1.0,
    ) -> None:
        source = str(path)
        super().__init__(
            path,
            what="matrix",
            parse=lambda data: parse_matrix_text(data, source=source),
            rejects=(MatrixError,),
            unreadable=lambda exc: MatrixError.unreadable(Path(source), exc),
            describe=lambda matrix: f"{len(matrix.profiles)} profiles",
            on_reload=on_reload,
            on_reject=on_reject,
            min_interval_s=min_interval_s,
        )


async def watch(
    store: ReloadingFile[Any, Any], interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic
) -> None:
    """Check the store every `interval_s` until cancelled. Never raises on a bad file; the store logs it."""
    while True:
        try:
            store.maybe_reload(clock())
        except Exception:  # a bug, not a bad file: keep watching rather than freeze the value silently
            log.exception("%s reload check failed", store.path)
        await asyncio.sleep(interval_s)


def _file_id(st: os.stat_result) -> _FileId:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
