"""Stopping the LiteLLM child (Ctrl-C of ``torchrouter up``): quick when it exits, never a silent kill.

Real child processes stand in for LiteLLM where only stop()'s signalling is under test: one that exits on
SIGTERM as an idle uvicorn does, one that ignores it as a proxy still serving does. Then a real LiteLLM
(with our config and hooks) whose client hung up on a long call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CLOUD_KEY, Stack
from tests.harness import free_ports
from torchrouter.litellm_process import LiteLLMProcess

_CHILD = """
import signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def child(tmp_path: Path, mode: str) -> LiteLLMProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"ready\n"  # its SIGTERM handler is in place
    return LiteLLMProcess(proc, 0, tmp_path / "litellm.log")


def test_a_child_that_exits_on_sigterm_stops_at_once_and_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="torchrouter.litellm")
    proc = child(tmp_path, "exit")
    t0 = time.monotonic()
    assert proc.stop(grace_s=30.0) is not None
    assert time.monotonic() - t0 < 5.0  # the grace period is a ceiling, not a wait
    assert not proc.killed and caplog.records == []


def test_a_child_that_keeps_running_is_killed_after_the_grace_and_it_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="torchrouter.litellm")
    proc = child(tmp_path, "ignore")
    assert proc.stop(grace_s=0.6, patience_s=0.2) == -9
    assert proc.killed
    messages = [r.getMessage() for r in caplog.records]
    assert any("finishing requests still in flight" in m for m in messages)
    assert any("did not stop within 1 s of SIGTERM" in m and "killed it" in m for m in messages)


async def test_litellm_stops_at_once_after_its_client_hung_up_on_a_long_call(
    stack: Stack, tmp_path: Path
) -> None:
    """The Ctrl-C case: the classifier has gone (its connections closed) while a long non-streamed call ran.
    With cancel_on_disconnect LiteLLM cancels the call, so SIGTERM finds nothing to wait for."""
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": stack.master_key,
        "TORCHROUTER_CLOUD_API_KEY": CLOUD_KEY,
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(stack.matrix_path),
    }
    proxy = LiteLLMProcess.start(
        stack.config_path, port=free_ports(1)[0], env=env, log_path=tmp_path / "l.log"
    )
    try:
        await asyncio.to_thread(proxy.wait_ready)
        cancelled = sum(s["counters"]["cancelled"] for n, s in stack.sim.state().items() if n != "cloud")
        body = {"model": "fast-chat", "max_tokens": 40000, "messages": [{"role": "user", "content": "long"}]}
        headers = {"Authorization": f"Bearer {stack.master_key}"}

        async def call() -> None:
            async with (
                aiohttp.ClientSession() as http,
                http.post(proxy.url + "/v1/chat/completions", json=body, headers=headers) as r,
            ):
                await r.read()

        task = asyncio.create_task(call())
        deadline = time.monotonic() + 30
        while not any(s["in_flight"] for n, s in stack.sim.state().items() if n != "cloud"):
            assert time.monotonic() < deadline, "the call never reached a host"
            await asyncio.sleep(0.02)
        task.cancel()  # the client (the classifier, shutting down) hangs up
        await asyncio.gather(task, return_exceptions=True)
        while (
            sum(s["counters"]["cancelled"] for n, s in stack.sim.state().items() if n != "cloud") == cancelled
        ):
            assert time.monotonic() < deadline, "the host never saw the call cancelled"
            await asyncio.sleep(0.02)
    finally:
        t0 = time.monotonic()
        await asyncio.to_thread(proxy.stop, 3.0)
        took = time.monotonic() - t0
    assert not proxy.killed and took < 3.0, took
