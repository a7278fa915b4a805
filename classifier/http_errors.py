"""HTTP responses for errors: the aiohttp edge of :mod:`torchrouter_core.errors`.

Every error the classifier answers leaves as OpenAI-shaped JSON
(``{"error": {"message", "type", "param", "code"}}``) with the error's status and headers.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from torchrouter_core.errors import ApiError


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> web.Response:
    merged = {**error.headers, **(headers or {})}
    return web.Response(
        status=error.status, body=orjson.dumps(error.body()), content_type="application/json", headers=merged
    )


def http_error_response(status: int, reason: str) -> web.Response:
    """For aiohttp's own HTTP errors (404 unknown route, 405 wrong method...)."""
    error_type = "invalid_request_error" if status < 500 else "api_error"
    body = {"error": {"message": reason, "type": error_type, "param": None, "code": str(status)}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
