"""What a failed LiteLLM attempt says about its target: LiteLLM's exception -> a breaker :class:`Failure`.

The mapping (LiteLLM 1.102.4's exception types; a status code where the type does not say enough):

- ``litellm.Timeout`` caused by httpx's ``ConnectTimeout`` (no connection within the connect budget) ->
  ``connect_timeout``; any other ``litellm.Timeout`` (no first byte, or a silent stream, within the
  attempt's budget) -> ``timeout``;
- 429 (``RateLimitError``) -> ``rate_limited``, with the provider's ``Retry-After`` when it sent one;
- 401/403 -> ``auth``;
- ``APIConnectionError`` whose message says the connection was refused, reset or never made ->
  ``refused`` (the host is gone); any other ``APIConnectionError`` (a body that stopped midway) ->
  ``stream_broken``; a ``MidStreamFallbackError`` -> ``stream_broken``;
- httpx's own errors, as LiteLLM passes them on for a stream it was reading: connect timeout ->
  ``connect_timeout``, other timeouts -> ``timeout``, connect errors -> ``refused``, any other transport
  error (``ReadError``: "response payload is not completed") -> ``stream_broken``;
- any other 5xx -> ``server_error``;
- anything else (a 400 the request earned, a client that left) -> ``None``: not the target's fault.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from typing import Any

import httpx
from litellm import exceptions as llm

from torchrouter_core.breaker import Failure

_REFUSED_WORDS = (
    "refused",
    "cannot connect",
    "connection reset",
    "connecterror",
    "all connection attempts failed",
    "name or service not known",
    "server disconnected without sending a response",
)


def _status(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after_s(exc: object, now: float) -> float | None:
    """The provider's ``Retry-After`` (seconds, or an HTTP date) from the exception's response headers."""
    for holder in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if holder is None:
            continue
        value: Any = (
            holder.get("retry-after") if isinstance(holder, Mapping) or hasattr(holder, "get") else None
        )
        if not isinstance(value, str) or not value.strip():
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - now)
    return None


def _caused_by(exc: object, kind: type[BaseException], depth: int = 8) -> bool:
    """True when ``kind`` is in the exception's cause chain (LiteLLM wraps httpx's error two or three
    times: ``litellm.Timeout`` <- the provider's error <- ``httpx.ConnectTimeout``)."""
    seen = exc
    for _ in range(depth):
        if isinstance(seen, kind):
            return True
        if not isinstance(seen, BaseException):
            return False
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: object, now: float) -> tuple[Failure | None, float | None]:
    """(what failed, Retry-After seconds or ``None``)."""
    status = _status(exc)
    if isinstance(exc, llm.Timeout) or status == 408:
        return (Failure.CONNECT_TIMEOUT if _caused_by(exc, httpx.ConnectTimeout) else Failure.TIMEOUT), None
    if isinstance(exc, llm.RateLimitError) or status == 429:
        return Failure.RATE_LIMITED, retry_after_s(exc, now)
    if status in (401, 403):
        return Failure.AUTH, None
    if isinstance(exc, llm.MidStreamFallbackError):
        return Failure.STREAM_BROKEN, None
    if isinstance(exc, llm.APIConnectionError):
        text = str(exc).lower()
        return (Failure.REFUSED if any(w in text for w in _REFUSED_WORDS) else Failure.STREAM_BROKEN), None
    if isinstance(exc, httpx.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT, None
    if isinstance(exc, httpx.TimeoutException):
        return Failure.TIMEOUT, None
    if isinstance(exc, httpx.ConnectError):
        return Failure.REFUSED, None
    if isinstance(exc, httpx.TransportError):  # read/protocol errors: the answer stopped midway
        return Failure.STREAM_BROKEN, None
    if status is not None and status >= 500:
        return Failure.SERVER_ERROR, None
    return None, None
