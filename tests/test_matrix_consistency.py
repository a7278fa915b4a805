"""The shipped matrix and litellm_config.yaml agree, and each kind of drift produces its line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from capability_matrix import DEFAULT_MATRIX_PATH, check_consistency, load_matrix, validate_files

LITELLM_CONFIG_PATH = Path(__file__).resolve().parents[1] / "litellm_config.yaml"
CONFIG: dict[str, Any] = yaml.safe_load(LITELLM_CONFIG_PATH.read_text(encoding="utf-8"))
MATRIX = load_matrix(DEFAULT_MATRIX_PATH)
K = "matthew-100.86.174.11/ollama/qwen3:8b"
CLOUD = "openai-api/openai/gpt-4o"

Config = dict[str, Any]


def test_shipped_files_are_consistent() -> None:
    assert validate_files(DEFAULT_MATRIX_PATH, LITELLM_CONFIG_PATH) == []


def test_shipped_config_shape() -> None:
    deployments = {d["model_info"]["id"]: d for d in CONFIG["model_list"]}
    assert len(deployments) == len(CONFIG["model_list"]) == 23
    assert {d["model_name"] for d in deployments.values()} == {
        "balanced",
        "fast-chat",
        "code",
        "cloud-balanced",
        "cloud-fast",
        "cloud-code",
    }
    assert deployments[K]["litellm_params"] == {
        "model": "ollama_chat/qwen3:8b",
        "api_base": "http://127.0.0.1:11501",
    }
    assert deployments[CLOUD]["litellm_params"] == {
        "model": "openai/gpt-4o",
        "api_base": "http://127.0.0.1:11510/v1",
        "api_key": "os.environ/TORCHROUTER_CLOUD_API_KEY",
    }
    assert CONFIG["router_settings"]["fallbacks"] == [
        {"balanced": ["cloud-balanced"]},
        {"fast-chat": ["cloud-fast"]},
        {"code": ["cloud-code"]},
        {"cloud-balanced": ["balanced"]},
        {"cloud-fast": ["fast-chat"]},
        {"cloud-code": ["code"]},
    ]
    assert CONFIG["litellm_settings"] == {"callbacks": "litellm_hooks.router_hooks", "drop_params": True}
    # cancel_on_disconnect: a client that hangs up stops the model's work (issue 8, kind 3)
    assert CONFIG["general_settings"] == {
        "master_key": "os.environ/LITELLM_MASTER_KEY",
        "cancel_on_disconnect": True,
    }


def _index(config: Config, key: str) -> int:
    return next(i for i, d in enumerate(config["model_list"]) if d["model_info"]["id"] == key)


def _deployment(key: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        edit(config["model_list"][_index(config, key)])

    return mutate


def _params(key: str, **params: object) -> Callable[[Config], None]:
    return _deployment(key, lambda d: d["litellm_params"].update(params))


def _drop(key: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        del config["model_list"][_index(config, key)]

    return mutate


def _drop_group(group: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config["model_list"] = [d for d in config["model_list"] if d["model_name"] != group]

    return mutate


def _add_fallback(entry: dict[str, list[str]]) -> Callable[[Config], None]:
    return lambda config: config["router_settings"]["fallbacks"].append(entry)


def _duplicate(key: str) -> Callable[[Config], None]:
    return lambda config: config["model_list"].append(
        copy.deepcopy(config["model_list"][_index(config, key)])
    )


DRIFT = [
    (
        "deployment without profile",
        _deployment(K, lambda d: d["model_info"].update(id="ghost-1/ollama/qwen3:8b")),
        "deployment 'ghost-1/ollama/qwen3:8b' (model_list[0]): no profile with this key in the matrix",
    ),
    ("profile without deployment", _drop(K), f"profile '{K}': no deployment with this model_info.id"),
    (
        "deployment without model_info.id",
        _deployment(K, lambda d: d.pop("model_info")),
        "model_list[0] (group 'fast-chat'): no model_info.id naming its matrix profile",
    ),
    ("deployment listed twice", _duplicate(CLOUD), f"deployment '{CLOUD}': listed twice (model_list["),
    (
        "group differs from lane",
        _deployment(K, lambda d: d.update(model_name="balanced")),
        f"deployment '{K}': model_name 'balanced' but the profile's lane is 'fast-chat'",
    ),
    (
        "model differs",
        _params(K, model="ollama_chat/qwen3:14b"),
        f"deployment '{K}': litellm_params.model 'ollama_chat/qwen3:14b' but the profile says "
        "'ollama_chat/qwen3:8b'",
    ),
    (
        "wrong provider prefix",
        _params(K, model="ollama/qwen3:8b"),
        f"deployment '{K}': litellm_params.model 'ollama/qwen3:8b' but the profile says "
        "'ollama_chat/qwen3:8b'",
    ),
    (
        "api_base differs",
        _params(CLOUD, api_base="https://api.openai.com/v1"),
        f"deployment '{CLOUD}': litellm_params.api_base 'https://api.openai.com/v1' but the profile says "
        "'http://127.0.0.1:11510/v1'",
    ),
    (
        "think set in the config",
        _params(K, think=False),
        f"deployment '{K}': litellm_params.think is set (False); think comes from the matrix's "
        "requires_think_false (the hooks apply it), so a matrix edit takes effect",
    ),
    (
        "literal api key",
        _params(CLOUD, api_key="sk-live-123"),
        f"deployment '{CLOUD}': litellm_params.api_key is a literal value; use os.environ/<VARIABLE>",
    ),
    (
        "fallback to a missing group",
        _add_fallback({"balanced": ["cloud-turbo"]}),
        "router_settings.fallbacks[6]: 'cloud-turbo' is not a model group in model_list",
    ),
    (
        "fallback from a missing group",
        _add_fallback({"reasoning": ["balanced"]}),
        "router_settings.fallbacks[6]: 'reasoning' is not a model group in model_list",
    ),
    ("lane without group", _drop_group("code"), "lane 'code': no LiteLLM model group of that name"),
]


@pytest.mark.parametrize(("mutate", "expected"), [d[1:] for d in DRIFT], ids=[d[0] for d in DRIFT])
def test_each_drift_produces_its_line(
    mutate: Callable[[Config], None], expected: str, tmp_path: Path
) -> None:
    config = copy.deepcopy(CONFIG)
    mutate(config)
    assert any(line.startswith(expected) for line in check_consistency(MATRIX, config))
    # The same through the files, as `torchrouter validate` runs it.
    broken = tmp_path / "litellm_config.yaml"
    broken.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    lines = validate_files(DEFAULT_MATRIX_PATH, broken)
    assert any(line.startswith(f"{broken}: {expected}") for line in lines), lines


def test_a_secret_is_never_echoed() -> None:
    config = copy.deepcopy(CONFIG)
    _params(CLOUD, api_key="sk-live-123")(config)
    assert not any("sk-live-123" in line for line in check_consistency(MATRIX, config))


def test_missing_model_list() -> None:
    assert check_consistency(MATRIX, {"router_settings": {}}) == [
        "model_list: missing or not a list of deployments"
    ]


def test_validate_files_reports_matrix_problems_with_the_file_name(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    text = DEFAULT_MATRIX_PATH.read_text(encoding="utf-8")
    matrix.write_text(text.replace("    speed_score: 0.9\n", "    speed_score: 1.4\n", 1), encoding="utf-8")
    assert validate_files(matrix, LITELLM_CONFIG_PATH) == [
        f'{matrix}: profiles["{K}"].speed_score: 1.4 is greater than the maximum of 1'
    ]


def test_validate_files_reports_a_broken_litellm_config(tmp_path: Path) -> None:
    config = tmp_path / "litellm_config.yaml"
    config.write_text("model_list:\n  - model_name: [fast-chat\n", encoding="utf-8")
    (line,) = validate_files(DEFAULT_MATRIX_PATH, config)
    assert line.startswith(f"{config}: YAML syntax error at line ")
    (line,) = validate_files(DEFAULT_MATRIX_PATH, tmp_path / "absent.yaml")
    assert line == f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"
