"""The matrix loader, schema and hot-reloading store: the shipped fleet and every kind of rejection."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from capability_matrix import (
    DEFAULT_MATRIX_PATH,
    HardwareClass,
    LiveOverlay,
    Lockout,
    LockoutState,
    Matrix,
    MatrixError,
    MatrixStore,
    Problem,
    ReloadOutcome,
    WarmState,
    load_matrix,
    matrix_schema,
    parse_matrix,
    parse_matrix_text,
    watch,
)

K = "matthew-100.86.174.11/ollama/qwen3:8b"
HOST = "matthew-100.86.174.11"
SHIPPED_TEXT = DEFAULT_MATRIX_PATH.read_text(encoding="utf-8")
SHIPPED_DOC: dict[str, Any] = yaml.safe_load(SHIPPED_TEXT)

Doc = dict[str, Any]


def rejection(doc: object) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        parse_matrix(doc)
    return info.value


# --- the shipped fleet -----------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(matrix_schema())


def test_shipped_matrix_loads_with_the_specified_fleet() -> None:
    m = load_matrix(DEFAULT_MATRIX_PATH)
    assert m.schema_version == "1.0"
    assert len(m.profiles) == 23
    local = [p for p in m.profiles.values() if p.is_local]
    cloud = [p for p in m.profiles.values() if not p.is_local]
    assert len(local) == 17 and len(cloud) == 6
    assert set(m.lanes()) == {"fast-chat", "balanced", "code", "cloud-fast", "cloud-balanced", "cloud-code"}
    assert {p.model for p in m.in_lane("fast-chat")} == {"qwen3:8b"}
    assert {p.model for p in m.in_lane("balanced")} == {"qwen3:30b-a3b", "qwen2.5:32b"}
    assert {p.model for p in m.in_lane("code")} == {"qwen2.5-coder:7b", "qwen2.5-coder:32b"}
    assert {p.model for p in m.in_lane("cloud-code")} == {"gpt-4.1-mini", "o4-mini"}
    assert all(p.requires_think_false for p in m.in_lane("fast-chat"))
    assert len(m.hosts) == 5
    assert sorted(h.api_base for h in m.hosts.values()) == [
        f"http://127.0.0.1:{p}" for p in range(11501, 11506)
    ]
    assert any(p.hardware_class == HardwareClass.OFFLOAD for p in local)
    assert any(p.preemptible for p in local)
    for p in local:
        assert p.vram_gb <= m.hosts[p.host_id].gpu_memory_gb
        assert 16 <= m.hosts[p.host_id].gpu_memory_gb <= 80
    for p in cloud:
        assert (p.host_id, p.hardware_class, p.vram_gb) == ("openai-api", HardwareClass.CLOUD_GPU, 0.0)
        assert p.api_base == "http://127.0.0.1:11510/v1"
    assert len({(p.speed_score, p.quality_score) for p in m.profiles.values()}) > 15


def test_matrix_to_json_is_the_capability_matrix_body() -> None:
    m = load_matrix(DEFAULT_MATRIX_PATH)
    body = orjson.loads(orjson.dumps(m.to_json()))
    assert set(body) == {"schema_version", "count", "profiles"}
    assert body["count"] == len(body["profiles"]) == 23
    assert body["profiles"][K] == {k: v for k, v in SHIPPED_DOC["profiles"][K].items()}
    # What /capability-matrix shows round-trips through the schema: it is the document's own profile shape.
    assert parse_matrix({**SHIPPED_DOC, "profiles": body["profiles"]}) == m


def test_a_declared_load_time_is_the_rankers_prior_and_the_simulators_load() -> None:
    from torchrouter.sim.spec import fleet_spec_from_matrix
    from torchrouter_core.ranker.scorers import load_estimate_s

    doc = copy.deepcopy(SHIPPED_DOC)
    doc["profiles"][K]["load_time_s"] = 31.5  # a slow disk: 6.5 GB at about 0.2 GB/s
    m = parse_matrix(doc)
    assert m.profiles[K].load_time_s == 31.5 and m.to_json()["profiles"][K]["load_time_s"] == 31.5
    assert load_estimate_s(m.profiles[K]) == 31.5
    other = next(p for k, p in m.profiles.items() if p.is_local and k != K)
    assert other.load_time_s is None and load_estimate_s(other) == 2.0 + 0.4 * other.vram_gb  # the default
    spec = fleet_spec_from_matrix(doc, cloud_api_key="k")
    host = next(h for h in spec.hosts if h.host_id == HOST)
    model = host.model("qwen3:8b")
    assert model is not None and model.load_s == 31.5
    assert parse_matrix({**doc, "profiles": m.to_json()["profiles"]}) == m  # round-trips


def test_matrix_is_immutable_and_independent_of_its_inputs() -> None:
    m = load_matrix(DEFAULT_MATRIX_PATH)
    with pytest.raises(TypeError):
        m.profiles["x"] = m.profiles[K]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.profiles[K].speed_score = 1.0  # type: ignore[misc]
    profiles = dict(m.profiles)
    copy_ = Matrix(m.schema_version, m.hosts, profiles)
    profiles.clear()
    assert len(copy_.profiles) == 23
    assert m.in_lane("no-such-lane") == ()


def test_with_live_applies_warm_states_and_lockouts_without_lifting_declared_ones() -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    codex_key = "frodo-100.86.174.12/ollama/qwen3:8b"
    doc["profiles"][codex_key]["lockout_state"] = "codex"
    m = parse_matrix(doc)
    overlay = LiveOverlay(
        warm_states={K: WarmState.HOT},
        lockouts={
            codex_key: Lockout(LockoutState.AUTH, "401"),
            "openai-api/openai/gpt-4o": Lockout(LockoutState.BUDGET, "spent"),
        },
    )
    live = m.with_live(overlay)
    assert live.profiles[K].warm_state == WarmState.HOT
    assert live.profiles[codex_key].lockout_state == LockoutState.CODEX
    assert live.profiles["openai-api/openai/gpt-4o"].lockout_state == LockoutState.BUDGET
    assert live.profiles["openai-api/openai/gpt-4o"].warm_state == WarmState.WARM
    assert m.profiles[K].warm_state == WarmState.UNKNOWN  # the original is untouched
    assert live.in_lane("fast-chat")[0].warm_state == WarmState.HOT


# --- rejections: one clear line per problem --------------------------------------------------------------


def _set(field: str, value: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["profiles"][K][field] = value

    return mutate


def _delete(field: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        del doc["profiles"][K][field]

    return mutate


def _rename(new_key: str, **fields: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["profiles"][new_key] = {**doc["profiles"].pop(K), **fields}

    return mutate


def _host(field: str, value: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["hosts"][HOST][field] = value

    return mutate


def _top(field: str, value: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc[field] = value

    return mutate


BILBO = "bilbo-100.86.174.99/ollama/qwen3:8b"

AT = f'profiles["{K}"]'

REJECTIONS = [
    ("wrong type", _set("context_window", "big"), f"{AT}.context_window: 'big' is not of type 'integer'"),
    ("bool is not int", _set("context_window", True), f"{AT}.context_window: True is not of type"),
    ("wrong type bool", _set("supports_tools", "yes"), f"{AT}.supports_tools: 'yes' is not of type"),
    ("score too high", _set("speed_score", 1.4), f"{AT}.speed_score: 1.4 is greater than the maximum of 1"),
    ("score negative", _set("quality_score", -0.1), f"{AT}.quality_score: -0.1 is less than the minimum"),
    ("negative vram", _set("vram_gb", -1), f"{AT}.vram_gb: -1 is less than the minimum of 0"),
    (
        "bad warm_state",
        _set("warm_state", "tepid"),
        f"{AT}.warm_state: 'tepid' is not one of ['cold', 'warm', 'hot', 'unknown']",
    ),
    (
        "bad lockout_state",
        _set("lockout_state", "maybe"),
        f"{AT}.lockout_state: 'maybe' is not one of ['none', 'codex', 'auth', 'budget']",
    ),
    (
        "bad hardware_class",
        _set("hardware_class", "tpu"),
        f"{AT}.hardware_class: 'tpu' is not one of ['local_gpu', 'cloud_gpu', 'offload']",
    ),
    ("bad lane", _set("lane", "Fast Chat"), f"{AT}.lane: 'Fast Chat' does not match"),
    ("missing field", _delete("lane"), f"{AT}.lane: required field is missing"),
    (
        "unknown field",
        _set("speed_scor", 0.5),
        f"{AT}.speed_scor: unknown field (did you mean 'speed_score'?)",
    ),
    (
        "bad key",
        _rename("qwen3-on-matthew"),
        'profiles["qwen3-on-matthew"]: key must have the form <host_id>/<provider>/<model>',
    ),
    (
        "key disagrees with fields",
        _set("model", "qwen3:14b"),
        f"{AT}: key must equal host_id/provider/model, here '{HOST}/ollama/qwen3:14b'",
    ),
    (
        "undeclared host",
        _rename(BILBO, host_id="bilbo-100.86.174.99"),
        f"profiles[\"{BILBO}\"].host_id: 'bilbo-100.86.174.99' is not declared in hosts (declared: {HOST}, ",
    ),
    (
        "api_base differs from host",
        _set("api_base", "http://127.0.0.1:11502"),
        f"{AT}.api_base: 'http://127.0.0.1:11502' differs from hosts['{HOST}'].api_base "
        "'http://127.0.0.1:11501'",
    ),
    ("bad api_base", _set("api_base", "localhost:11501"), f"{AT}.api_base: 'localhost:11501' does not"),
    ("vram over capacity", _set("vram_gb", 30), f"{AT}.vram_gb: 30 is more than hosts['{HOST}']"),
    (
        "load time zero",
        _set("load_time_s", 0),
        f"{AT}.load_time_s: 0 is less than or equal to the minimum of 0",
    ),
    (
        "load time negative",
        _set("load_time_s", -5),
        f"{AT}.load_time_s: -5 is less than or equal to the minimum",
    ),
    ("load time text", _set("load_time_s", "30s"), f"{AT}.load_time_s: '30s' is not of type 'number'"),
    ("load time NaN", _set("load_time_s", float("nan")), f"{AT}.load_time_s: must be a finite number"),
    ("load time an hour+", _set("load_time_s", 3601), f"{AT}.load_time_s: 3601 is greater than the maximum"),
    (
        "host out of range",
        _host("num_parallel", 0),
        f'hosts["{HOST}"].num_parallel: 0 is less than the minimum of 1',
    ),
    ("host unknown field", _host("gpus", 2), f'hosts["{HOST}"].gpus: unknown field'),
    ("schema_version float", _top("schema_version", 1.0), "schema_version: 1.0 is not of type 'string'"),
    ("top-level typo", _top("profile", {}), "profile: unknown field (did you mean 'profiles'?)"),
    ("profile not a mapping", _set("lane", ["fast-chat"]), f"{AT}.lane: ['fast-chat'] is not of type"),
]


@pytest.mark.parametrize(("mutate", "expected"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_each_kind_of_bad_field_is_rejected_with_a_clear_line(
    mutate: Callable[[Doc], None], expected: str
) -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    mutate(doc)
    lines = rejection(doc).lines()
    assert any(line.startswith(expected) for line in lines), lines


def test_problems_name_profile_field_and_rule() -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    doc["profiles"][K]["speed_score"] = 1.4
    (problem,) = rejection(doc).problems
    assert problem == Problem(K, "speed_score", "1.4 is greater than the maximum of 1")
    assert str(problem) == f'profiles["{K}"].speed_score: 1.4 is greater than the maximum of 1'


def test_every_problem_is_reported_in_file_order() -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    keys = list(doc["profiles"])
    doc["profiles"][keys[5]]["warm_state"] = "tepid"
    doc["profiles"][keys[0]]["speed_score"] = 2
    doc["profiles"][keys[20]]["colour"] = "red"
    doc["hosts"][HOST]["gpu_memory_gb"] = "lots"
    err = rejection(doc)
    assert [(p.profile, p.field) for p in err.problems] == [
        (None, f'hosts["{HOST}"].gpu_memory_gb'),
        (keys[0], "speed_score"),
        (keys[5], "warm_state"),
        (keys[20], "colour"),
    ]
    assert str(err).splitlines()[0] == "capability matrix rejected: 4 problems"


def test_a_stub_profile_gets_one_line_listing_its_missing_fields() -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    doc["profiles"]["x-1/ollama/m"] = {"lane": "code"}
    lines = rejection(doc).lines()
    assert 'profiles["x-1/ollama/m"]: required fields are missing: host_id, provider, model,' in lines[0]


def test_not_a_mapping() -> None:
    assert rejection(["a"]).lines() == [
        "the document must be a mapping with schema_version, hosts and profiles"
    ]


def test_yaml_syntax_error_is_a_matrix_error_with_its_line() -> None:
    broken = SHIPPED_TEXT.replace("    lane: code\n", "    lane: [code\n", 1)
    line = broken[: broken.index("lane: [code")].count("\n") + 1
    with pytest.raises(MatrixError) as info:
        parse_matrix_text(broken, source="matrix.yaml")
    (problem,) = info.value.problems
    assert problem.rule.startswith("YAML syntax error at line ")
    reported = int(problem.rule.split("line ")[1].split(",")[0])
    assert line <= reported <= line + 2
    assert "matrix.yaml" in str(info.value)


def test_duplicate_profile_key_is_not_silently_dropped() -> None:
    block = SHIPPED_TEXT[SHIPPED_TEXT.index(f"  {K}:") :].split("  matthew-100.86.174.11/ollama/qwen2.5")[0]
    text = SHIPPED_TEXT.replace("\n  # --- cloud", f"\n{block}\n  # --- cloud", 1)
    with pytest.raises(MatrixError) as info:
        parse_matrix_text(text)
    (problem,) = info.value.problems
    assert f"key '{K}' is repeated (first at line " in problem.rule


def test_unreadable_file() -> None:
    with pytest.raises(MatrixError, match=r"cannot read .*nope\.yaml"):
        load_matrix("/nonexistent/nope.yaml")


# --- the hot-reloading store -----------------------------------------------------------------------------


@dataclasses.dataclass
class Calls:
    reloads: list[Matrix] = dataclasses.field(default_factory=list)
    rejects: list[MatrixError] = dataclasses.field(default_factory=list)


@pytest.fixture
def matrix_file(tmp_path: Path) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(SHIPPED_TEXT, encoding="utf-8")
    return path


def make_store(path: Path, calls: Calls) -> MatrixStore:
    return MatrixStore(
        path, on_reload=calls.reloads.append, on_reject=calls.rejects.append, min_interval_s=1.0
    )


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


GOOD_EDIT = SHIPPED_TEXT.replace("    speed_score: 0.9\n", "    speed_score: 0.7\n", 1)
BAD_EDIT = SHIPPED_TEXT.replace("    speed_score: 0.9\n", "    speed_score: 1.4\n", 1)


def test_store_reloads_an_atomic_rename_edit(matrix_file: Path) -> None:
    calls = Calls()
    store = make_store(matrix_file, calls)
    assert store.maybe_reload(0.0) is ReloadOutcome.UNCHANGED
    write_atomically(matrix_file, GOOD_EDIT)
    assert store.maybe_reload(0.5) is ReloadOutcome.UNCHANGED  # within min_interval_s: not even looked at
    assert store.maybe_reload(1.0) is ReloadOutcome.RELOADED
    assert store.current.profiles[K].speed_score == 0.7
    assert calls.reloads == [store.current] and store.generation == 1
    assert store.maybe_reload(2.0) is ReloadOutcome.UNCHANGED


def test_store_reloads_a_same_size_in_place_edit(matrix_file: Path) -> None:
    # Same size, same inode, and quite possibly the same mtime tick: only the content tells.
    store = make_store(matrix_file, Calls())
    matrix_file.write_text(GOOD_EDIT, encoding="utf-8")
    assert store.maybe_reload(0.0) is ReloadOutcome.RELOADED
    assert store.current.profiles[K].speed_score == 0.7


def test_store_rejects_a_bad_edit_once_keeps_the_last_good_and_recovers(
    matrix_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()
    store = make_store(matrix_file, calls)
    good = store.current
    write_atomically(matrix_file, BAD_EDIT)
    with caplog.at_level(logging.WARNING, logger="capability_matrix.store"):
        assert store.maybe_reload(0.0) is ReloadOutcome.REJECTED
        assert store.maybe_reload(5.0) is ReloadOutcome.UNCHANGED
        write_atomically(matrix_file, BAD_EDIT)  # saved again, same bad content: not news
        assert store.maybe_reload(10.0) is ReloadOutcome.UNCHANGED
    assert store.current is good
    assert len(calls.rejects) == 1 and store.last_rejection is calls.rejects[0]
    assert calls.rejects[0].lines() == [f'profiles["{K}"].speed_score: 1.4 is greater than the maximum of 1']
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "speed_score: 1.4 is greater than the maximum of 1" in warnings[0].getMessage()
    assert "keeping the last good matrix (23 profiles)" in warnings[0].getMessage()

    write_atomically(matrix_file, GOOD_EDIT)
    assert store.maybe_reload(15.0) is ReloadOutcome.RELOADED
    assert store.current.profiles[K].speed_score == 0.7 and store.last_rejection is None
    assert calls.reloads == [store.current]


def test_store_rejects_a_half_written_file_then_takes_the_finished_one(matrix_file: Path) -> None:
    calls = Calls()
    store = make_store(matrix_file, calls)
    data = GOOD_EDIT.encode()
    with open(matrix_file, "r+b") as f:  # an in-place writer caught halfway
        f.write(data[: len(data) // 2])
        f.truncate()
    assert store.maybe_reload(0.0) is ReloadOutcome.REJECTED
    assert store.current.profiles[K].speed_score == 0.9
    matrix_file.write_bytes(data)
    assert store.maybe_reload(1.0) is ReloadOutcome.RELOADED
    assert store.current.profiles[K].speed_score == 0.7
    assert len(calls.rejects) == 1


def test_store_survives_the_file_disappearing(matrix_file: Path) -> None:
    calls = Calls()
    store = make_store(matrix_file, calls)
    matrix_file.unlink()
    assert store.maybe_reload(0.0) is ReloadOutcome.REJECTED
    assert store.maybe_reload(1.0) is ReloadOutcome.UNCHANGED  # logged once
    assert "cannot read" in calls.rejects[0].lines()[0]
    matrix_file.write_text(SHIPPED_TEXT, encoding="utf-8")
    assert store.maybe_reload(2.0) is ReloadOutcome.UNCHANGED  # same content as in force
    assert store.last_rejection is None and len(store.current.profiles) == 23


def test_store_startup_fails_loudly(matrix_file: Path, tmp_path: Path) -> None:
    matrix_file.write_text(BAD_EDIT, encoding="utf-8")
    with pytest.raises(MatrixError, match=r"speed_score: 1\.4 is greater"):
        MatrixStore(matrix_file)
    with pytest.raises(MatrixError, match="cannot read"):
        MatrixStore(tmp_path / "missing.yaml")


async def test_watch_picks_up_an_edit(matrix_file: Path) -> None:
    reloaded = asyncio.Event()
    store = MatrixStore(matrix_file, on_reload=lambda _m: reloaded.set(), min_interval_s=0.0)
    task = asyncio.create_task(watch(store, 0.01))
    try:
        write_atomically(matrix_file, GOOD_EDIT)
        await asyncio.wait_for(reloaded.wait(), timeout=2.0)
        assert store.current.profiles[K].speed_score == 0.7
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_package_imports_no_server_code_and_no_litellm() -> None:
    code = (
        "import sys, capability_matrix; "
        "print(sorted(m for m in sys.modules if m.startswith(('litellm', 'aiohttp.web'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
