"""Fleet outcome: TorchRouter's hooks against LiteLLM's own strategies on a fleet built to make routing hard.

    .venv/bin/python -m benchmarks.bench_fleet            # about 11 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_fleet --phases 2 --routers torchrouter --no-floor   # a quick look

The fleet is ``benchmarks/fleets/hard`` (its matrix says why it is shaped as it is): four simulated Ollama
hosts (24, 24, 48 and 80 GB), three models each deployed on every host, 49 GB of models against hosts that
hold one, two or all three of them. The workload is ``benchmarks.fleet_workload``: about 500 requests over
six phases whose mix shifts between chat, code and long prompts, with bursts; the same seed, so the same
arrivals, for every router. Requests go straight to LiteLLM (no classifier: only the placement differs) and
are not streamed; a refused request (LiteLLM's 429 when no deployment can take it) is sent again after
``RETRY_S`` and its latency counts from its first try.

Routers (``--routers``), each with a fresh LiteLLM and a fresh simulated fleet:

- ``torchrouter``: LiteLLM with our hooks, loaded through ``benchmarks.scaled_hooks``, which multiplies
  the router's time constants (seconds of real time: priors, hot window, eviction charge windows) by the
  time scale, with the eviction rules' seconds scaled too (``TORCHROUTER_EVICTION``), so that it decides
  as it would on the same fleet in real time (``routing_strategy`` left at LiteLLM's default; our filter
  leaves one deployment);
- ``torchrouter-unscaled`` (not run by default): our hooks as configured, constants in real seconds
  against a fleet that runs ten times faster: shows what that mismatch costs;
- ``simple-shuffle``, ``least-busy``, ``latency-based-routing``: LiteLLM without our hooks, with that
  ``routing_strategy`` (and ``think: false`` for the profiles that require it, as our hooks add it).

Every deployment sends ``keep_alive`` = 300 s x the time scale (Ollama's default five minutes, in simulated
time: the simulated Ollama's keep-alive is wall-clock, so without it nothing would ever unload during a
run). Each run starts with one tiny request per group through LiteLLM (its first-call start-up: lazy imports,
clients, ``/api/show``), then the simulated fleet is reset (everything unloaded, counters and history
zeroed), so every router starts cold and none pays LiteLLM's start-up inside the measured run.

Measurement:

- Latency of the whole answer in simulated seconds (wall / time scale). At the default scale 0.1 a request
  takes 0.1-1.3 s of wall time on an idle slot, so LiteLLM's own time per request (about 15 ms alone, more
  in a burst or on a busy machine) is a small part of it.
- Two lower bounds per request: ``lb``, pure simulation (the request served warm on an idle slot of its
  group's fastest deployment, at the simulator's pace; ``fleet_workload.lower_bound_s``), and ``floor``,
  measured: the same requests at the same times through LiteLLM (no hooks, ``simple-shuffle``) to a fleet
  that has each group's fastest model already loaded, with room and 256 slots (one deployment per group),
  which is ``lb`` plus what LiteLLM, HTTP and this process's own client add under this arrival pattern.
  ``pX/lb`` and ``pX/floor`` divide a router's percentile by the same percentile of the bound.
  ``outside p95`` is, per router, the 95th percentile of each answer's time outside the simulated hosts
  (latency less the host's own time for it): LiteLLM, our hooks, HTTP and this client, in that very run.
- Cold loads, evictions, busy evictions (a model evicted while requests for it were queued on its host)
  and spills (loads that did not fit on the GPU: overcommits) come from the simulated hosts' own
  counters; ``mem-wait`` is the requests that waited for memory (busy models in the way of their load).
- The reference rows replay the same workload through the simulated hosts' scheduler in virtual time
  (``benchmarks.fleet_reference``): what an informed greedy router reaches on this fleet, and LiteLLM's
  shuffle and least-busy without any HTTP, so a goal can be judged reachable or not apart from any cost.
- Per router, the requests at or above its p95 are taken apart from the hosts' history: slot line, memory
  wait, load queue, load, run, and "outside", and counted by their largest part other than the run.
  ``--dump DIR`` writes every answer with its host record (and our hooks' ``route_selected`` events,
  matched by ``call_id``) for a closer look; ``--reread DIR`` prints a dumped run's reports again.
- For our hooks, how close each ``route_selected.estimated_ttft_ms`` came to the time to first token on
  the host (:func:`estimate_report`): the picks that found their model resident, and those of them that
  waited for a slot.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import os
import platform
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks import fleet_reference
from benchmarks.fleet_workload import PHASES, Request, lower_bound_s, percentile, tokens_per_s, workload
from capability_matrix.consistency import validate_files
from tests.harness import SimThread, free_ports
from torchrouter import ports
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import FleetSpec, HostSpec, ModelSpec, fleet_spec_from_matrix
from torchrouter.sim.ollama_app import PROMPT_SPEEDUP, HostRuntime
from torchrouter_core import eviction

FLEET_DIR = Path(__file__).resolve().parent / "fleets" / "hard"
REPO = Path(__file__).resolve().parent.parent
SCALED_HOOKS = "benchmarks.scaled_hooks.router_hooks"
DISK_BASE_S = 2.0  # a load's fixed part with --disk-gb-per-s (the simulator's default has the same)
# name -> (LiteLLM routing_strategy, our callbacks): None for the strategy keeps the config's (our hooks').
ROUTERS: dict[str, tuple[str | None, str | None]] = {
    "torchrouter": (None, SCALED_HOOKS),  # the ranker's time priors in the fleet's time (scaled_hooks)
    "torchrouter-unscaled": (None, None),  # as configured: priors in real seconds against a faster fleet
    "simple-shuffle": ("simple-shuffle", None),
    "least-busy": ("least-busy", None),
    "latency-based-routing": ("latency-based-routing", None),
}
RETRY_S = 2.0  # simulated seconds before a refused request is sent again
GIVE_UP_S = 1200.0  # simulated seconds after which a request that keeps being refused counts as failed
PROBE_INTERVAL_S = 0.2  # wall seconds between our hooks' /api/ps polls: 2 s of simulated time at scale 0.1
FLOOR_SLOTS = 256
KEEP_ALIVE_S = 300.0  # Ollama's default keep-alive, in simulated seconds (sent as keep_alive x time scale)
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))


@dataclass
class Answer:
    request: Request
    latency_s: float  # simulated seconds from the first try to the answer (NaN: failed)
    status: int
    tries: int
    deployment: str | None  # x-litellm-model-id: the profile key that answered
    sent_at: float = 0.0  # wall clock (time.time()) of the last try
    call_id: str | None = None  # x-litellm-call-id: our hooks' request_id in their route_selected event
    failures: list[str] = field(default_factory=list)  # each failed try before the last: status or error


@dataclass
class RunResult:
    router: str
    answers: list[Answer]
    counters: dict[str, int]
    history: dict[str, dict[str, Any]]  # request label -> its host record (the last one)
    events: list[dict[str, Any]] = field(default_factory=list)


def eviction_setting(scale: float) -> str:
    """``TORCHROUTER_EVICTION`` with the eviction rules' default seconds multiplied by ``scale`` (the rest
    of the router's time constants: ``benchmarks.scaled_hooks``)."""
    return (
        f"min_residency_s={eviction.MIN_RESIDENCY_S * scale:g},hold_s={eviction.EVICTOR_HOLD_S * scale:g},"
        f"unload_s={eviction.UNLOAD_S * scale:g}"
    )


# -- fleet files --------------------------------------------------------------------------------------------
def render_fleet(
    fleet_dir: Path, dst: Path, disk_gb_per_s: float | None = None, router_scale: float | None = None
) -> dict[str, Any]:
    """The fleet's matrix and config in ``dst`` on free ports, checked as `torchrouter validate` does.

    ``disk_gb_per_s``: every local profile declares ``load_time_s`` = 2 s + its ``vram_gb`` / that rate
    (slower disks than the simulator's default 2 s + 0.4 s per GB), which the simulated hosts load in and
    the router reads as the matrix's value. The answered matrix is in simulated seconds; with
    ``router_scale`` the file the router reads has them times that scale (the router's clock is the wall's,
    as ``benchmarks.scaled_hooks`` does for its constants)."""
    ports.render_fleet_files(fleet_dir / "matrix.yaml", fleet_dir / "litellm_config.yaml", dst)
    doc: dict[str, Any] = yaml.safe_load((dst / "matrix.yaml").read_text())
    if disk_gb_per_s is not None:
        for p in doc["profiles"].values():
            if p["provider"] == "ollama":
                p["load_time_s"] = round(DISK_BASE_S + float(p["vram_gb"]) / disk_gb_per_s, 3)
        scale = 1.0 if router_scale is None else router_scale
        routers = copy.deepcopy(doc)
        for p in routers["profiles"].values():
            if "load_time_s" in p:
                p["load_time_s"] = round(p["load_time_s"] * scale, 6)
        (dst / "matrix.yaml").write_text(yaml.safe_dump(routers, sort_keys=False))
    problems = validate_files(dst / "matrix.yaml", dst / "litellm_config.yaml")
    if problems:
        raise SystemExit(f"{fleet_dir}: " + "; ".join(problems))
    return doc


def config_for(
    src: Path,
    dst: Path,
    matrix: Mapping[str, Any],
    strategy: str | None,
    callbacks: str | None = None,
    keep_alive_s: float | None = None,
) -> None:
    """LiteLLM config: ours (strategy None; ``callbacks`` in place of the config's when given), or without
    our hooks and with ``strategy``; every deployment sends ``keep_alive_s`` (wall seconds) when given."""
    doc = yaml.safe_load(src.read_text())
    for d in doc["model_list"] if keep_alive_s is not None else ():
        d["litellm_params"]["keep_alive"] = f"{keep_alive_s:g}s"
    if strategy is None and callbacks is not None:
        doc["litellm_settings"]["callbacks"] = callbacks
    if strategy is not None:
        doc.setdefault("router_settings", {})["routing_strategy"] = strategy
        doc.get("litellm_settings", {}).pop("callbacks", None)
        for d in doc["model_list"]:
            if matrix["profiles"][d["model_info"]["id"]].get("requires_think_false"):
                d["litellm_params"]["think"] = False
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))


def floor_fleet(matrix: Mapping[str, Any], dst: Path, scale: float) -> tuple[FleetSpec, Path]:
    """Each group's fastest deployment alone on a host with room and slots to spare; its LiteLLM config."""
    fastest: dict[str, Mapping[str, Any]] = {}
    for p in matrix["profiles"].values():
        if p["provider"] == "ollama" and (
            p["lane"] not in fastest or p["speed_score"] > fastest[p["lane"]]["speed_score"]
        ):
            fastest[p["lane"]] = p
    hosts, model_list = [], []
    for (group, p), port in zip(sorted(fastest.items()), free_ports(len(fastest)), strict=True):
        model = ModelSpec(
            name=p["model"],
            size_gb=float(p["vram_gb"]),
            tokens_per_s=tokens_per_s(p),
            load_s=1.0,
            context_window=int(p["context_window"]),
            reasoning=bool(p["reasoning"] or p["requires_think_false"]),
            num_parallel=FLOOR_SLOTS,
        )
        hosts.append(HostSpec(f"floor-{group}", port, 10_000.0, FLOOR_SLOTS, 8, (model,)))
        params: dict[str, Any] = {
            "model": f"ollama_chat/{p['model']}",
            "api_base": f"http://127.0.0.1:{port}",
        }
        if p["requires_think_false"]:
            params["think"] = False
        model_list.append({"model_name": group, "litellm_params": params})
    config = {
        "model_list": model_list,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0, "timeout": 600},
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    path = dst / "floor_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return FleetSpec(hosts=tuple(hosts), cloud=None, seed=5, time_scale=scale), path


# -- one run ------------------------------------------------------------------------------------------------
async def drive(url: str, key: str, requests: Sequence[Request], scale: float) -> list[Answer]:
    """Send every request at its arrival time (scaled); a refused one again after RETRY_S."""
    t0 = time.perf_counter() + 0.5
    headers = {"Authorization": f"Bearer {key}"}
    # keep-alive below uvicorn's 5 s (LiteLLM's server), as the classifier's forwarder has it: a POST on a
    # pooled connection the server closes at that moment fails with ServerDisconnectedError, which would
    # count as a refusal of the router's
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=GIVE_UP_S * scale + 60)
    ) as session:

        async def one(r: Request) -> Answer:
            await asyncio.sleep(max(0.0, t0 + r.at * scale - time.perf_counter()))
            body = {
                "model": r.group,
                "messages": [{"role": "user", "content": r.prompt()}],
                "max_tokens": r.max_tokens,
            }
            started = time.perf_counter()
            tries, status, deployment, call_id = 0, 0, None, None
            failures: list[str] = []
            while True:
                tries += 1
                sent_at = time.time()
                try:
                    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                        await resp.read()
                        status, deployment = resp.status, resp.headers.get("x-litellm-model-id")
                        call_id = resp.headers.get("x-litellm-call-id")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, error = 599, type(exc).__name__
                else:
                    error = str(status)
                elapsed = (time.perf_counter() - started) / scale
                if status == 200:
                    return Answer(r, elapsed, status, tries, deployment, sent_at, call_id, failures)
                if elapsed + RETRY_S > GIVE_UP_S:
                    return Answer(r, float("nan"), status, tries, None, sent_at, call_id, failures)
                failures.append(error)
                await asyncio.sleep(RETRY_S * scale)

        return list(await asyncio.gather(*(one(r) for r in requests)))


async def warm_up(url: str, key: str, groups: Sequence[str]) -> None:
    """One tiny request per group through LiteLLM, so that no router pays LiteLLM's first-call start-up
    (lazy imports, clients, ``/api/show``) inside the measured run."""
    async with aiohttp.ClientSession() as session:
        for group in groups:
            body = {"model": group, "messages": [{"role": "user", "content": "warm-up"}], "max_tokens": 1}
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"warm-up request to {group} failed: {resp.status}")


def host_history(sim: SimThread) -> dict[str, dict[str, Any]]:
    """Request label -> its last record on the simulated hosts (wall times on the hosts' clock)."""

    async def read() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for host_id in sim.fleet.host_urls:
            runtime = sim.fleet.runtime(host_id)
            assert isinstance(runtime, HostRuntime)
            for t in runtime.sched.history:
                label = t.label.split(" ", 1)[0]
                if t.finished_at is None or (label in out and out[label]["finished_at"] > t.finished_at):
                    continue
                out[label] = {
                    "host": host_id,
                    "model": t.model,
                    "submitted_at": t.submitted_at,
                    "started_at": t.started_at,
                    "ready_at": t.ready_at,
                    "finished_at": t.finished_at,
                    "loaded": t.loaded,
                    "evicted": list(t.evicted),
                    "waited_s": dict(t.waited_s),
                }
        return out

    return sim.run(read())


async def run_router(
    name: str, requests: Sequence[Request], scale: float, fleet_dir: Path, disk_gb_per_s: float | None = None
) -> RunResult:
    strategy, callbacks = ROUTERS[name]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        matrix = render_fleet(
            fleet_dir, tmp, disk_gb_per_s, router_scale=scale if ROUTERS[name][1] == SCALED_HOOKS else None
        )
        config = tmp / "bench_config.yaml"
        config_for(tmp / "litellm_config.yaml", config, matrix, strategy, callbacks, KEEP_ALIVE_S * scale)
        spec = fleet_spec_from_matrix(matrix, cloud_api_key="unused", seed=5, time_scale=scale)
        events_path = tmp / "events.jsonl"
        env = {
            "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(tmp / "matrix.yaml"),
            "TORCHROUTER_PROBE_INTERVAL_S": str(PROBE_INTERVAL_S),
            "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(events_path),
            "TORCHROUTER_BENCH_TIME_SCALE": str(scale),  # read by benchmarks.scaled_hooks only
            **({"TORCHROUTER_EVICTION": eviction_setting(scale)} if callbacks == SCALED_HOOKS else {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        answers, counters, history = await _serve_and_drive(spec, config, env, requests, scale)
        events = (
            [json.loads(line) for line in events_path.read_text().splitlines()]
            if events_path.exists()
            else []
        )
    return RunResult(name, answers, counters, history, events)


async def run_floor(requests: Sequence[Request], scale: float, matrix: Mapping[str, Any]) -> RunResult:
    with tempfile.TemporaryDirectory() as tmp_name:
        spec, config = floor_fleet(matrix, Path(tmp_name), scale)
        answers, counters, history = await _serve_and_drive(spec, config, {}, requests, scale, preload=True)
    return RunResult("floor", answers, counters, history)


async def _serve_and_drive(
    spec: FleetSpec,
    config: Path,
    extra_env: Mapping[str, str],
    requests: Sequence[Request],
    scale: float,
    *,
    preload: bool = False,
) -> tuple[list[Answer], dict[str, int], dict[str, dict[str, Any]]]:
    sim = SimThread(spec)
    sim.start()
    key = "sk-bench-" + secrets.token_hex(6)
    env = {**os.environ, "LITELLM_MASTER_KEY": key, **extra_env}
    env.pop("TORCHROUTER_LEDGER_REDIS_URL", None)
    proxy = LiteLLMProcess.start(
        config, port=free_ports(1)[0], env=env, log_path=config.parent / "litellm.log"
    )
    try:
        proxy.wait_ready()
        async with aiohttp.ClientSession() as session:
            for host in spec.hosts if preload else ():
                for m in host.models:  # loaded for good (keep_alive -1) before the clock starts
                    body = {"model": m.name, "stream": False, "keep_alive": -1, "messages": []}
                    async with session.post(f"http://127.0.0.1:{host.port}/api/chat", json=body) as resp:
                        assert resp.status == 200, await resp.text()
        await asyncio.sleep(max(1.0, 5 * PROBE_INTERVAL_S))  # our hooks' probe has seen every host
        await warm_up(proxy.url, key, sorted({r.group for r in requests}))
        if not preload:
            sim.reset()  # everything unloaded, counters and history zeroed: the run starts cold
            await asyncio.sleep(max(1.0, 5 * PROBE_INTERVAL_S))  # ... and our hooks' probe has seen it
        answers = await drive(proxy.url, key, requests, scale)
        history = host_history(sim)
        counters: Counter[str] = Counter()
        for state in sim.state().values():
            counters.update({k: v for k, v in state["counters"].items() if isinstance(v, int)})
    finally:
        proxy.stop()
        sim.stop()
    return answers, dict(counters), history


# -- analysis -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    router: str
    ok: int
    failed: int
    retried: int
    pct: dict[str, float]
    vs_lb: dict[str, float]
    vs_floor: dict[str, float]
    loads: int | None
    evictions: int | None
    busy_evictions: int | None
    spills: int | None
    memory_waits: int | None
    unloads: int | None = None  # keep-alive expiries
    overhead_p95: float | None = None  # outside the hosts: LiteLLM, HTTP, this client, retries (simulated s)


def row_of(
    name: str,
    latency: Mapping[int, float],
    bounds: Mapping[int, float],
    floor: Mapping[int, float] | None,
    counters: Mapping[str, int] | None,
    memory_waits: int | None,
    failed: int = 0,
    retried: int = 0,
) -> Row:
    ok = [i for i, v in latency.items() if v == v]
    values = [latency[i] for i in ok]
    pct = {n: percentile(values, q) for q, n in QUANTILES}
    lb = {n: percentile(list(bounds.values()), q) for q, n in QUANTILES}
    fl = {n: percentile(list(floor.values()), q) for q, n in QUANTILES} if floor else {}
    c = counters or {}
    return Row(
        name,
        len(ok),
        failed,
        retried,
        pct,
        {n: pct[n] / lb[n] for n in pct},
        {n: pct[n] / fl[n] for n in pct} if fl else {},
        c.get("loads") if counters is not None else None,
        c.get("evictions") if counters is not None else None,
        c.get("busy_evictions") if counters is not None else None,
        c.get("spills") if counters is not None else None,
        memory_waits,
        c.get("unloads") if counters is not None else None,
    )


def memory_waits(history: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(1 for h in history.values() if {"memory", "max_loaded"} & set(h["waited_s"]))


PARTS = ("slot", "memory", "queue", "load", "run", "outside")


def tail_parts(answer: Answer, record: Mapping[str, Any] | None, scale: float) -> dict[str, float]:
    """A request's latency taken apart (simulated seconds): the host's waits, load and run, and the rest."""
    if record is None:
        return {"outside": answer.latency_s}
    w = record["waited_s"]
    parts = {
        "slot": w.get("slot", 0.0) / scale,
        "memory": (w.get("memory", 0.0) + w.get("max_loaded", 0.0)) / scale,
        "queue": w.get("queue", 0.0) / scale,
        "load": (record["ready_at"] - record["started_at"]) / scale,
        "run": (record["finished_at"] - record["ready_at"]) / scale,
    }
    parts["outside"] = max(0.0, answer.latency_s - (record["finished_at"] - record["submitted_at"]) / scale)
    return parts


def tail_report(result: RunResult, scale: float) -> list[str]:
    ok = [a for a in result.answers if a.status == 200]
    if not ok:
        return [f"{result.router}: no answers"]
    cut = percentile([a.latency_s for a in ok], 0.95)
    tail = sorted((a for a in ok if a.latency_s >= cut), key=lambda a: -a.latency_s)
    sums = dict.fromkeys(PARTS, 0.0)
    causes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for a in tail:
        parts = tail_parts(a, result.history.get(a.request.label), scale)
        for k, v in parts.items():
            sums[k] += v
        extra = {k: v for k, v in parts.items() if k != "run"}
        causes[max(extra, key=lambda k: extra[k])] += 1
        kinds[f"{a.request.kind}{'*' if a.request.burst else ''}"] += 1
    n = len(tail)
    mean = ", ".join(f"{k} {sums[k] / n:.1f}" for k in PARTS)
    lines = [
        f"{result.router}: {n} requests at or above p95 {cut:.1f} s; mean s: {mean}; "
        f"largest extra part: {dict(causes.most_common())}; kinds (* burst): {dict(kinds.most_common())}; "
        f"phases: {dict(Counter(a.request.phase for a in tail).most_common())}"
    ]
    failed_tries = Counter(f for a in result.answers for f in a.failures)
    if failed_tries:  # what the retried requests' failed tries got: a status, or the client's error
        lines.append(f"{result.router}: failed tries before an answer: {dict(failed_tries.most_common())}")
    return lines


def estimate_report(result: RunResult, matrix: Mapping[str, Any], scale: float) -> list[str]:
    """How close our hooks' ``route_selected.estimated_ttft_ms`` came to the time to first token on the
    host (simulated s: the wait for a slot, memory or a load under way, then the prompt at the simulated
    Ollama's pace), for picks that found the model resident: all of them, and those that waited for a slot.
    Median of estimate / actual (with its quartiles) and of |estimate - actual|. An answer is paired with
    its request's last ``route_selected``, only when that names the deployment that answered (a retried or
    continued request's earlier picks are not); the workload's prompts are exactly ``prompt_tokens`` to the
    simulated Ollama, no host spills here (its slowdown is not counted). No events: no lines."""
    routed = {
        e["request_id"]: e
        for e in result.events
        if e.get("event") == "route_selected" and e.get("outcome") == "routed"
    }
    pairs: dict[str, list[tuple[float, float]]] = {"resident": [], "waited for a slot": []}
    for a in result.answers:
        event, record = routed.get(a.call_id or ""), result.history.get(a.request.label)
        profile = matrix["profiles"].get(a.deployment or "")
        if event is None or record is None or profile is None or a.status != 200:
            continue
        resident = event.get("warm_state") in ("warm", "hot")
        if event.get("deployment") != a.deployment or not resident or event.get("estimated_ttft_ms") is None:
            continue
        prompt_s = a.request.prompt_tokens / (tokens_per_s(profile) * PROMPT_SPEEDUP)
        actual = (max(record["started_at"], record["ready_at"]) - record["submitted_at"]) / scale + prompt_s
        pair = (event["estimated_ttft_ms"] / 1e3 / scale, actual)
        pairs["resident"].append(pair)
        if record["waited_s"].get("slot", 0.0) > 0:
            pairs["waited for a slot"].append(pair)
    lines = []
    for what, got in pairs.items():
        if got:
            ratios = [est / max(actual, 1e-9) for est, actual in got]
            errors = [abs(est - actual) for est, actual in got]
            q1, q2, q3 = (percentile(ratios, q) for q in (0.25, 0.5, 0.75))
            lines.append(
                f"{result.router} TTFT estimates, picks {what} (n={len(got)}): estimate/actual median "
                f"{q2:.2f} (quartiles {q1:.2f}-{q3:.2f}), |error| median {percentile(errors, 0.5):.2f} s"
            )
    return lines


def fmt_row(r: Row) -> str:
    def num(v: int | None) -> str:
        return "-" if v is None else str(v)

    vs_floor = r.vs_floor.get("p95")
    return (
        f"| {r.router} | {r.ok} | {r.failed} | {r.retried} | "
        + " | ".join(f"{r.pct[n]:.2f}" for _, n in QUANTILES)
        + " | "
        + " | ".join(f"{r.vs_lb[n]:.2f}" for _, n in QUANTILES)
        + f" | {'-' if vs_floor is None else f'{vs_floor:.2f}'} | {num(r.loads)} | {num(r.evictions)} | "
        f"{num(r.unloads)} | "
        f"{num(r.busy_evictions)} | {num(r.spills)} | {num(r.memory_waits)} | "
        f"{'-' if r.overhead_p95 is None else f'{r.overhead_p95:.2f}'} |"
    )


HEADER = (
    "| router | ok | failed | retried | p50 s | p95 s | p99 s | p50/lb | p95/lb | p99/lb | p95/floor "
    "| cold loads | evictions | unloads | busy-ev | spills | mem-wait | outside p95 s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def dump(path: Path, result: RunResult, bounds: Mapping[int, float]) -> None:
    doc = {
        "router": result.router,
        "counters": result.counters,
        "answers": [
            {
                **dataclasses.asdict(a.request),
                **{k: v for k, v in dataclasses.asdict(a).items() if k != "request"},
            }
            | {"bound_s": bounds[a.request.index], "host": result.history.get(a.request.label)}
            for a in result.answers
        ],
        "events": result.events,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))


def undump(path: Path) -> RunResult:
    """A run back from what :func:`dump` wrote (answers, host records, events)."""
    doc = json.loads(path.read_text())
    names = [f.name for f in dataclasses.fields(Request)]
    own = [f.name for f in dataclasses.fields(Answer) if f.name != "request"]
    answers, history = [], {}
    for a in doc["answers"]:
        request = Request(**{name: a[name] for name in names})
        answers.append(Answer(request, **{name: a[name] for name in own if name in a}))  # older: no failures
        if a["host"] is not None:
            history[request.label] = a["host"]
    return RunResult(doc["router"], answers, doc["counters"], history, doc["events"])


def reread(args: argparse.Namespace) -> None:
    """``--reread DIR``: the tail and estimate reports of each run dumped in DIR (``--dump``), without
    running anything; ``--fleet``, ``--disk-gb-per-s`` and ``--time-scale`` must be the dumped run's."""
    with tempfile.TemporaryDirectory() as tmp:
        matrix = render_fleet(Path(args.fleet), Path(tmp), args.disk_gb_per_s)
    for path in sorted(Path(args.reread).glob("*.json")):
        result = undump(path)
        for line in tail_report(result, args.time_scale) + estimate_report(result, matrix, args.time_scale):
            print(line)


async def main_async(args: argparse.Namespace) -> None:
    fleet_dir = Path(args.fleet)
    requests = workload(args.seed, PHASES[: args.phases])
    with tempfile.TemporaryDirectory() as tmp:
        matrix = render_fleet(fleet_dir, Path(tmp), args.disk_gb_per_s)
    bounds = {r.index: lower_bound_s(matrix, r) for r in requests}
    load = os.getloadavg()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"fleet {fleet_dir.name}"
        + (f" on {args.disk_gb_per_s:g} GB/s disks" if args.disk_gb_per_s else "")
        + f": {len(requests)} requests over {requests[-1].at:.0f} s simulated "
        f"({args.phases} phases), time scale {args.time_scale}, seed {args.seed}; latencies in simulated s"
    )
    rows: list[Row] = []
    tails: list[str] = []
    floor: dict[int, float] | None = None
    if not args.no_floor:
        t = time.monotonic()
        f = await run_floor(requests, args.time_scale, matrix)
        floor = {a.request.index: a.latency_s for a in f.answers}
        if args.dump:
            dump(Path(args.dump) / "floor.json", f, bounds)
        overhead = [floor[i] - bounds[i] for i in floor if floor[i] == floor[i]]
        floor_row = row_of("floor: warm idle fleet via LiteLLM", floor, bounds, floor, None, None)
        rows.append(dataclasses.replace(floor_row, overhead_p95=percentile(overhead, 0.95)))
        print(
            f"floor run ({time.monotonic() - t:.0f} s): LiteLLM + HTTP per request, simulated s: "
            f"p50 {percentile(overhead, 0.5):.2f}, p95 {percentile(overhead, 0.95):.2f}, "
            f"max {max(overhead):.2f}; failed {sum(1 for a in f.answers if a.status != 200)}",
            flush=True,
        )
    rows.append(row_of("lower bound (pure simulation)", bounds, bounds, floor, None, None))
    for name in args.routers:
        t = time.monotonic()
        result = await run_router(name, requests, args.time_scale, fleet_dir, args.disk_gb_per_s)
        latency = {a.request.index: a.latency_s for a in result.answers}
        failed = sum(1 for a in result.answers if a.status != 200)
        retried = sum(1 for a in result.answers if a.tries > 1)
        row = row_of(
            name, latency, bounds, floor, result.counters, memory_waits(result.history), failed, retried
        )
        outside = [
            tail_parts(a, result.history.get(a.request.label), args.time_scale)["outside"]
            for a in result.answers
            if a.status == 200
        ]
        row = dataclasses.replace(row, overhead_p95=percentile(outside, 0.95))
        rows.append(row)
        tails += tail_report(result, args.time_scale) + estimate_report(result, matrix, args.time_scale)
        print(f"{name} ({time.monotonic() - t:.0f} s):", fmt_row(row), flush=True)
        if args.dump:
            dump(Path(args.dump) / f"{name}.json", result, bounds)
    for policy in ("informed", "shuffle", "least-busy"):
        out = fleet_reference.simulate(matrix, requests, fleet_reference.POLICIES[policy])
        mw = sum(1 for _, t in out.history.values() if {"memory", "max_loaded"} & set(t.waited_s))
        rows.append(
            row_of(f"reference: {policy} (pure simulation)", out.latency_s, bounds, None, out.counters, mw)
        )
    print()
    print(HEADER)
    for r in rows:
        print(fmt_row(r))
    print()
    for line in tails:
        print(line)
    routers = {r.router: r for r in rows}
    ours = routers.get("torchrouter")
    theirs = [routers[n] for n in ("simple-shuffle", "least-busy", "latency-based-routing") if n in routers]
    if ours is not None and theirs:
        best = min(theirs, key=lambda r: r.pct["p95"])
        print(
            f"\nTorchRouter p95 {ours.pct['p95']:.2f} s = {ours.vs_lb['p95']:.2f}x lb"
            + (f", {ours.vs_floor['p95']:.2f}x floor" if ours.vs_floor else "")
            + f"; best LiteLLM strategy {best.router} p95 {best.pct['p95']:.2f} s: "
            f"{best.pct['p95'] / ours.pct['p95']:.2f}x TorchRouter's"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fleet", default=str(FLEET_DIR), help="folder with matrix.yaml and litellm_config.yaml"
    )
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phases", type=int, default=len(PHASES), help="run only the first N phases")
    parser.add_argument(
        "--routers",
        nargs="+",
        choices=list(ROUTERS),
        default=[r for r in ROUTERS if r != "torchrouter-unscaled"],
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the measured floor run")
    parser.add_argument(
        "--disk-gb-per-s",
        type=float,
        help="slower disks: every local profile loads in 2 s + vram_gb / this (matrix load_time_s)",
    )
    parser.add_argument("--dump", help="write each router's answers, host records and events here (JSON)")
    parser.add_argument("--reread", help="only print the reports of the runs --dump wrote in this folder")
    args = parser.parse_args()
    if args.reread:
        reread(args)
        return
    if args.dump:
        Path(args.dump).mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
