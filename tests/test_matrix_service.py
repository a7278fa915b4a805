"""The capability matrix as a running service: served live, hot-reloaded in both processes, kept live.

These tests edit the session's matrix file, which the session LiteLLM's hooks also read; each one
restores it before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from capability_matrix import HostObservation, load_matrix
from tests.conftest import ClassifierFactory, Stack
from tests.harness import REPO, eventually, wait_for_event

SPEC_KEY = "matthew-100.86.174.11/ollama/qwen3:8b"
PROFILE_FIELDS = {
    "lane", "host_id", "provider", "model", "api_base", "context_window", "supports_tools", "reasoning",
    "requires_think_false", "hardware_class", "preemptible", "lockout_state", "warm_state", "vram_gb",
    "speed_score", "quality_score",
}  # fmt: skip


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def chat(
    http: aiohttp.ClientSession, url: str, agent: str, **extra: Any
) -> tuple[int, dict[str, str], Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Status in one line?"}], **extra}
    async with http.post(url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": agent}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.asynccontextmanager
async def edited_matrix(stack: Stack) -> AsyncIterator[str]:
    original = stack.matrix_path.read_text()
    try:
        yield original
    finally:
        # The hooks look at the file on every routing call: the next request anywhere sees the original.
        # (A classifier reads it within a second, but each test starts its own.)
        write_atomically(stack.matrix_path, original)


async def test_capability_matrix_endpoint_serves_the_spec_example(classifier_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        body = await get_json(http, classifier_url + "/capability-matrix")
    assert body["count"] == 23 == len(body["profiles"])
    assert body["schema_version"]
    profile = body["profiles"][SPEC_KEY]
    assert profile.keys() >= PROFILE_FIELDS
    assert profile["lane"] == "fast-chat" and profile["requires_think_false"] is True
    assert profile["warm_state"] in {
        "cold",
        "warm",
        "hot",
    }  # observed by the probe, not the declared "unknown"
    host = body["live"]["hosts"]["matthew-100.86.174.11"]
    assert host["source"] == "ollama_ps" and host["total_gb"] == 24  # the probe reached it (see above)


async def test_nvml_absent_falls_back_and_says_so(make_classifier: ClassifierFactory) -> None:
    # This machine has no GPU: asking the probe to read NVML for a host must degrade, not fail.
    url = await make_classifier(local_host_id="matthew-100.86.174.11")
    async with aiohttp.ClientSession() as http:
        body = await get_json(http, url + "/capability-matrix")
        status, _, _ = await chat(http, url, "inbox-triage")
    assert status == 200
    hosts = body["live"]["hosts"]
    sources = {h["source"] for h in hosts.values()}
    assert "nvml" not in sources and sources <= {"ollama_ps", "declared"}
    # NVML was asked for this host (and only this one), and the answer says why it could not help.
    assert hosts["matthew-100.86.174.11"]["nvml_unavailable"]
    assert not any("nvml_unavailable" in h for name, h in hosts.items() if name != "matthew-100.86.174.11")


async def test_hot_reload_good_and_bad_edits_under_traffic(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    url = await make_classifier(probe_interval_s=0.2)
    statuses: list[int] = []
    models: list[str] = []
    stop = asyncio.Event()

    async with aiohttp.ClientSession() as http, edited_matrix(stack) as original:

        async def traffic() -> None:
            while not stop.is_set():
                status, headers, _ = await chat(http, url, "inbox-triage", max_tokens=8)
                statuses.append(status)
                models.append(headers.get("X-Router-Model", ""))

        runner = asyncio.create_task(traffic())
        doc = yaml.safe_load(original)
        locked = [k for k, p in doc["profiles"].items() if p["lane"] == "fast-chat" and k != SPEC_KEY]
        for key in locked:
            doc["profiles"][key]["lockout_state"] = "codex"
        write_atomically(stack.matrix_path, yaml.safe_dump(doc, sort_keys=False))

        async def classifier_sees_codex() -> bool:
            body = await get_json(http, url + "/capability-matrix")
            return all(body["profiles"][k]["lockout_state"] == "codex" for k in locked)

        await eventually(classifier_sees_codex, what="classifier reload")
        mark = len(models)
        await eventually(lambda: len(models) > mark + 15, what="traffic after reload")
        # The hooks reload within a second; then every fast-chat answer comes from the one unlocked profile.
        assert set(models[-5:]) == {SPEC_KEY}, models[-10:]

        broken = original.replace("speed_score: 0.9", "speed_score: 7", 1)
        assert broken != original
        write_atomically(stack.matrix_path, broken)

        async def classifier_rejected_it() -> bool:
            async with http.get(url + "/metrics") as resp:
                return 'classifier_matrix_reloads_total{outcome="rejected"} 1.0' in await resp.text()

        await eventually(classifier_rejected_it, what="the classifier's rejection of the bad edit")
        mark = len(models)  # every request from here on was routed after both processes saw the bad edit
        await eventually(lambda: len(models) > mark + 10, what="traffic after the bad edit")
        assert set(models[-5:]) == {SPEC_KEY}, "the hooks must keep the last good matrix"
        assert await classifier_sees_codex(), "the classifier must keep the last good matrix"
        async with http.get(url + "/metrics") as resp:
            metrics_text = await resp.text()
        assert 'classifier_matrix_reloads_total{outcome="rejected"} 1.0' in metrics_text
        stop.set()
        await runner
    assert statuses and set(statuses) == {200}, f"failed requests during reloads: {statuses}"
    rejected = [e for e in stack.events() if e["event"] == "matrix_rejected"]
    assert any("speed_score" in line for e in rejected for line in e["problems"])


async def test_warm_state_follows_the_simulated_fleet(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    url = await make_classifier(probe_interval_s=0.2)
    key = "samwise-100.86.174.14/ollama/qwen2.5-coder:7b"
    host_url = next(u for h, u in stack.sim.fleet.host_urls.items() if h == "samwise-100.86.174.14")
    stack.sim.reset()
    async with aiohttp.ClientSession() as http:

        async def warm_state(profile: str) -> str:
            body = await get_json(http, url + "/capability-matrix")
            return str(body["profiles"][profile]["warm_state"])

        await eventually(lambda: _is(warm_state(key), "cold"), what="cold after reset")
        # Load it the way any Ollama client would, with a one-second keep_alive.
        load = {"model": "qwen2.5-coder:7b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        async with http.post(host_url + "/api/chat", json={**load, "keep_alive": "1s"}) as resp:
            assert resp.status == 200
        await eventually(lambda: _is(warm_state(key), "warm"), what="warm once resident")
        await eventually(lambda: _is(warm_state(key), "cold"), what="cold after keep_alive expiry")

        # Served through the router: the deployment that answered becomes hot.
        status, headers, _ = await chat(http, url, "codex-runner")
        assert status == 200
        served = headers["X-Router-Model"]
        await eventually(lambda: _is(warm_state(served), "hot"), what="hot after serving")


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def _book_total(http: aiohttp.ClientSession, url: str) -> float:
    """The day's spend as the classifier last heard it from the one book (the hooks'), unrounded."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    return float(
        next(line for line in text.splitlines() if line.startswith("classifier_daily_spend_usd "))[27:]
    )


async def test_budget_lockout_removes_cloud_and_is_visible(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    # The budget counts against the one book: the hooks' total for the day, shared by every classifier in
    # front of this LiteLLM (the session's earlier tests spent too). So the budget is set just above what
    # the book holds now: only this test's own cloud answer can cross it.
    reader = await make_classifier()
    seen_before = len(stack.events())  # the trail is the session's: look only at what this test adds
    async with aiohttp.ClientSession() as http:
        status, _, _ = await chat(http, reader, "webmaster", model="fast-chat")  # local: costs nothing
        assert status == 200
        before = await _book_total(http, reader)
        url = await make_classifier(daily_budget_usd=before + 1e-12, routing_mode="cloud-only")
        status, headers, _ = await chat(http, url, "webmaster")
        assert status == 200 and headers["X-Router-Group"] == "cloud-balanced"
        # This answer's own response carried the book's new total (its cost booked before the headers).
        assert await _book_total(http, url) > before
        status, _, body = await chat(http, url, "webmaster")
        assert status == 503 and body["error"]["code"] == "cloud_locked_out"
        matrix = await get_json(http, url + "/capability-matrix")
    cloud = [p for p in matrix["profiles"].values() if p["provider"] == "openai"]
    local = [p for p in matrix["profiles"].values() if p["provider"] == "ollama"]
    assert {p["lockout_state"] for p in cloud} == {"budget"}
    assert {p["lockout_state"] for p in local} == {"none"}
    assert any(
        e["event"] == "lockout_changed" and e["state"] == "budget" for e in stack.events()[seen_before:]
    )

    async with aiohttp.ClientSession() as http:
        before = await _book_total(http, url)
        local_first = await make_classifier(daily_budget_usd=before + 1e-12)
        status, headers, _ = await chat(http, local_first, "webmaster", model="fast-chat")
        classified = await wait_for_event(
            stack.events_path, headers["X-Router-Request-Id"], "request_classified"
        )
        assert any(g.startswith("cloud-") for g in classified["ladder"]), "under budget: cloud is a step"
        status, headers, _ = await chat(http, local_first, "webmaster", model="cloud-balanced")
        assert status == 200 and headers["X-Router-Group"] == "cloud-balanced"
        status, headers, _ = await chat(http, local_first, "webmaster")
    assert status == 200 and headers["X-Router-Group"] == "balanced"
    classified = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "request_classified")
    assert not any(g.startswith("cloud-") for g in classified["ladder"])


async def test_auth_lockout_from_provider_401(stack: Stack, make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(routing_mode="cloud-only")
    async with aiohttp.ClientSession() as http, edited_matrix(stack) as original:
        stack.sim.set_fault("cloud", "auth")
        try:
            status, _, body = await chat(http, url, "webmaster")
            assert status == 401, body
            assert "sim-test-cloud-key" not in str(body) and stack.master_key not in str(body)

            async def cloud_locked() -> bool:
                matrix = await get_json(http, url + "/capability-matrix")
                states = {
                    p["lockout_state"] for p in matrix["profiles"].values() if p["provider"] == "openai"
                }
                return states == {"auth"}

            await eventually(cloud_locked, what="auth lockout visible in /capability-matrix")
            status, headers, body = await chat(http, url, "webmaster")
            # Every cloud deployment is filtered out. LiteLLM answers 429 "No deployments available"; the
            # classifier says what it is: unavailable until an operator fixes the key, not "busy, retry".
            assert status == 503 and body["error"]["code"] == "no_deployment_available", (status, body)
            assert "lockout:auth" in body["error"]["message"] and "Retry-After" not in headers
            selected = await wait_for_event(
                stack.events_path, headers["X-Router-Request-Id"], "route_selected"
            )  # this request's, not the session's last
            assert selected["deployment"] is None
            assert set(selected["rejected"].values()) == {"lockout:auth"}
        finally:
            stack.sim.set_fault("cloud", "none")
        # The operator fixes the key and saves the matrix: lockouts start over.
        write_atomically(stack.matrix_path, original + "\n# key rotated\n")

        async def lockouts_cleared_without_traffic() -> bool:  # the classifier's own reload clears them
            matrix = await get_json(http, url + "/capability-matrix")
            return {p["lockout_state"] for p in matrix["profiles"].values()} == {"none"}

        await eventually(lockouts_cleared_without_traffic, what="auth lockouts cleared by the matrix edit")
        status, headers, _ = await chat(http, url, "webmaster")  # the hooks saw the edit on this call
        assert status == 200 and headers["X-Router-Group"] == "cloud-balanced"
        assert await lockouts_cleared_without_traffic()


def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchrouter.cli", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_cli_on_shipped_and_broken_files(tmp_path: Path) -> None:
    ok = _validate()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    matrix = tmp_path / "matrix.yaml"
    config = tmp_path / "litellm_config.yaml"
    matrix_text = (REPO / "capability_matrix" / "matrix.yaml").read_text()
    config_doc = yaml.safe_load((REPO / "litellm_config.yaml").read_text())
    config_doc["model_list"] = config_doc["model_list"][1:]  # one profile loses its deployment
    config_doc["router_settings"]["fallbacks"].append({"code": ["cloud-nowhere"]})
    matrix.write_text(matrix_text.replace("quality_score: 0.55", "quality_score: 1.55", 1))
    config.write_text(yaml.safe_dump(config_doc))
    bad = _validate("--matrix", str(matrix), "--config", str(config))
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert any("quality_score" in line for line in lines), lines
    matrix.write_text(matrix_text)
    bad = _validate("--matrix", str(matrix), "--config", str(config))
    assert bad.returncode == 1
    assert any("cloud-nowhere" in line for line in bad.stdout.splitlines()), bad.stdout
    dropped = yaml.safe_load((REPO / "litellm_config.yaml").read_text())["model_list"][0]["model_info"]["id"]
    assert f"profile {dropped!r}: no deployment" in bad.stdout, bad.stdout


class UnreachableFleet:
    """A fleet probe (capability_matrix.probe.Probe) that finds every declared host silent."""

    def __init__(self, matrix_path: Path) -> None:
        self.hosts = list(load_matrix(matrix_path).hosts)

    async def poll_once(self, now: float) -> dict[str, HostObservation]:
        return {
            h: HostObservation(h, reachable=False, loaded=(), observed_at=now, error="test")
            for h in self.hosts
        }

    async def run(self, interval_s: float, on_update: Callable[[dict[str, HostObservation]], None]) -> None:
        await asyncio.Event().wait()  # the first round (poll_once, before serving) is all this test needs


async def test_create_app_takes_its_probe_and_lane_capacity_follows_it(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    silent = await make_classifier(probe=UnreachableFleet(stack.matrix_path))
    polled = await make_classifier()  # the real probe: the session's simulated hosts answer
    async with aiohttp.ClientSession() as http:
        limits = (await get_json(http, silent + "/queue/status"))["groups"]
        assert {g: limits[g]["limit"] for g in ("fast-chat", "balanced", "code")} == {
            "fast-chat": 0,
            "balanced": 0,
            "code": 0,
        }
        status, headers, _ = await chat(http, silent, "webmaster")  # no local capacity: the cloud step
        assert status == 200 and headers["X-Router-Group"] == "cloud-balanced"
        assert (await get_json(http, polled + "/queue/status"))["groups"]["balanced"]["limit"] > 0


async def test_a_litellm_fallback_is_read_from_litellms_own_header(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    url = await make_classifier()
    balanced = {k for k, p in load_matrix(stack.matrix_path).profiles.items() if p.lane == "balanced"}
    stack.sim.set_fault("cloud", "error_500", count=1)  # the first cloud call fails, LiteLLM falls back
    try:
        async with aiohttp.ClientSession() as http:
            status, headers, body = await chat(http, url, "webmaster", model="cloud-balanced")
    finally:
        stack.sim.set_fault("cloud", "none")
    assert status == 200, body
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["X-Router-Fallback"] == "fallback:cloud-balanced->balanced"
    assert headers["X-Router-Model"] in balanced
    fallback = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "fallback_selected")
    assert (fallback["from_group"], fallback["to_group"], fallback["planned"]) == (
        "cloud-balanced",
        "balanced",
        True,  # the classifier's route for this request had balanced after cloud-balanced
    )
