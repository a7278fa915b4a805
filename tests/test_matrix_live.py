"""The live overlay (warm states, GPU memory, lockouts) and the fleet probe against real HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web

from capability_matrix import (
    BYTES_PER_GB,
    DEFAULT_MATRIX_PATH,
    GpuDevice,
    GpuReading,
    HostObservation,
    LoadedModel,
    LockoutState,
    Matrix,
    MemorySource,
    WarmState,
    auth_lockout,
    budget_lockout,
    build_overlay,
    derive_host_memory,
    derive_warm_states,
    load_matrix,
    next_auth_lockouts,
    parse_matrix,
    resolve_lockouts,
    sharing_credentials,
    utc_day,
)
from capability_matrix.probe import FleetProbe, NvmlGpuReader, parse_ollama_ps
from tests.harness import served

MATTHEW, FRODO, GANDALF, SAMWISE, ARAGORN = (
    "matthew-100.86.174.11",
    "frodo-100.86.174.12",
    "gandalf-100.86.174.13",
    "samwise-100.86.174.14",
    "aragorn-100.86.174.15",
)
K = f"{MATTHEW}/ollama/qwen3:8b"
CLOUD = "openai-api/openai/gpt-4o"
SHIPPED = load_matrix(DEFAULT_MATRIX_PATH)
SHIPPED_DOC: dict[str, Any] = yaml.safe_load(DEFAULT_MATRIX_PATH.read_text(encoding="utf-8"))
NOW = 1_750_000_000.0


def observe(*loaded: LoadedModel, reachable: bool = True, at: float = NOW) -> HostObservation:
    return HostObservation(MATTHEW, reachable, loaded, at)


QWEN = LoadedModel("qwen3:8b", int(6.5 * BYTES_PER_GB), NOW + 300)

# --- warm state ------------------------------------------------------------------------------------------

WARM_TABLE: list[tuple[str, HostObservation | None, dict[str, float], frozenset[str], WarmState]] = [
    ("never observed", None, {}, frozenset(), WarmState.UNKNOWN),
    ("unreachable", observe(reachable=False), {K: NOW - 1}, frozenset(), WarmState.UNKNOWN),
    ("stale observation", observe(QWEN, at=NOW - 120), {}, frozenset(), WarmState.UNKNOWN),
    ("reachable, nothing loaded", observe(), {}, frozenset(), WarmState.COLD),
    ("other model loaded", observe(LoadedModel("qwen3:30b-a3b", 1, None)), {}, frozenset(), WarmState.COLD),
    ("served recently but evicted", observe(), {K: NOW - 1}, frozenset(), WarmState.COLD),
    (
        "resident, keep-alive expired",
        observe(LoadedModel("qwen3:8b", 1, NOW - 1)),
        {},
        frozenset(),
        WarmState.COLD,
    ),
    ("resident, never served", observe(QWEN), {}, frozenset(), WarmState.WARM),
    ("resident, no expiry given", observe(LoadedModel("qwen3:8b", 1, None)), {}, frozenset(), WarmState.WARM),
    ("resident, served 31 s ago", observe(QWEN), {K: NOW - 31}, frozenset(), WarmState.WARM),
    ("resident, served 10 s ago", observe(QWEN), {K: NOW - 10}, frozenset(), WarmState.HOT),
    ("resident, request in flight", observe(QWEN), {}, frozenset({K}), WarmState.HOT),
]


@pytest.mark.parametrize(
    ("obs", "served", "in_flight", "expected"), [r[1:] for r in WARM_TABLE], ids=[r[0] for r in WARM_TABLE]
)
def test_warm_state_table(
    obs: HostObservation | None, served: dict[str, float], in_flight: frozenset[str], expected: WarmState
) -> None:
    observations = {MATTHEW: obs} if obs is not None else {}
    states = derive_warm_states(SHIPPED, observations, served, NOW, 30.0, in_flight=in_flight, max_age_s=60.0)
    assert states[K] == expected


def test_warm_states_cover_local_profiles_only_and_cloud_keeps_its_declared_state() -> None:
    states = derive_warm_states(SHIPPED, {MATTHEW: observe(QWEN)}, {}, NOW)
    assert set(states) == {k for k, p in SHIPPED.profiles.items() if p.is_local}
    assert states[f"{MATTHEW}/ollama/qwen2.5-coder:7b"] == WarmState.COLD
    assert states[f"{FRODO}/ollama/qwen3:8b"] == WarmState.UNKNOWN
    live = SHIPPED.with_live(build_overlay(SHIPPED, {MATTHEW: observe(QWEN)}, now=NOW))
    assert live.profiles[K].warm_state == WarmState.WARM
    assert live.profiles[CLOUD].warm_state == SHIPPED.profiles[CLOUD].warm_state == WarmState.WARM


def test_untagged_model_matches_ollamas_latest_tag() -> None:
    doc = copy.deepcopy(SHIPPED_DOC)
    doc["profiles"][f"{MATTHEW}/ollama/llama3"] = {**doc["profiles"][K], "model": "llama3"}
    m = parse_matrix(doc)
    states = derive_warm_states(m, {MATTHEW: observe(LoadedModel("llama3:latest", 1, None))}, {}, NOW)
    assert states[f"{MATTHEW}/ollama/llama3"] == WarmState.WARM


# --- GPU memory ------------------------------------------------------------------------------------------


def test_host_memory_prefers_nvml_then_ollama_ps_then_declared() -> None:
    gpu = GpuReading(True, (GpuDevice(0, "H100", 80 * BYTES_PER_GB, 10 * BYTES_PER_GB, 70 * BYTES_PER_GB),))
    observations = {
        MATTHEW: HostObservation(MATTHEW, True, (QWEN,), NOW, gpu=gpu),
        FRODO: HostObservation(FRODO, True, (LoadedModel("qwen3:8b", 6 * BYTES_PER_GB, None),), NOW),
        GANDALF: HostObservation(GANDALF, False, (), NOW, "refused"),
        SAMWISE: HostObservation(SAMWISE, True, (), NOW, gpu=GpuReading.unavailable("NVML unavailable: x")),
    }
    memory = derive_host_memory(SHIPPED, observations)
    assert (memory[MATTHEW].source, memory[MATTHEW].total_gb, memory[MATTHEW].used_gb) == (
        MemorySource.NVML,
        80,
        10,
    )
    assert (memory[FRODO].source, memory[FRODO].total_gb, memory[FRODO].free_gb) == (
        MemorySource.OLLAMA_PS,
        16,
        10,
    )
    assert (memory[GANDALF].source, memory[GANDALF].used_gb, memory[GANDALF].free_gb) == (
        MemorySource.DECLARED,
        None,
        48,
    )
    assert memory[SAMWISE].source == MemorySource.OLLAMA_PS


def test_free_memory_is_the_smaller_of_the_drivers_and_total_less_loaded_models() -> None:
    """Ollama's updateFreeSpace: the driver's figure lags an unload and misses a load in progress, so with
    both readings the larger "used" wins (the smaller free)."""
    driver = GpuReading(
        True, (GpuDevice(0, "H100", 80 * BYTES_PER_GB, 10 * BYTES_PER_GB, 70 * BYTES_PER_GB),)
    )
    loading = (LoadedModel("qwen3:8b", 30 * BYTES_PER_GB, None),)  # Ollama predicts 30 GB for it
    memory = derive_host_memory(SHIPPED, {MATTHEW: HostObservation(MATTHEW, True, loading, NOW, gpu=driver)})
    assert (memory[MATTHEW].source, memory[MATTHEW].used_gb, memory[MATTHEW].free_gb) == (
        MemorySource.NVML,
        30,
        50,
    )
    assert memory[ARAGORN].source == MemorySource.DECLARED


# --- lockouts --------------------------------------------------------------------------------------------

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


@pytest.mark.parametrize(
    ("spend", "budget", "day", "locked", "expected"),
    [
        (4.99, 5.0, D1, None, None),  # under budget
        (5.0, 5.0, D1, None, D1),  # reached: locked for the day
        (1.0, 5.0, D1, D1, D1),  # still that day: stays locked even if spend is corrected down
        (0.0, 5.0, D2, D1, None),  # next UTC day: cleared
        (9.0, 5.0, D2, D1, D2),  # next day and already over again: locked for the new day
        (1e9, None, D1, None, None),  # no budget configured
    ],
)
def test_budget_lockout(
    spend: float, budget: float | None, day: date, locked: date | None, expected: date | None
) -> None:
    assert budget_lockout(spend, budget, day, locked) == expected


def test_utc_day_is_utc() -> None:
    assert utc_day(1_772_409_599.0) == date(2026, 3, 1)  # 23:59:59 UTC
    assert utc_day(1_772_409_600.0) == date(2026, 3, 2)


@pytest.mark.parametrize(
    ("locked", "status", "expected"),
    [(False, 401, True), (False, 403, True), (True, 200, False), (True, 429, True), (True, 500, True),
     (True, None, True), (False, 500, False)],
)  # fmt: skip
def test_auth_lockout(locked: bool, status: int | None, expected: bool) -> None:
    assert auth_lockout(locked, status) is expected


def test_next_auth_lockouts_locks_and_clears_the_whole_credential_group() -> None:
    group = sharing_credentials(SHIPPED, CLOUD)
    locked = next_auth_lockouts(SHIPPED, {}, CLOUD, 401)
    assert locked == dict.fromkeys(group, "provider answered 401")
    # A second rejection keeps the first reason; a 429 or 5xx says nothing about the key.
    assert next_auth_lockouts(SHIPPED, {CLOUD: "first"}, group[1], 403)[CLOUD] == "first"
    assert next_auth_lockouts(SHIPPED, locked, CLOUD, 429) == locked
    assert next_auth_lockouts(SHIPPED, locked, CLOUD, 500) == locked
    # A success from a locked profile clears the group, and leaves other books alone.
    other = {K: "kept"}
    assert next_auth_lockouts(SHIPPED, {**locked, **other}, group[2], 200) == other
    # A success from a profile that was not locked changes nothing.
    assert next_auth_lockouts(SHIPPED, other, CLOUD, 200) == other


def test_resolve_lockouts_and_apply_them() -> None:
    group = sharing_credentials(SHIPPED, CLOUD)
    assert len(group) == 6 and all(not SHIPPED.profiles[k].is_local for k in group)
    auth = dict.fromkeys(group[:2], "401 from http://127.0.0.1:11510/v1")
    lockouts = resolve_lockouts(SHIPPED, auth=auth, budget_reason="daily spend 5.02 USD reached budget 5.00")
    assert {k: v.state for k, v in lockouts.items()} == {
        **dict.fromkeys(group[:2], LockoutState.AUTH),
        **dict.fromkeys(group[2:], LockoutState.BUDGET),
    }
    overlay = build_overlay(SHIPPED, {}, now=NOW, auth=auth, budget_reason="over")
    live = SHIPPED.with_live(overlay)
    assert live.profiles[group[0]].lockout_state == LockoutState.AUTH
    assert live.profiles[group[3]].lockout_state == LockoutState.BUDGET
    assert live.profiles[K].lockout_state == LockoutState.NONE  # local profiles cost nothing
    body = orjson.loads(orjson.dumps(overlay.to_json()))
    assert body["lockouts"][group[0]] == {"state": "auth", "reason": "401 from http://127.0.0.1:11510/v1"}
    assert body["hosts"][MATTHEW] == {
        "total_gb": 24.0,
        "used_gb": None,
        "free_gb": 24.0,
        "source": "declared",
    }


# --- /api/ps parsing -------------------------------------------------------------------------------------

PS_BODY = {
    "models": [
        {
            "name": "qwen3:8b",
            "model": "qwen3:8b",
            "size": 7_000_000_000,
            "digest": "500a1f067a9f",
            "details": {"family": "qwen3", "parameter_size": "8.2B", "quantization_level": "Q4_K_M"},
            "expires_at": "2025-06-15T17:31:40.123456789-07:00",
            "size_vram": 6_979_321_856,
            "context_length": 4096,
        },
        {"name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size_vram": 0, "expires_at": "bogus"},
    ]
}


def test_parse_ollama_ps() -> None:
    loaded = parse_ollama_ps(orjson.dumps(PS_BODY))
    assert (loaded[0].name, loaded[0].size_vram_bytes) == ("qwen3:8b", 6_979_321_856)
    assert loaded[0].expires_at == pytest.approx(1_750_033_900.123456)  # 17:31:40.123456789-07:00
    assert loaded[1] == LoadedModel("qwen2.5-coder:7b", 0, None)
    assert parse_ollama_ps(b'{"models": null}') == ()


@pytest.mark.parametrize(
    "body", [b"<html>", b"[]", b'{"running": []}', b'{"models": "x"}', b'{"models": [{"size_vram": 1}]}',
             b'{"models": [{"name": "a", "size_vram": "big"}]}', b'{"models": [3]}'],
)  # fmt: skip
def test_parse_ollama_ps_rejects_garbage(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ollama_ps(body)


# --- the probe against real servers ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def matrix_with_bases(bases: dict[str, str]) -> Matrix:
    doc = copy.deepcopy(SHIPPED_DOC)
    for host_id, base in bases.items():
        doc["hosts"][host_id]["api_base"] = base
    for p in doc["profiles"].values():
        if p["host_id"] in bases:
            p["api_base"] = bases[p["host_id"]]
    return parse_matrix(doc)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    async with contextlib.AsyncExitStack() as servers:

        async def start(handler: Handler) -> str:
            app = web.Application()
            app.router.add_get("/api/ps", handler)
            return await servers.enter_async_context(served(app))

        yield start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def json_handler(body: object, status: int = 200) -> Handler:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    return handle


class FixedGpu:
    """A stand-in for this machine's GPU (the test machines have none)."""

    def read(self) -> GpuReading:
        return GpuReading(
            True, (GpuDevice(0, "NVIDIA H100", 80 * BYTES_PER_GB, 20 * BYTES_PER_GB, 60 * BYTES_PER_GB),)
        )


async def test_probe_polls_every_host_and_never_raises(
    serve: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text='{"models": []}')

    async def garbage(_request: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome to nginx!</html>", content_type="text/html")

    bases = {
        MATTHEW: await serve(json_handler(PS_BODY)),
        FRODO: await serve(garbage),
        GANDALF: f"http://127.0.0.1:{closed_port()}",
        SAMWISE: await serve(slow),
        ARAGORN: await serve(json_handler({"error": "boom"}, status=500)),
    }
    matrix = matrix_with_bases(bases)
    probe = FleetProbe(lambda: matrix, session, timeout_s=0.2, gpu_reader=FixedGpu(), local_host_id=MATTHEW)
    try:
        observations = await probe.poll_once(NOW)
    finally:
        release.set()

    assert set(observations) == set(matrix.hosts)
    m = observations[MATTHEW]
    assert m.reachable and m.observed_at == NOW and m.error == ""
    assert [x.name for x in m.loaded] == ["qwen3:8b", "qwen2.5-coder:7b"]
    assert m.gpu is not None and m.gpu.available
    assert not observations[FRODO].reachable and "not an /api/ps answer" in observations[FRODO].error
    assert not observations[GANDALF].reachable and "ClientConnectorError" in observations[GANDALF].error
    assert not observations[SAMWISE].reachable and "within the timeout" in observations[SAMWISE].error
    assert not observations[ARAGORN].reachable and "HTTP 500" in observations[ARAGORN].error
    assert probe.latest == observations

    overlay = build_overlay(matrix, observations, now=NOW, last_served={K: NOW - 5})
    assert overlay.warm_states[K] == WarmState.HOT
    assert overlay.warm_states[f"{MATTHEW}/ollama/qwen2.5-coder:7b"] == WarmState.WARM  # expiry unknown
    assert overlay.warm_states[f"{MATTHEW}/ollama/qwen3:30b-a3b"] == WarmState.COLD
    assert {overlay.warm_states[f"{h}/ollama/qwen3:8b"] for h in (FRODO, GANDALF, SAMWISE, ARAGORN)} == {
        WarmState.UNKNOWN
    }
    assert overlay.memory[MATTHEW].source == MemorySource.NVML and overlay.memory[MATTHEW].used_gb == 20
    assert overlay.memory[FRODO].source == MemorySource.DECLARED


async def test_probe_run_reports_rounds_and_follows_matrix_reloads(
    serve: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    first = matrix_with_bases({MATTHEW: await serve(json_handler(PS_BODY))})
    second = matrix_with_bases({MATTHEW: await serve(json_handler({"models": []}))})
    current = [first]
    rounds: list[dict[str, HostObservation]] = []
    two_rounds = asyncio.Event()

    def on_update(observations: dict[str, HostObservation]) -> None:
        rounds.append(observations)
        current[0] = second  # an operator edit lands between rounds
        if len(rounds) == 2:
            two_rounds.set()
        if len(rounds) == 1:
            raise RuntimeError("a buggy consumer must not stop the probe")

    probe = FleetProbe(lambda: current[0], session, timeout_s=0.2)
    task = asyncio.create_task(probe.run(0.01, on_update))
    try:
        await asyncio.wait_for(two_rounds.wait(), timeout=5.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(rounds[0][MATTHEW].loaded) == 2
    assert rounds[1][MATTHEW].reachable and rounds[1][MATTHEW].loaded == ()


def test_nvml_reader_on_this_machine_reports_cleanly() -> None:
    reader = NvmlGpuReader()
    try:
        reading = reader.read()
        if reading.available:  # a GPU machine: real figures
            assert reading.devices and all(d.total_bytes > 0 for d in reading.devices)
        else:  # the usual test machine: no library or driver, and it says so
            assert reading.devices == () and reading.reason.startswith("NVML")
            assert reader.read() == reading  # the failure is remembered, not retried every poll
    finally:
        reader.close()


def test_residency_is_the_polls_even_after_an_answer() -> None:
    from capability_matrix import (
        DEFAULT_MATRIX_PATH,
        HostObservation,
        WarmState,
        derive_warm_states,
        load_matrix,
    )

    matrix = load_matrix(DEFAULT_MATRIX_PATH)
    key = "matthew-100.86.174.11/ollama/qwen3:8b"
    nothing_loaded = {
        "matthew-100.86.174.11": HostObservation("matthew-100.86.174.11", True, (), observed_at=100.0)
    }
    assert derive_warm_states(matrix, nothing_loaded, {key: 99.0}, now=101.0)[key] is WarmState.COLD
    assert derive_warm_states(matrix, nothing_loaded, {key: 100.5}, now=101.0)[key] is WarmState.COLD
