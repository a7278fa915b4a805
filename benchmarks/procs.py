"""Benchmark plumbing: each part of the stack in its own process, on free loopback ports.

The load generator runs in the benchmark's own process, so nothing it does steals the event loop of
the part being measured (they still share the machine's cores; the ratios are taken in one run).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_ports, render_fleet_files
from torchrouter.litellm_process import LiteLLMProcess

CLOUD_KEY = "bench-cloud-key"


def classifier_cmd(port: int, py: str = sys.executable) -> list[str]:
    """The command that serves the classifier on ``127.0.0.1:port`` (``torchrouter serve``)."""
    return [py, "-m", "torchrouter.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def wait_http(url: str, timeout_s: float = 60.0) -> float:
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{url} not ready after {timeout_s} s")
        time.sleep(0.05)


@contextlib.contextmanager
def child(
    cmd: list[str], env: Mapping[str, str], log: Path, cwd: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]
    litellm_url: str
    classifier_url: str
    host_urls: dict[str, str]


@contextlib.contextmanager
def stack(
    work: Path,
    *,
    time_scale: float,
    classifier_env: Mapping[str, str] | None = None,
    agents: Path | None = None,
) -> Iterator[Stack]:
    """Simulated fleet, LiteLLM with our hooks, and the classifier, each a child process."""
    render_fleet_files(work)
    import yaml

    doc = yaml.safe_load((work / "matrix.yaml").read_text())
    host_urls = {h: v["api_base"] for h, v in doc["hosts"].items()}
    master = "sk-bench-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master,
        "TORCHROUTER_CLOUD_API_KEY": CLOUD_KEY,
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(work / "matrix.yaml"),
        "TORCHROUTER_LITELLM_CONFIG_PATH": str(work / "litellm_config.yaml"),
        "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(work / "events.jsonl"),
    }
    if agents is not None:
        env["TORCHROUTER_AGENTS_PATH"] = str(agents)
    litellm_port, classifier_port = free_ports(2)
    py = sys.executable
    sim_cmd = [py, "-m", "torchrouter.cli", "sim", "--matrix", str(work / "matrix.yaml")]
    sim_cmd += ["--time-scale", str(time_scale), "--cloud-key", CLOUD_KEY]
    with child(sim_cmd, env, work / "sim.log"):
        for url in host_urls.values():
            wait_http(url + "/api/version")
        litellm = LiteLLMProcess.start(
            work / "litellm_config.yaml", port=litellm_port, env=env, log_path=work / "l.log"
        )
        try:
            litellm.wait_ready()
            cenv = {**env, "LITELLM_URL": litellm.url, **(classifier_env or {})}
            cmd = classifier_cmd(classifier_port, py)
            with child(cmd, cenv, work / "classifier.log"):
                url = f"http://127.0.0.1:{classifier_port}"
                wait_http(url + "/health")
                yield Stack(work, env, litellm.url, url, host_urls)
        finally:
            litellm.stop()
