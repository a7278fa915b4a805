"""The classifier's own cost as instructions per request: a count that does not move with the machine's load.

The same servers as ``bench_overhead`` part 2 (the classifier, or the bare aiohttp pass-through, in front of
an instant upstream, with the simulated fleet for the probe), each run under valgrind's cachegrind, which
counts the instructions the process executes. A client with 32 connections sends N requests (one agent, or
the mixed R/H/C rotation); each server is run twice, with ``BENCH_N1`` and ``BENCH_N2`` requests, and the
difference over ``N2 - N1`` is the cost of a request, start-up and shutdown cancelling out. Repeat runs
agree within about 0.5%. Instructions are not time (cache misses and the kernel's share are not in them),
but the comparison between two trees is exact where throughput on a shared machine moves by 10-20%
between runs.

Run: ``python -m benchmarks.bench_overhead_instructions [name=checkout ...]`` (needs ``valgrind``;
``apt-get install valgrind``). With no arguments: the pass-through and this checkout; ``name=path`` adds
another checkout's classifier (it must read this checkout's matrix). ``BENCH_KIND``: ``one``, ``mixed`` or
``both`` (default). About a minute per server and kind on a laptop-class core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import orjson
import yaml

from benchmarks import procs
from benchmarks.bench_overhead import BODY, CHAT, MIXED_AGENTS
from tests.harness import free_ports, render_fleet_files

HERE = str(Path(__file__).resolve().parents[1])
PASS_THROUGH = "pass-through"


async def drive(url: str, n: int, agents: tuple[str, ...]) -> int:
    """``n`` requests over 32 connections; the agents in rotation. Returns how many answered 200."""
    body = orjson.dumps(BODY)
    numbers = iter(range(n))
    ok = 0

    async def connection(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for i in numbers:
            headers = {"Content-Type": "application/json", "X-Agent-Id": agents[i % len(agents)]}
            async with session.post(url + CHAT, data=body, headers=headers) as answer:
                await answer.read()
                ok += answer.status == 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(connection(session) for _ in range(32)))
    return ok


def instructions(
    cmd: list[str], env: dict[str, str], cwd: str, n: int, agents: tuple[str, ...], log: Path
) -> int:
    """Instructions the server ``cmd`` (which serves on ``port``, the last argument) executes for ``n``
    requests, start-up and shutdown included."""
    port = next(a for a in reversed(cmd) if a.isdigit())
    counted = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *cmd]
    with open(log, "wb") as out:
        server = subprocess.Popen(counted, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/health", timeout_s=900)
        answered = asyncio.run(drive(f"http://127.0.0.1:{port}", n, agents))
        if answered != n:
            raise RuntimeError(f"{answered} of {n} requests answered 200 (see {log})")
    finally:
        server.terminate()
        server.wait(300)
    found = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no instruction count in {log}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    trees = {"this checkout": HERE, **dict(a.split("=", 1) for a in sys.argv[1:])}
    n1, n2 = int(os.environ.get("BENCH_N1", "300")), int(os.environ.get("BENCH_N2", "1500"))
    kinds = {"one": ("inbox-triage",), "mixed": MIXED_AGENTS}
    wanted = os.environ.get("BENCH_KIND", "both")
    py = sys.executable
    print(f"# bench_overhead_instructions: python {sys.version.split()[0]}, {n1} and {n2} requests a server")
    print("\n| server | traffic | instructions per request | ratio to the pass-through |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as running:
        work = Path(tmp)
        render_fleet_files(work)
        hosts = yaml.safe_load((work / "matrix.yaml").read_text())["hosts"]
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": "sk-bench",
            "TORCHROUTER_CLOUD_API_KEY": procs.CLOUD_KEY,
            "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(work / "matrix.yaml"),
            "TORCHROUTER_LITELLM_CONFIG_PATH": str(work / "litellm_config.yaml"),
            "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(work / "events.jsonl"),
            # One poll at start: later polls would land on a count that depends on how long a run takes.
            "TORCHROUTER_PROBE_INTERVAL_S": "3600",
        }
        sim = [py, "-m", "torchrouter.cli", "sim", "--matrix", str(work / "matrix.yaml"), "--time-scale", "0"]
        running.enter_context(procs.child([*sim, "--cloud-key", procs.CLOUD_KEY], env, work / "sim.log"))
        for host in hosts.values():
            procs.wait_http(host["api_base"] + "/api/version")
        up_port, *ports = free_ports(3)
        upstream = f"http://127.0.0.1:{up_port}"
        instant = [py, "-m", "benchmarks.instant"]
        running.enter_context(procs.child([*instant, "upstream", str(up_port)], env, work / "up.log"))
        procs.wait_http(upstream + "/health")
        for kind, agents in kinds.items():
            if wanted not in ("both", kind):
                continue
            per_request: dict[str, float] = {}
            for name, tree in {PASS_THROUGH: HERE, **trees}.items():
                counts = []
                for n, port in zip((n1, n2), ports, strict=True):
                    if name == PASS_THROUGH:
                        cmd = [py, *instant[1:], "passthrough", str(port), upstream]
                    else:
                        cmd = procs.classifier_cmd(port, py)
                    server_env = {**env, "LITELLM_URL": upstream, "PYTHONPATH": tree}
                    counts.append(instructions(cmd, server_env, tree, n, agents, work / f"{name}-{n}.log"))
                per_request[name] = (counts[1] - counts[0]) / (n2 - n1)
                ratio = per_request[PASS_THROUGH] / per_request[name]
                print(f"| {name} | {kind} | {per_request[name]:,.0f} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
