"""torchrouter_core.errors: the error a "no deployments" verdict is answered with."""

from __future__ import annotations

import pytest

from torchrouter_core.errors import NoDeploymentNow, Unprocessable, verdict_error
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
