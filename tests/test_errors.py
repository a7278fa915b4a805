"""torchrouter_core.errors: the error a "no deployments" verdict is answered with, and LiteLLM's own error
responses in OpenAI's shape."""

from __future__ import annotations

import orjson
import pytest

from torchrouter_core.errors import (
    MAX_UPSTREAM_MESSAGE,
    NoDeploymentNow,
    Unprocessable,
    upstream_error_body,
    verdict_error,
)
from torchrouter_core.feasibility import explain_no_deployment


@pytest.mark.parametrize(
    ("reasons", "retry_after", "kind", "status", "headers"),
    [
        ("context_window", None, Unprocessable, 400, {}),
        ("lockout:auth", None, NoDeploymentNow, 503, {}),
        (None, "7", NoDeploymentNow, 503, {"Retry-After": "7"}),
    ],
)
def test_a_verdict_becomes_its_error(
    reasons: str | None, retry_after: str | None, kind: type, status: int, headers: dict[str, str]
) -> None:
    verdict = explain_no_deployment("balanced", reasons, retry_after)
    error = verdict_error(verdict)
    assert isinstance(error, kind) and error.status == status == verdict.status
    assert (error.code, error.message, error.param) == (verdict.code, verdict.message, verdict.param)
    assert error.headers == headers


# --- LiteLLM's own error responses, relayed in OpenAI's shape (errors.upstream_error_body) ---------------
@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (  # LiteLLM's type null and its fallback bookkeeping after the message
            500,
            b'{"error": {"message": "litellm.APIConnectionError: payload not completed. Received Model'
            b' Group=balanced\\nAvailable Model Group Fallbacks=None\\nError doing the fallback: x",'
            b' "type": null, "param": null, "code": "500"}}',
            {"message": "payload not completed", "type": "api_error", "param": None, "code": "500"},
        ),
        (  # LiteLLM's own type name and its exception names before the provider's message
            500,
            b'{"error": {"message": "litellm.InternalServerError: Ollama_chatException - '
            b'{\\"error\\":\\"boom\\"}", "type": "internal_server_error", "param": null, "code": "500"}}',
            {"message": '{"error":"boom"}', "type": "api_error", "param": None, "code": "500"},
        ),
        (
            401,
            b'{"error": {"message": "Authentication Error", "type": "", "param": "key", "code": 401}}',
            {"message": "Authentication Error", "type": "authentication_error", "param": "key",
             "code": "401"},
        ),
        (  # LiteLLM's nested names, its deployment info, a transport error's object reprs
            408,
            b'{"error": {"message": "litellm.Timeout: Ollama_chatException - litellm.Timeout: Cannot connect'
            b' to host h:1 ssl:<ssl.SSLContext object at 0x7fe3cf29ff50> [refused]\\n\\nDeployment Info: x",'
            b' "type": null, "code": "408"}}',
            {"message": "Cannot connect to host h:1 [refused]", "type": "invalid_request_error",
             "param": None, "code": "408"},
        ),
        (  # a type LiteLLM did set is kept
            400,
            b'{"error": {"message": "bad", "type": "invalid_request_error", "code": null}}',
            {"message": "bad", "type": "invalid_request_error", "param": None, "code": "400"},
        ),
        (502, b"<html>Bad Gateway</html>",
         {"message": "LiteLLM answered 502", "type": "api_error", "param": None, "code": "502"}),
        (429, b'{"detail": "slow down"}', {"message": "LiteLLM answered 429", "type": "rate_limit_error",
                                            "param": None, "code": "429"}),
    ],
)  # fmt: skip
def test_litellms_errors_leave_in_openais_shape(
    status: int, payload: bytes, expected: dict[str, object]
) -> None:
    assert orjson.loads(upstream_error_body(status, payload)) == {"error": expected}


def test_a_long_upstream_message_is_cut() -> None:
    body = orjson.dumps({"error": {"message": "x" * 5000, "type": "api_error", "code": "500"}})
    message = orjson.loads(upstream_error_body(500, body))["error"]["message"]
    assert len(message) == MAX_UPSTREAM_MESSAGE and message.endswith("...")
