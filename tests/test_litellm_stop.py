"""Stopping the LiteLLM child (Ctrl-C of ``torchrouter up``): quick when it exits, never a silent kill.

Real child processes stand in for LiteLLM (the launcher's stop() only signals a process group and waits):
one that exits on SIGTERM as an idle uvicorn does, one that ignores it as a proxy still serving does.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
