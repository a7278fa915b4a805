"""What operators write, refused whole and in one line: NaN and infinities in any number of the matrix, a
host's ``gpu_overhead_gb`` that leaves no memory, a list where a name belongs in agents.yaml, and a mapping
key given twice in any YAML file the project reads from operators."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from capability_matrix import (
    DEFAULT_MATRIX_PATH,
    FleetView,
    MatrixError,
    MatrixStore,
    ReloadOutcome,
    check_consistency,
    parse_matrix,
    parse_matrix_text,
)
from classifier.app import load_litellm_fallbacks
from classifier.fleet_status import LedgerMirror, fleet_status
from torchrouter import cli
from torchrouter_core.aliases import AliasError, parse_aliases_yaml
from torchrouter_core.decide import AgentsStore
from torchrouter_core.strict_yaml import DuplicateKeyError, safe_load_strict
from torchrouter_core.tiering import DirectoryError, parse_agent_directory, parse_agent_directory_yaml

REPO = Path(__file__).resolve().parent.parent
AGENTS_PATH = REPO / "classifier" / "agents.yaml"
AGENTS_TEXT = AGENTS_PATH.read_text(encoding="utf-8")
MATRIX_TEXT = DEFAULT_MATRIX_PATH.read_text(encoding="utf-8")
MATRIX_DOC: dict[str, Any] = yaml.safe_load(MATRIX_TEXT)
HOST = "matthew-100.86.174.11"
K = "matthew-100.86.174.11/ollama/qwen3:8b"
AT = f'profiles["{K}"]'


def _lines(doc: object) -> list[str]:
    with pytest.raises(MatrixError) as info:
        parse_matrix(doc)
    return info.value.lines()


# --- 1. NaN and infinities -------------------------------------------------------------------------------

NUMERIC_FIELDS = [
    ("hosts", "gpu_memory_gb", f'hosts["{HOST}"].gpu_memory_gb'),
    ("hosts", "gpu_overhead_gb", f'hosts["{HOST}"].gpu_overhead_gb'),
    ("profiles", "vram_gb", f"{AT}.vram_gb"),
    ("profiles", "speed_score", f"{AT}.speed_score"),
    ("profiles", "quality_score", f"{AT}.quality_score"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("section", "field", "where"), NUMERIC_FIELDS, ids=[f[1] for f in NUMERIC_FIELDS])
def test_a_non_finite_number_in_any_matrix_field_is_refused_naming_it(
    section: str, field: str, where: str, value: float
) -> None:
    doc = copy.deepcopy(MATRIX_DOC)
    (doc["hosts"][HOST] if section == "hosts" else doc["profiles"][K])[field] = value
    lines = _lines(doc)
    assert f"{where}: must be a finite number, got {value}" in lines, lines


def test_yaml_nan_spellings_are_refused_from_text() -> None:
    for spelling in (".nan", ".NaN", ".inf", "-.Inf", "1.0e+400"):
        text = MATRIX_TEXT.replace("gpu_memory_gb: 24,", f"gpu_memory_gb: {spelling},", 1)
        assert text != MATRIX_TEXT
        with pytest.raises(MatrixError) as info:
            parse_matrix_text(text)
        assert any("gpu_memory_gb: must be a finite number" in line for line in info.value.lines()), spelling


def test_nan_in_an_integer_field_is_refused() -> None:
    doc = copy.deepcopy(MATRIX_DOC)
    doc["profiles"][K]["context_window"] = math.nan
    assert f"{AT}.context_window: must be a finite number, got nan" in _lines(doc)


# --- 2. gpu_overhead_gb that leaves no memory ------------------------------------------------------------


@pytest.mark.parametrize("overhead", [24, 24.0, 100])
def test_gpu_overhead_at_or_over_the_hosts_memory_is_refused(overhead: float) -> None:
    doc = copy.deepcopy(MATRIX_DOC)
    doc["hosts"][HOST]["gpu_overhead_gb"] = overhead
    lines = _lines(doc)
    assert any(
        line.startswith(f'hosts["{HOST}"].gpu_overhead_gb: {overhead} leaves no GPU memory') for line in lines
    ), lines


def test_a_profile_that_cannot_fit_beside_the_overhead_is_refused() -> None:
    doc = copy.deepcopy(MATRIX_DOC)
    doc["hosts"][HOST]["gpu_overhead_gb"] = 23.5  # 0.5 GB left: no model of the host fits
    lines = _lines(doc)
    assert any(line.startswith(f"{AT}.vram_gb:") and "gpu_overhead_gb 23.5" in line for line in lines), lines
    doc["hosts"][HOST]["gpu_overhead_gb"] = 1.0
    parse_matrix(doc)  # room to spare: accepted


def test_fleet_shows_each_hosts_gpu_overhead(tmp_path: Path) -> None:
    doc = copy.deepcopy(MATRIX_DOC)
    doc["hosts"][HOST]["gpu_overhead_gb"] = 1.5
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    view = FleetView(MatrixStore(path), daily_budget_usd=None, spend_today=lambda _: 0.0)
    status = fleet_status(view, LedgerMirror())
    assert status["hosts"][HOST]["gpu_overhead_gb"] == 1.5
    assert all(h["gpu_overhead_gb"] == 0.0 for hid, h in status["hosts"].items() if hid != HOST)


# --- 3. element types in agents.yaml ---------------------------------------------------------------------

TIERS: dict[str, Any] = {
    "H": {"first_lane": "balanced", "wait_budget_ms": 20000},
    "R": {"first_lane": "fast-chat", "wait_budget_ms": 5000},
    "C": {"first_lane": "code", "wait_budget_ms": 15000},
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fallbacks", [["code"]], "tiers.C.fallbacks[0]: ['code'] is not a group"),
        ("fallbacks", [{"code": 1}], "tiers.C.fallbacks[0]: {'code': 1} is not a group"),
        ("fallbacks", ["code", ["balanced"]], "tiers.C.fallbacks[1]: ['balanced'] is not a group"),
        ("first_lane", ["code"], "tiers.C.first_lane: must be one of"),
        ("first_lane", {"code": 1}, "tiers.C.first_lane: must be one of"),
        ("wait_budget_ms", math.nan, "tiers.C.wait_budget_ms: must be an integer 0..600000, got nan"),
        ("wait_budget_ms", math.inf, "tiers.C.wait_budget_ms: must be an integer 0..600000, got inf"),
        ("wait_budget_ms", [1], "tiers.C.wait_budget_ms: must be an integer"),
    ],
)
def test_a_wrong_element_type_in_agents_is_a_one_line_refusal(
    field: str, value: object, message: str
) -> None:
    tiers = copy.deepcopy(TIERS)
    tiers["C"][field] = value
    with pytest.raises(DirectoryError) as info:
        parse_agent_directory({"tiers": tiers, "agents": {}})
    assert str(info.value).startswith(message), info.value


def test_validate_refuses_a_nested_fallbacks_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS_TEXT.replace("fallbacks: [cloud-code, code, balanced]", "fallbacks: [[code]]"))
    assert cli.main(["validate", "--agents", str(agents)]) == 1
    assert f"{agents}: tiers.C.fallbacks[0]: ['code'] is not a group" in capsys.readouterr().out


def test_hot_reload_refuses_a_nested_fallbacks_list_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(AGENTS_TEXT)
    store = AgentsStore(path)
    good = store.current
    path.write_text(AGENTS_TEXT.replace("fallbacks: [cloud-code, code, balanced]", "fallbacks: [[code]]"))
    caplog.clear()
    assert store.maybe_reload(0.0) == ReloadOutcome.REJECTED
    assert store.current is good
    assert [r for r in caplog.records if r.exc_info] == []  # no traceback
    assert any("tiers.C.fallbacks[0]: ['code'] is not a group" in r.getMessage() for r in caplog.records)


def test_tier_messages_name_fallbacks() -> None:
    with pytest.raises(DirectoryError, match="fallbacks"):
        parse_agent_directory({"tiers": ["H"], "agents": {}})
    with pytest.raises(DirectoryError, match="fallbacks"):
        parse_agent_directory({"tiers": {**TIERS, "C": "code"}, "agents": {}})


# --- 4. duplicate keys -----------------------------------------------------------------------------------


def test_strict_loader_names_a_repeated_key_and_both_lines() -> None:
    with pytest.raises(DuplicateKeyError) as info:
        safe_load_strict("a: 1\nb:\n  x: 1\n  x: 2\n")
    assert str(info.value) == (
        "line 4: key 'x' is repeated (first at line 3); YAML would silently keep only the last one"
    )
    assert safe_load_strict("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n") == {
        "base": {"x": 1},
        "d": {"x": 1, "y": 2},
    }


def test_a_repeated_key_in_agents_is_refused() -> None:
    text = AGENTS_TEXT.replace(
        "    fallbacks: [cloud-code, code, balanced]",
        "    fallbacks: [cloud-code, code, balanced]\n    fallbacks: [code]",
    )
    assert text != AGENTS_TEXT
    with pytest.raises(DirectoryError, match=r"invalid YAML: line \d+: key 'fallbacks' is repeated"):
        parse_agent_directory_yaml(text)


def test_validate_refuses_a_repeated_key_in_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS_TEXT.replace("agents:\n", "agents:\n  webmaster: R\n  webmaster: H\n", 1))
    assert cli.main(["validate", "--agents", str(agents)]) == 1
    assert "key 'webmaster' is repeated" in capsys.readouterr().out


def test_a_repeated_key_in_aliases_is_refused() -> None:
    with pytest.raises(AliasError, match="key 'gpt-4' is repeated"):
        parse_aliases_yaml("aliases:\n  gpt-4: auto\n  gpt-4: code\n")


def test_validate_refuses_a_repeated_key_in_the_litellm_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "litellm_config.yaml"
    text = (REPO / "litellm_config.yaml").read_text(encoding="utf-8")
    config.write_text(text + "\nrouter_settings: {}\n")
    assert cli.main(["validate", "--config", str(config)]) == 1
    assert "key 'router_settings' is repeated" in capsys.readouterr().out


def test_a_repeated_key_in_the_matrix_is_refused() -> None:
    text = MATRIX_TEXT.replace("gpu_memory_gb: 24,", "gpu_memory_gb: 24, gpu_memory_gb: 48,", 1)
    with pytest.raises(MatrixError, match="key 'gpu_memory_gb' is repeated"):
        parse_matrix_text(text)


def test_a_nested_list_in_the_litellm_configs_fallbacks_is_a_problem_not_a_crash() -> None:
    config = yaml.safe_load((REPO / "litellm_config.yaml").read_text(encoding="utf-8"))
    config["router_settings"]["fallbacks"] = [{"code": [["balanced"]]}]
    lines = check_consistency(parse_matrix(copy.deepcopy(MATRIX_DOC)), config)
    assert "router_settings.fallbacks[0]: ['balanced'] is not a model group in model_list" in lines, lines


def test_hot_reload_refuses_nan_in_the_matrix_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX_TEXT)
    store = MatrixStore(path)
    good = store.current
    path.write_text(MATRIX_TEXT.replace("gpu_memory_gb: 24,", "gpu_memory_gb: 24, gpu_overhead_gb: .nan,", 1))
    assert store.maybe_reload(0.0) == ReloadOutcome.REJECTED
    assert store.current is good
    assert store.last_rejection is not None
    assert (
        f'hosts["{HOST}"].gpu_overhead_gb: must be a finite number, got nan' in store.last_rejection.lines()
    )


@pytest.mark.parametrize(
    "text",
    [
        "- a list\n",
        "router_settings: [1]\n",
        "router_settings: {fallbacks: {code: [balanced]}}\n",
        "router_settings: {fallbacks: [{code: [[balanced]]}]}\n",
    ],
)
def test_the_classifier_reads_litellm_fallbacks_of_any_shape_without_crashing(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "litellm_config.yaml"
    path.write_text(text)
    fallbacks = load_litellm_fallbacks(path)
    assert all(isinstance(k, str) and all(isinstance(g, str) for g in v) for k, v in fallbacks.items())


def test_the_classifier_refuses_a_repeated_key_in_the_litellm_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "litellm_config.yaml"
    path.write_text("router_settings: {fallbacks: [{code: [balanced]}]}\nrouter_settings: {}\n")
    assert load_litellm_fallbacks(path) == {}
    assert any("key 'router_settings' is repeated" in r.getMessage() for r in caplog.records)
