"""Domain errors: what went wrong, with the HTTP status and OpenAI error body it maps to (no HTTP library).

The edge (``classifier.http_errors``) turns one into an aiohttp response; the hooks and the pure
decision code raise and inspect them without importing aiohttp.

Exception tree::

    ApiError                      an error with an HTTP status, answered as {"error": {...}}
     +-- BadRequest               400 invalid_request_error (bad JSON, wrong shape)
     |    +-- Unprocessable       400 no step of its route could ever carry it (context_length_exceeded...)
     +-- Unauthorized             401 invalid_api_key (TORCHROUTER_CLIENT_KEYS set, key missing or unknown)
     +-- NotFound                 404 model_not_found (an unknown model name)
     +-- PayloadTooLarge          413 invalid_request_error
     +-- UnsupportedMediaType     415 a Content-Encoding or Content-Type the classifier cannot read
     +-- HeaderFieldsTooLarge     431 header lines over aiohttp's limits
     +-- QueueFull                429/503 with Retry-After (every ladder step exhausted)
     +-- NoDeploymentNow          503 every deployment of the group is locked out or cooling down now
     +-- UpstreamUnavailable      502 api_error (LiteLLM could not be reached)
     +-- UpstreamTimeout          504 api_error

Messages never include request headers or keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # the verdict's type only: this module imports nothing of ours at run time
    from torchrouter_core.feasibility import Verdict


class ApiError(Exception):
    status = 500
    error_type = "api_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class QueueFull(ApiError):
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int, status: int = 429) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.status = status
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(ApiError):
    status = 502
    code = "upstream_unavailable"


class LiteLLMUnreachable(UpstreamUnavailable):
    """The classifier could not connect to its LiteLLM proxy at all (refused, no route): ``/health`` says
    so until an answer comes again."""


class UpstreamTimeout(ApiError):
    status = 504
    code = "upstream_timeout"


# --- the front door: bodies and names the classifier refuses itself -----------------------------------------


class NotFound(ApiError):
    """404: an unknown model name (``code`` model_not_found, ``param`` model), as OpenAI answers."""

    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class UnsupportedMediaType(ApiError):
    """415: a Content-Encoding we do not decode, or a non-JSON Content-Type on a non-JSON body."""

    status = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


class HeaderFieldsTooLarge(ApiError):
    """431: a header line (or too many of them) over aiohttp's limits (RFC 6585 section 5)."""

    status = 431
    error_type = "invalid_request_error"
    code = "header_fields_too_large"


class Unprocessable(BadRequest):
    """400: a well-formed request that no step of its route could ever carry (context window, modality,
    tools); ``code`` is OpenAI's where one exists (``context_length_exceeded``). Not retryable as it is."""

    code = "request_not_servable"


class NoDeploymentNow(ApiError):
    """503 with Retry-After: every deployment of the group is locked out or cooling down right now."""

    status = 503
    code = "no_deployment_available"


def verdict_error(verdict: Verdict) -> ApiError:
    """The error for a verdict of :func:`torchrouter_core.feasibility.explain_no_deployment`."""
    if verdict.status == 400:
        return Unprocessable(verdict.message, code=verdict.code, param=verdict.param)
    headers = {"Retry-After": verdict.retry_after} if verdict.retry_after else None
    return NoDeploymentNow(verdict.message, code=verdict.code, headers=headers)


# OpenAI's error ``type`` by HTTP status (its API reference's error codes table), and the types kept as sent.
_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_OPENAI_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "insufficient_quota",
        "api_error",
        "server_error",
    }
)
# LiteLLM's exception names before a message: "litellm.APIConnectionError: Ollama_chatException - ..."
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+(?:\w+Exception\s+-\s+)?")
# LiteLLM appends its fallback bookkeeping to a message after these (one per line).
_LITELLM_TAILS = (
    "Received Model Group=",
    "Available Model Group Fallbacks=",
    "Error doing the fallback:",
    "Deployment Info:",
)
# Python object reprs a transport error carries ("ssl:<ssl.SSLContext object at 0x7f...>"): noise to a client.
_OBJECT_REPR = re.compile(r"\s*\w*:?<[^<>]* object at 0x[0-9a-f]+>")
MAX_UPSTREAM_MESSAGE = 1000  # characters of an upstream error's message kept


def upstream_error_body(status: int, payload: bytes) -> bytes:
    """LiteLLM's error response as OpenAI's ``{"error": {...}}`` body (:func:`upstream_error`)."""
    return orjson.dumps({"error": upstream_error(status, payload)})


def stream_broke_message(error: object) -> str:
    """The message for a stream LiteLLM ended with its own error event, ``error`` being that event's
    ``error`` value: its message (at most 500 characters in all), else that the stream broke."""
    message = error.get("message") if isinstance(error, dict) else None
    return f"upstream stream broke: {message}"[:500] if isinstance(message, str) else "upstream stream broke"


def upstream_error(status: int, payload: bytes) -> dict[str, str | None]:
    """LiteLLM's error response as OpenAI's ``{"message", "type", "param", "code"}``: its message without
    LiteLLM's fallback bookkeeping (the trail has each attempt) and at most ``MAX_UPSTREAM_MESSAGE``
    characters, ``type`` filled in from the status when missing, ``code`` kept (else the status). A body
    that is not such JSON becomes a message naming the status."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"LiteLLM answered {status}"}
    message = error.get("message")
    message = str(message) if message is not None else f"LiteLLM answered {status}"
    for tail in _LITELLM_TAILS:
        at = message.find(tail)
        if at > 0:
            message = message[:at]
    message = _OBJECT_REPR.sub("", message).strip()
    while (bare := _LITELLM_PREFIX.sub("", message).strip()) != message:  # LiteLLM nests its names
        message = bare
    message = message.rstrip(".") or f"LiteLLM answered {status}"
    if len(message) > MAX_UPSTREAM_MESSAGE:
        message = message[: MAX_UPSTREAM_MESSAGE - 3] + "..."
    error_type = error.get("type")
    if error_type not in _OPENAI_TYPES:  # missing, null, or LiteLLM's own ("internal_server_error")
        error_type = _TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")
    code = error.get("code")
    param = error.get("param")
    return {
        "message": message,
        "type": error_type,
        "param": param if isinstance(param, str) else None,
        "code": str(code) if code is not None and not isinstance(code, (dict, list)) else str(status),
    }
