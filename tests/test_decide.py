"""decide(): headers and body to a route decision, with the clock passed in (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from torchrouter_core.decide import CloudLocked, decide
from torchrouter_core.tiering import parse_agent_directory_yaml

AGENTS = parse_agent_directory_yaml((Path(__file__).parent.parent / "classifier" / "agents.yaml").read_text())
MATRIX = load_matrix(DEFAULT_MATRIX_PATH)
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
MIDNIGHT = 1_772_409_600.0  # 2026-03-02 00:00 UTC


def run(mode: str, cloud_locked: str | None, now: float = MIDNIGHT - 60, **body: Any) -> Any:
    return decide(
        {"X-Agent-Id": "webmaster"},
        {**BODY, **body},
        agents=AGENTS,
        matrix=MATRIX,
        routing_mode=mode,
        canary_share=0.0,
        request_id="req-00000001",
        now=now,
        cloud_locked=cloud_locked,
    )


def test_an_agent_gets_its_tier_ladder_and_budget() -> None:
    decision = run("local-first", None)
    assert (decision.tier.value, decision.ladder_groups) == ("H", ("balanced", "code", "cloud-balanced"))
    assert decision.output_tokens == 64 and decision.upstream_extras == {}


def test_a_cloud_lockout_removes_the_cloud_steps() -> None:
    # The failure fallbacks lose their cloud groups too, when the request is forwarded (test_fallbacks.py).
    decision = run("local-first", "daily budget spent")
    assert decision.ladder_groups == ("balanced", "code")
    assert decision.upstream_extras == {}


@pytest.mark.parametrize(
    ("now", "retry_after_s"), [(MIDNIGHT - 60, 60), (MIDNIGHT - 0.5, 1), (MIDNIGHT, 86400)]
)
def test_cloud_only_and_locked_waits_for_the_next_utc_day(now: float, retry_after_s: int) -> None:
    with pytest.raises(CloudLocked) as caught:
        run("cloud-only", "daily budget spent", now=now)
    assert caught.value.status == 503 and caught.value.retry_after_s == retry_after_s


IMAGE = [
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
]


def test_a_request_only_the_locked_cloud_could_carry_is_told_when_not_never() -> None:
    """An image no local model reads: with the cloud locked out (budget spent, spend unknown) it is a 503
    ``cloud_locked_out`` with ``Retry-After`` (the next UTC day), not a 400 that tells the client never to
    retry; with the cloud open it is routed there, and a request nothing could ever carry stays a 400."""
    with pytest.raises(CloudLocked) as caught:
        run("local-first", "daily budget spent", messages=IMAGE)
    assert caught.value.status == 503 and caught.value.retry_after_s == 60
    assert "image" in caught.value.message and "daily budget spent" in caught.value.message
    assert run("local-first", None, messages=IMAGE).ladder_groups == ("cloud-balanced",)
    from torchrouter_core.errors import ApiError

    with pytest.raises(ApiError) as never:  # 3,000,000 tokens fit no window, cloud or not
        run("local-first", "daily budget spent", max_tokens=3_000_000)
    assert never.value.status == 400 and never.value.code == "context_length_exceeded"
