"""Domain errors: what went wrong, with the HTTP status and OpenAI error body it maps to (no HTTP library).

The edge (``classifier.http_errors``) turns one into an aiohttp response; the hooks and the pure
decision code raise and inspect them without importing aiohttp.

Exception tree::

    ApiError                      an error with an HTTP status, answered as {"error": {...}}
     +-- BadRequest               400 invalid_request_error (bad JSON, wrong shape)
     +-- Unauthorized             401 invalid_api_key (TORCHROUTER_CLIENT_KEYS set, key missing or unknown)
     +-- PayloadTooLarge          413 invalid_request_error
     +-- QueueFull                429/503 with Retry-After (every ladder step exhausted)
     +-- UpstreamUnavailable      502 api_error (LiteLLM could not be reached)
     +-- UpstreamTimeout          504 api_error

Messages never include request headers or keys.
"""

from __future__ import annotations

from collections.abc import Mapping


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


class UpstreamTimeout(ApiError):
    status = 504
    code = "upstream_timeout"
