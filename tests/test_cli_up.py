"""`torchrouter up` brings the stack up, answers the spec example, and stops leaving nothing; it checks every
port before it starts anything.

No port is hard-coded: each test runs `up --free-ports` (or squats a port it chose itself), so the suite
passes while `torchrouter up` or `up --dev` runs on the same machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from classifier.settings import PACKAGE_ROOT
from torchrouter.ports import free_ports, loopback_ports, render_fleet_files

SHIPPED_CONFIG = PACKAGE_ROOT / "litellm_config.yaml"
_URL_PORT = re.compile(r"http://127\.0\.0\.1:(\d+)")


def _up(state_dir: Path, *extra: str) -> list[str]:
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
        *extra,
    ]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TORCHROUTER_", "LITELLM_"))}


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


def _port_on(lines: list[str], prefix: str) -> int:
    line = next(line for line in lines if line.startswith(prefix))
    match = _URL_PORT.search(line)
    assert match, line
    return int(match.group(1))


@contextmanager
def _squatting(port: int) -> Iterator[None]:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield


def _read_until_up(proc: subprocess.Popen[str], lines: list[str], timeout_s: float = 120.0) -> None:
    """Collect ``up``'s output lines until it says the stack is up (or it ends, or ``timeout_s`` passes)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return


def test_up_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _up(tmp_path, "--free-ports"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True
    )
    lines: list[str] = []
    try:
        _read_until_up(proc, lines)
        output = "".join(lines)
        assert "Ctrl-C stops everything" in output, output
        classifier, litellm = _port_on(lines, "classifier"), _port_on(lines, "LiteLLM proxy")
        sim_ports = [_port_on([line], "simulated") for line in lines if line.startswith("simulated")]
        assert len(sim_ports) == 6 and {4002, 4003}.isdisjoint({classifier, litellm}), output

        with urllib.request.urlopen(f"http://127.0.0.1:{classifier}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{litellm}/health/liveliness", timeout=5) as resp:
            assert resp.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{classifier}/v1/chat/completions",
            data=json.dumps(
                {"model": "auto", "messages": [{"role": "user", "content": "Summarize the routing policy."}]}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Agent-Id": "webmaster"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
            assert resp.headers["X-Router-Group"] == "balanced"
        content = answer["choices"][0]["message"]["content"]
        assert content.startswith("sim:"), content
        assert _litellm_children(litellm), "LiteLLM child not found while running"

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
    for port in (classifier, litellm, *sim_ports):
        assert not _listening(port), f"port {port} still listening after stop"
    assert not _litellm_children(litellm), "LiteLLM child survived the stop"


@pytest.mark.parametrize("role", ["classifier", "LiteLLM", "simulated host"])
def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path, role: str) -> None:
    # A fleet of our own on free ports (so a running dev or prod stack is not "shared"), and two free ports.
    fleet = tmp_path / "fleet"
    render_fleet_files(DEFAULT_MATRIX_PATH, SHIPPED_CONFIG, fleet)
    # A port a simulated Ollama host serves (not the simulated cloud's): a local profile's api_base.
    sim_ports = loopback_ports((fleet / "matrix.yaml").read_text())
    local = next(p for p in load_matrix(fleet / "matrix.yaml").profiles.values() if p.is_local)
    host_port = int(local.api_base.rsplit(":", 1)[1].split("/")[0])
    classifier, litellm = free_ports(2)
    taken = {"classifier": classifier, "LiteLLM": litellm, "simulated host": host_port}[role]
    args = _up(
        tmp_path,
        *("--classifier-port", str(classifier), "--litellm-port", str(litellm)),
        *("--matrix", str(fleet / "matrix.yaml"), "--config", str(fleet / "litellm_config.yaml")),
    )
    with _squatting(taken):
        done = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert errors == [errors[-1]] and errors[0].startswith(f"torchrouter up: port {taken} ({role}"), errors
    assert done.stdout == "", "nothing may start (nor say it is ready) before the ports are checked"
    for port in (classifier, litellm, *sim_ports):
        assert port == taken or not _listening(port), f"port {port} left listening after a refused start"
    assert not _litellm_children(litellm)


def test_up_refuses_a_bad_matrix_before_starting_anything(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        DEFAULT_MATRIX_PATH.read_text().replace("quality_score: 0.55", "quality_score: 1.55", 1)
    )
    classifier, litellm = free_ports(2)
    args = _up(tmp_path, "--matrix", str(matrix), "--classifier-port", str(classifier))
    done = subprocess.run(
        [*args, "--litellm-port", str(litellm)], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "torchrouter up: capability matrix" in done.stderr and "quality_score" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # nothing was started
    for port in (classifier, litellm):
        assert not _listening(port), f"port {port} listening after a refused start"
    assert not _litellm_children(litellm)


@pytest.mark.parametrize(
    ("name", "value", "mentions"),
    [
        ("TORCHROUTER_EVICTION", "hold_s=abc", "hold_s=abc"),
        ("TORCHROUTER_LEDGER_REDIS_URL", "notaurl", "notaurl"),
        ("TORCHROUTER_BREAKER", "cool_off_s=inf", "cool_off_s=inf"),
        # the classifier's own, read before LiteLLM starts too
        ("TORCHROUTER_LANE_LIMITS", "code=2,code=3", "'code' is given twice"),
    ],
)
def test_up_refuses_a_bad_setting_in_one_line_before_starting_anything(
    tmp_path: Path, name: str, value: str, mentions: str
) -> None:
    classifier, litellm = free_ports(2)
    args = _up(tmp_path, "--free-ports", "--classifier-port", str(classifier))
    done = subprocess.run(
        [*args, "--litellm-port", str(litellm)],
        capture_output=True,
        text=True,
        env={**_env(), name: value},
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"torchrouter up: {name}") and mentions in line, line
    assert done.stdout == ""  # nothing was started
    assert not list(tmp_path.glob("litellm-*.log"))
    for port in (classifier, litellm):
        assert not _listening(port), f"port {port} listening after a refused start"


def test_ctrl_c_while_litellm_starts_stops_at_once(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _up(tmp_path, "--free-ports"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
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
    sim_ports = [_port_on([line], "simulated") for line in lines if line.startswith("simulated")]
    assert len(sim_ports) == 6, lines
    for port in sim_ports:
        assert not _listening(port), f"port {port} still listening"
    # The LiteLLM it was starting is gone too (its port is printed only once it is ready: find it by its
    # config, the copy this stack wrote).
    config = str(tmp_path / "fleet-dev" / "litellm_config.yaml").encode()
    assert not [cmd for cmd in _litellm_cmdlines() if config in cmd]


def _litellm_cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"litellm.proxy.proxy_cli" in cmdline:
                found.append(cmdline)
    return found


def test_up_stops_with_one_message_when_litellm_dies(tmp_path: Path) -> None:
    """LiteLLM killed under a running stack: ``up`` says so and stops everything (exit 1), rather than
    keep a classifier answering 502 to every request with nothing in its output."""
    proc = subprocess.Popen(
        _up(tmp_path, "--free-ports"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True
    )
    lines: list[str] = []
    try:
        _read_until_up(proc, lines)
        assert "Ctrl-C stops everything" in "".join(lines), "".join(lines)
        classifier, litellm = _port_on(lines, "classifier"), _port_on(lines, "LiteLLM proxy")
        [child] = _litellm_children(litellm)
        os.kill(child, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = "".join(lines)
    assert proc.returncode == 1, output
    assert "torchrouter up: LiteLLM exited with code -9 while the stack ran" in output, output
    assert not _listening(classifier), "the classifier outlived LiteLLM"
