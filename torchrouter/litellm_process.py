"""The LiteLLM proxy as a supervised child process (used by ``torchrouter up`` and the test suite).

The child runs offline (``LITELLM_LOCAL_MODEL_COST_MAP=True``, telemetry off), on loopback, with our
config and hooks. It gets its own session so a terminal's Ctrl-C reaches only us and we stop it in
order, and ``PR_SET_PDEATHSIG`` so it dies with us even if we are killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

STARTUP_HOOK = "litellm_hooks.lifecycle:start"  # the name only: this process never imports LiteLLM

_PR_SET_PDEATHSIG = 1
log = logging.getLogger("torchrouter.litellm")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LiteLLMStartError(RuntimeError):
    pass


class LiteLLMExited(LiteLLMStartError):
    """LiteLLM stopped on its own while the stack ran (every request would get a 502 from then on)."""


class LiteLLMProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.killed = False  # set when stop() had to SIGKILL it after the grace period

    @classmethod
    def start(
        cls,
        config_path: str | os.PathLike[str],
        *,
        port: int,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        num_workers: int = 1,
    ) -> LiteLLMProcess:
        """Start the proxy; ``num_workers`` > 1 runs that many uvicorn worker processes (each loads our
        hooks: share the VRAM ledger through ``TORCHROUTER_LEDGER_REDIS_URL``)."""
        child_env = {
            **env,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else importing litellm fetches a cost map online
            # Our hooks' fleet probe starts with the proxy (litellm_hooks/lifecycle.py), not on a request.
            "LITELLM_WORKER_STARTUP_HOOKS": STARTUP_HOOK,
            "LITELLM_LOG": env.get("LITELLM_LOG", "ERROR"),
            "PYTHONUNBUFFERED": "1",
        }
        log_file = Path(log_path)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            os.fspath(config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--telemetry",
            "False",
            # Workers import LiteLLM (seconds, more on a busy machine); uvicorn's default 5 s health check
            # kills them while they start and spawns new ones, forever.
            *(
                ["--num_workers", str(num_workers), "--timeout_worker_healthcheck", "120"]
                if num_workers > 1
                else []
            ),
        ]
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return cls(proc, port, log_file)

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Block until /health/liveliness answers; returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise LiteLLMStartError(
                    f"LiteLLM exited with code {self.proc.returncode} while starting; log tail:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + "/health/liveliness", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - t0 > timeout_s:
                self.stop()
                raise LiteLLMStartError(
                    f"LiteLLM not ready after {timeout_s:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes under the proxy (empty with one worker: the proxy serves itself)."""
        children: set[int] = set()
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    children.update(map(int, (task / "children").read_text().split()))
        except OSError:
            return []
        workers = []
        for pid in sorted(children):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:  # multiprocessing's spawned worker (not its resource tracker)
                workers.append(pid)
        return workers

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 10.0, *, patience_s: float = 1.0) -> int | None:
        """SIGTERM the proxy's process group, wait, SIGKILL after ``grace_s`` s; returns the exit code.

        Idle, LiteLLM (uvicorn) exits in well under a second. It waits for requests still running: with
        ``cancel_on_disconnect`` (litellm_config.yaml) a request whose client (the classifier) has gone is
        cancelled at once, so a long wait means a client is still connected. After ``patience_s`` the wait
        is logged, and a kill after the grace period is logged too, so a slow Ctrl-C is never silent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(min(patience_s, grace_s))
            except subprocess.TimeoutExpired:
                rest = max(0.0, grace_s - patience_s)
                log.warning("LiteLLM is finishing requests still in flight; waiting up to %.0f s more", rest)
                try:
                    self.proc.wait(rest)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
                    self.killed = True
                    log.warning(
                        "LiteLLM did not stop within %.0f s of SIGTERM (requests still running); killed it",
                        grace_s,
                    )
        return self.proc.returncode
