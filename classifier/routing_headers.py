"""The X-Router-* response headers, built from one trace record (pure)."""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


class RequestIds:
    """Request ids: a random per-process prefix and a counter; unique across restarts, and cheap."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._next = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._next):010x}"


def request_id_from(headers: Mapping[str, str]) -> str | None:
    """A caller's own ``X-Request-Id`` when it is a sane token: replaying it replays the canary draw."""
    value = headers.get("X-Request-Id")
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


@dataclass
class RouteTrace:
    request_id: str
    tier: str = "none"
    group: str = "none"
    model: str = "none"
    fallback: str = "none"
    score_ms: float | None = None
    queue_ms: float = 0.0
    litellm_ttft_ms: float | None = None
    total_ms: float | None = None
    canary: bool = False
    warm_state: str = "unknown"  # of the deployment when the hooks picked it

    def headers(self) -> dict[str, str]:
        out = {
            "X-Router-Request-Id": self.request_id,
            "X-Router-Tier": self.tier,
            "X-Router-Group": self.group,
            "X-Router-Model": self.model,
            "X-Router-Fallback": self.fallback,
            "X-Router-Timing-Queue-Ms": f"{self.queue_ms:.1f}",
        }
        if self.canary:
            out["X-Router-Canary"] = "fast-chat"
        if self.score_ms is not None:
            out["X-Router-Timing-Score-Ms"] = f"{self.score_ms:.3f}"
        if self.litellm_ttft_ms is not None:
            out["X-Router-Timing-Litellm-Ttft-Ms"] = f"{self.litellm_ttft_ms:.1f}"
        if self.total_ms is not None:
            out["X-Router-Timing-Total-Ms"] = f"{self.total_ms:.1f}"
        return out
