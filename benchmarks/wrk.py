"""Drive an endpoint with wrk (a C load generator, so the client is never the bottleneck) and parse it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found: apt-get install wrk (make bench does this)")
    return path


def run_wrk(
    url: str,
    body: Mapping[str, object],
    headers: Mapping[str, str],
    *,
    seconds: int,
    connections: int = 32,
    agents: Sequence[str] = (),
) -> WrkResult:
    """``agents``: X-Agent-Id values sent in rotation (mixed traffic); none: ``headers`` on every request."""
    script = "wrk.method = 'POST'\nwrk.body = " + json.dumps(json.dumps(body)) + "\n"
    script += "wrk.headers['Content-Type'] = 'application/json'\n"
    for name, value in headers.items():
        script += f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n"
    if agents:
        names = ", ".join(json.dumps(a) for a in agents)
        script += f"local agents = {{{names}}}\nlocal i = 0\n"
        script += (
            "request = function()\n  i = i + 1\n  wrk.headers['X-Agent-Id'] = agents[(i % #agents) + 1]\n"
        )
        script += "  return wrk.format(nil, nil, nil, nil)\nend\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(f.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return WrkResult(rps, p50, p99, total, errors)
