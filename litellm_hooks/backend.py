"""The shared backends the hooks depend on (the VRAM ledger and the spend book in Redis) failing, told
once: one log line per kind of failure with its reason, at most every :data:`LOG_EVERY_S` per kind (no
traceback: "Redis is down" needs none, and a traceback per request buries everything else), and the kinds
failing now, which the response report carries to the classifier (``x-torchrouter-degraded``), so its
``/health`` says ``degraded`` and why.

Kinds: ``vram_ledger_view``, ``vram_ledger_reserve``, ``vram_ledger_renew``, ``vram_ledger_release``,
``spend_book``. A kind stops failing on its next success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("torchrouter.hooks.backend")

LOG_EVERY_S = 30.0


@dataclass
class BackendFaults:
    log_every_s: float = LOG_EVERY_S
    clock: Callable[[], float] = time.monotonic
    failing: dict[str, str] = field(default_factory=dict)  # kind -> the exception's class name
    logged_at: dict[str, float] = field(default_factory=dict)  # kind -> last log line (clock)
    since_logged: dict[str, int] = field(default_factory=dict)  # kind -> failures not logged since

    def failed(self, kind: str, consequence: str, exc: BaseException) -> None:
        """``consequence``: what the hooks do instead (``treated as refused``...), for the log line."""
        self.failing[kind] = type(exc).__name__
        now = self.clock()
        last = self.logged_at.get(kind)
        if last is not None and now - last < self.log_every_s:
            self.since_logged[kind] = self.since_logged.get(kind, 0) + 1
            return
        self.logged_at[kind] = now
        skipped = self.since_logged.pop(kind, 0)
        log.warning(
            "%s failed (%s: %s); %s%s",
            kind,
            type(exc).__name__,
            str(exc)[:200],
            consequence,
            f" ({skipped} more since the last line)" if skipped else "",
        )

    def ok(self, kind: str) -> None:
        if self.failing.pop(kind, None) is not None:
            self.logged_at.pop(kind, None)
            self.since_logged.pop(kind, None)
            log.warning("%s answers again", kind)

    def report(self) -> tuple[str, ...]:
        """``kind:ExceptionClass`` for every kind failing now, sorted."""
        return tuple(f"{kind}:{why}" for kind, why in sorted(self.failing.items()))
