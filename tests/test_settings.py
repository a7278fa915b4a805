"""The classifier's environment: defaults, parsing, clear errors, and keys that never show themselves."""

from __future__ import annotations

import pytest

from classifier.settings import ENV_DOCS, Secret, Settings, SettingsError


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


def test_every_setting_is_documented() -> None:
    assert "LITELLM_MASTER_KEY" in ENV_DOCS and "TORCHROUTER_CLIENT_KEYS" in ENV_DOCS
