"""The classifier's environment: defaults, parsing, clear errors, and keys that never show themselves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from classifier.settings import ENV_DOCS, Secret, Settings, SettingsError
from litellm_hooks.settings import HooksSettings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.routing_mode, s.queue_enabled, s.canary_share, s.event_path) == ("local-first", True, 0.0, None)
    assert not s.master_key and s.client_keys == ()


def test_parsing() -> None:
    s = Settings.from_env(
        {
            "ROUTING_MODE": " Cloud-Only ",
            "TORCHROUTER_QUEUE_ENABLED": "off",
            "TORCHROUTER_FAST_CHAT_CANARY_SHARE": "0.25",
            "TORCHROUTER_LANE_LIMITS": "balanced=2,code=1",
            "TORCHROUTER_CLIENT_KEYS": "k1, k2,",
            "LITELLM_URL": "http://litellm:4000/",
        }
    )
    assert s.routing_mode == "cloud-only" and s.queue_enabled is False and s.canary_share == 0.25
    assert s.lane_caps == {"balanced": 2, "code": 1} and s.litellm_url == "http://litellm:4000"
    assert [k.reveal() for k in s.client_keys] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("name", "value", "mentions"),
    [
        ("ROUTING_MODE", "sideways", "local-first"),
        ("TORCHROUTER_QUEUE_ENABLED", "maybe", "true or false"),
        ("TORCHROUTER_FAST_CHAT_CANARY_SHARE", "1.5", "[0.0, 1.0]"),
        ("TORCHROUTER_FAST_CHAT_CANARY_SHARE", "lots", "a number"),
        ("TORCHROUTER_LANE_LIMITS", "balanced", "<lane>=<non-negative integer>"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, mentions: str) -> None:
    with pytest.raises(SettingsError, match=name) as info:
        Settings.from_env({name: value})
    assert mentions in str(info.value)


def test_secrets_never_show_themselves() -> None:
    s = Settings.from_env(
        {"LITELLM_MASTER_KEY": "sk-very-secret", "TORCHROUTER_CLIENT_KEYS": "client-secret"}
    )
    assert "sk-very-secret" not in repr(s) and "client-secret" not in repr(s)
    assert str(Secret("x")) == "Secret('***')" and s.master_key.reveal() == "sk-very-secret"


class RecordingEnv(dict[str, str]):
    """An environment that remembers every variable name it was asked about (set to a harmless value, so
    every branch that parses a value runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return False

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)


ROOT = Path(__file__).resolve().parent.parent


def _readme_env_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Environment", 1)[1].split("\n## ", 1)[0]


def _readme_env_table() -> set[str]:
    return set(re.findall(r"^\| `([A-Z_]+)` \|", _readme_env_section(), flags=re.MULTILINE))


def _litellm_config_env() -> set[str]:
    """Project variables LiteLLM reads itself: ``os.environ/NAME`` in litellm_config.yaml."""
    text = (ROOT / "litellm_config.yaml").read_text()
    return {n for n in re.findall(r"os\.environ/([A-Z_]+)", text) if n.startswith("TORCHROUTER_")}


def test_every_variable_either_process_reads_is_documented_in_env_docs_and_the_readme() -> None:
    classifier_env, hooks_env = RecordingEnv(), RecordingEnv()
    Settings.from_env(classifier_env)
    HooksSettings.from_env(hooks_env)
    read = classifier_env.asked | hooks_env.asked | _litellm_config_env()
    assert len(classifier_env.asked) >= 15 and len(hooks_env.asked) == 12  # the recorder saw the reads
    assert "TORCHROUTER_CLOUD_API_KEY" in _litellm_config_env()
    assert read - ENV_DOCS.keys() == set(), "read but not in ENV_DOCS"
    assert ENV_DOCS.keys() - read == set(), "in ENV_DOCS but read by neither process nor LiteLLM's config"
    assert ENV_DOCS.keys() - _readme_env_table() == set(), "in ENV_DOCS but not in the README's table"
    assert _readme_env_table() - ENV_DOCS.keys() == set(), "in the README's table but not in ENV_DOCS"


def test_the_readme_names_every_variable_the_hooks_read_and_how_many() -> None:
    hooks_env = RecordingEnv()
    HooksSettings.from_env(hooks_env)
    paragraph = _readme_env_section().split("The hooks inside", 1)[1].split("LiteLLM itself reads", 1)[0]
    named = set(re.findall(r"`(TORCHROUTER_[A-Z_]+)`", paragraph))
    assert named == hooks_env.asked, named ^ hooks_env.asked
    words = {12: "twelve"}
    assert f"read {words[len(hooks_env.asked)]} of them" in " ".join(paragraph.split())


def test_hooks_settings_parse_and_name_a_bad_variable() -> None:
    s = HooksSettings.from_env(
        {"TORCHROUTER_PROBE_INTERVAL_S": "0.5", "TORCHROUTER_DAILY_BUDGET_USD": "3", "X": "ignored"}
    )
    assert (s.probe_interval_s, s.daily_budget_usd, s.event_path) == (0.5, 3.0, None)
    with pytest.raises(SettingsError, match="TORCHROUTER_PROBE_INTERVAL_S"):
        HooksSettings.from_env({"TORCHROUTER_PROBE_INTERVAL_S": "0"})
    with pytest.raises(SettingsError, match="TORCHROUTER_BREAKER"):
        HooksSettings.from_env({"TORCHROUTER_BREAKER": "cool_off_s=soon"})
    with pytest.raises(SettingsError, match="TORCHROUTER_TIME_BUDGETS"):
        HooksSettings.from_env({"TORCHROUTER_TIME_BUDGETS": "R.total_s=0"})
    with pytest.raises(SettingsError, match="TORCHROUTER_EVICTION"):
        HooksSettings.from_env({"TORCHROUTER_EVICTION": "hold_s=soon"})
    with pytest.raises(SettingsError, match="TORCHROUTER_EVICTION"):
        Settings.from_env({"TORCHROUTER_EVICTION": "never_s=1"})
    assert HooksSettings.from_env({"TORCHROUTER_EVICTION": "off"}).eviction.enabled is False
    for bad in ("share=0", "share=-1", "share=nan", "share=1,off", "sharing=1", "0.5", "share="):
        with pytest.raises(SettingsError, match="TORCHROUTER_PREWARM"):
            HooksSettings.from_env({"TORCHROUTER_PREWARM": bad})
    assert HooksSettings.from_env({"TORCHROUTER_PREWARM": "off"}).prewarm.enabled is False
    assert HooksSettings.from_env({"TORCHROUTER_PREWARM": " share = 1.5 "}).prewarm.share == 1.5
    assert HooksSettings.from_env({}).prewarm == HooksSettings().prewarm
    assert (HooksSettings().prewarm.enabled, HooksSettings().prewarm.share) == (True, 0.75)
    assert Settings.from_env({"TORCHROUTER_EVICTION": "hold_s=30"}).eviction.hold_s == 30.0
    tuned = HooksSettings.from_env(
        {"TORCHROUTER_BREAKER": "cool_off_s=1", "TORCHROUTER_TIME_BUDGETS": "R.total_s=9"}
    )
    assert tuned.breaker.cool_off_s == 1.0 and tuned.time_budgets["R"].total_s == 9.0
