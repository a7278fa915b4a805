"""The learned tier model through the real stack: an unknown agent's judgment request without any keyword
marker lands in tier H, and the trail says how sure the model was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from classifier.app import create_app
from classifier.settings import Settings, SettingsError
from tests.conftest import ClassifierFactory, Stack
from tests.harness import wait_for_event

# Written for this test, not taken from the corpus: no "trade-off", "step by step", "pros and cons"...
JUDGMENT = (
    "Our two largest distributors both want exclusive rights in Scandinavia next year. One pays more, the "
    "other has the better reputation with retailers. Which should we choose, and how do we tell the other?"
)


async def ask(url: str, text: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    async with aiohttp.ClientSession() as http:
        headers = {"X-Agent-Id": "someone-new"}
        async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.json()


async def test_an_unknown_agents_judgment_request_is_tier_h(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    status, headers, _ = await ask(await make_classifier(), JUDGMENT)
    assert status == 200 and headers["X-Router-Tier"] == "H" and headers["X-Router-Group"] == "balanced"
    event = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "request_classified")
    assert event["tier_source"] == "content" and event["signals"] == ["model:H"]
    assert 0.4 <= event["tier_confidence"] <= 1.0
    assert event["tier_features"] and all(isinstance(f, str) for f in event["tier_features"])

    # The same request under the keyword rules alone (TORCHROUTER_TIER_MODEL=off) was tier R: the model
    # is what tiers it right.
    status, headers, _ = await ask(await make_classifier(tier_model_path=None), JUDGMENT)
    assert status == 200 and headers["X-Router-Tier"] == "R"
    event = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "request_classified")
    assert event["signals"] == ["content:routine"] and event["tier_confidence"] is None


def test_a_broken_model_file_stops_the_classifier(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(SettingsError, match=r"TORCHROUTER_TIER_MODEL: .*model.json: not a"):
        create_app(Settings(tier_model_path=tmp_path / "model.json"))


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({}, "tier_min_confidence", 0.4),
        ({"TORCHROUTER_TIER_MODEL": "off"}, "tier_model_path", None),
        ({"TORCHROUTER_TIER_MODEL": "/x/m.json"}, "tier_model_path", Path("/x/m.json")),
        ({"TORCHROUTER_TIER_MIN_CONFIDENCE": "0.7"}, "tier_min_confidence", 0.7),
        ({"TORCHROUTER_TIER_DEFAULT": "r"}, "tier_default", "R"),
    ],
)
def test_tier_settings(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(Settings.from_env(env), field) == value


@pytest.mark.parametrize(
    "env",
    [{"TORCHROUTER_TIER_MIN_CONFIDENCE": "1.5"}, {"TORCHROUTER_TIER_DEFAULT": "X"}],
)
def test_bad_tier_settings(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)
