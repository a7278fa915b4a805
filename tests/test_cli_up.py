"""`torchrouter up --dev` brings the stack up, answers the spec example, and stops leaving nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from capability_matrix import DEFAULT_MATRIX_PATH

DEV_CLASSIFIER, DEV_LITELLM = 4002, 4003
SIM_PORTS = (11501, 11502, 11503, 11504, 11505, 11510)


def _up_dev(state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torchrouter.cli",
        "up",
        "--dev",
        "--time-scale",
        "0.05",
        "--state-dir",
        str(state_dir),
    ]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _litellm_children(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        port_args = [cmdline[i + 1] for i, arg in enumerate(cmdline[:-1]) if arg == b"--port"]
        if b"litellm.proxy.proxy_cli" in cmdline and str(port).encode() in port_args:
            pids.append(int(entry.name))
    return pids


def test_up_dev_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    assert not _listening(DEV_CLASSIFIER) and not _listening(DEV_LITELLM), "dev ports busy before the test"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}
    proc = subprocess.Popen(
        _up_dev(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        assert "Ctrl-C stops everything" in output, output

        with urllib.request.urlopen(f"http://127.0.0.1:{DEV_CLASSIFIER}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{DEV_LITELLM}/health/liveliness", timeout=5) as resp:
            assert resp.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{DEV_CLASSIFIER}/v1/chat/completions",
            data=json.dumps(
                {"model": "auto", "messages": [{"role": "user", "content": "Summarize the routing policy."}]}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Agent-Id": "webmaster"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
            assert resp.headers["X-Router-Group"] == "balanced"
        assert answer["choices"][0]["message"]["content"].startswith("sim:")
        assert _litellm_children(DEV_LITELLM), "LiteLLM child not found while running"

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        lines.append(rest)
        assert proc.returncode == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "stopped." in "".join(lines)
    trail = [json.loads(line) for line in (tmp_path / "routing-events.jsonl").read_text().splitlines()]
    answered = [e for e in trail if e["event"] == "request_completed" and e["agent_id"] == "webmaster"]
    assert answered and answered[-1]["outcome"] == "ok", "the trail lost the request on shutdown"
    assert any(e["event"] == "route_selected" for e in trail), "the hooks' lines are missing"
    for port in (DEV_CLASSIFIER, DEV_LITELLM, *SIM_PORTS):
        assert not _listening(port), f"port {port} still listening after stop"
    assert not _litellm_children(DEV_LITELLM), "LiteLLM child survived the stop"


def test_up_fails_cleanly_when_a_port_is_taken(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
        squatter.bind(("127.0.0.1", DEV_CLASSIFIER))
        squatter.listen()
        done = subprocess.run(
            _up_dev(tmp_path),
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "torchrouter up:" in done.stderr and str(DEV_CLASSIFIER) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for port in (DEV_LITELLM, *SIM_PORTS):
        assert not _listening(port), f"port {port} left listening after a failed start"
    assert not _litellm_children(DEV_LITELLM)


def test_up_refuses_a_bad_matrix_before_starting_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        DEFAULT_MATRIX_PATH.read_text().replace("quality_score: 0.55", "quality_score: 1.55", 1)
    )
    done = subprocess.run(
        [*_up_dev(tmp_path), "--matrix", str(matrix)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "torchrouter up: capability matrix" in done.stderr and "quality_score" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "simulated host" not in done.stdout  # nothing was started
    for port in (DEV_CLASSIFIER, DEV_LITELLM, *SIM_PORTS):
        assert not _listening(port), f"port {port} listening after a refused start"
    assert not _litellm_children(DEV_LITELLM)


def test_ctrl_c_while_litellm_starts_stops_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}
    proc = subprocess.Popen(
        _up_dev(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("simulated cloud"):  # the fleet is up; LiteLLM is starting now
                break
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert time.monotonic() - started < 15, "Ctrl-C waited for LiteLLM's start-up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and "stopped before the stack was up." in rest, rest
    for port in (DEV_CLASSIFIER, DEV_LITELLM, *SIM_PORTS):
        assert not _listening(port), f"port {port} still listening"
    assert not _litellm_children(DEV_LITELLM)
