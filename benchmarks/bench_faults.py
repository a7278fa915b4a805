"""The fault table: per fault mode, what 20 requests (half streamed) got, with circuit breakers on and off.

For each mode a fresh stack (simulated fleet + LiteLLM with our hooks + classifier, the tests' own
harness) where fast-chat is one host only (the others' fast-chat profiles locked out, as in
tests/test_faults.py), the fault injected on that host or on the cloud, then 20 sequential requests
(alternately streamed) with a 20 s client timeout. Printed per mode and per setting: answered (200 and a
whole answer), clean errors (an OpenAI-shaped error, or a stream that ends with an error event), hung (no
answer within 20 s), the median and worst time of the requests whose first attempt met the fault (time to
fail over, with the path it fails over to warmed up first), the worst time from that attempt's pick to the
next attempt's (the failure noticed), and how many requests the hooks sent to the failed target after its
breaker first opened, outside half-open trials ("sent while open") and in all ("sent after open").

Baseline in the same run: breakers off (``consecutive_failures`` and ``min_requests`` out of reach); the
per-tier time budgets stay on in both (they are what keeps a hang bounded). The "connect unanswered" rows
are a host (or the cloud) that never answers a SYN (the simulator's ``blackhole``); the one marked "one
timeout" gives connecting as long as the first byte, which is what LiteLLM's single per-call timeout
allowed before the hooks applied the connect budget on its own (the baseline for the connect budget).

Run: ``python -m benchmarks.bench_faults`` (about 9 minutes on 2 cores; BENCH_FAULTS_N sets the count,
BENCH_FAULTS_MODES picks rows by name).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import classifiers_for, running_stack
from tests.test_faults import FAST, HOST, _one_fast_chat_host

N = int(os.environ.get("BENCH_FAULTS_N", "20"))
ONLY = os.environ.get("BENCH_FAULTS_MODES")  # e.g. "429 (cloud)": run only the modes named (comma-separated)
CLIENT_TIMEOUT_S = 20.0
ON = "consecutive_failures=3,min_requests=10,cool_off_s=5,auth_recheck_s=10,default_retry_after_s=5"
OFF = "consecutive_failures=1000000,min_requests=1000000"
BUDGETS = "R.connect_s=0.5,R.first_byte_s=2,R.first_byte_cold_s=4"
# The connect budget no shorter than the first-byte budget: what a connect bounded only by the one timeout
# LiteLLM gives a call would cost (the connect rows' baseline).
ONE_TIMEOUT = "R.connect_s=2,R.first_byte_s=2,R.first_byte_cold_s=4"
MODES: list[tuple[str, str, str, str, str]] = [  # (name, target, sim mode, model, time budgets)
    ("5xx", HOST, "error_500", "auto", BUDGETS),
    ("refused", HOST, "refuse", "auto", BUDGETS),
    ("connect unanswered", HOST, "blackhole", "auto", BUDGETS),
    ("connect unanswered, one timeout", HOST, "blackhole", "auto", ONE_TIMEOUT),
    ("hang", HOST, "hang", "auto", BUDGETS),
    ("stream cut midway", HOST, "cut_stream", "auto", BUDGETS),
    ("connect unanswered (cloud)", "cloud", "blackhole", "cloud-fast", BUDGETS),
    ("401 (cloud)", "cloud", "auth", "cloud-fast", BUDGETS),
    ("429 (cloud)", "cloud", "error_429", "cloud-fast", BUDGETS),
]


async def one(session: aiohttp.ClientSession, url: str, stream: bool, model: str) -> tuple[str, float, str]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Status, one line?"}]}
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            async with session.post(
                url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "bench"}
            ) as r:
                rid = r.headers.get("X-Router-Request-Id", "")
                try:
                    text = await r.text()
                except aiohttp.ClientPayloadError:
                    text = ""
    except TimeoutError:
        return "hung", time.monotonic() - t0, ""
    took = time.monotonic() - t0
    if r.status == 200 and (not stream or "data: [DONE]" in text) and '"error"' not in text[-400:]:
        return "answered", took, rid
    return "clean_error", took, rid


async def run_mode(breaker: str, target: str, mode: str, model: str, budgets: str) -> dict[str, Any]:
    env = {
        "TORCHROUTER_BREAKER": breaker,
        "TORCHROUTER_TIME_BUDGETS": budgets,
        "TORCHROUTER_PROBE_INTERVAL_S": "0.5",
    }
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), env, _one_fast_chat_host) as stack:
        # A connection per request: a stream that broke after its 200 ends with the error event and a
        # closed connection (README, known limits), and a pooled client can send its next request on that
        # connection before it sees the close ("Server disconnected": the client's race, not the router's).
        connector = aiohttp.TCPConnector(force_close=True)
        async with classifiers_for(stack) as factory, aiohttp.ClientSession(connector=connector) as session:
            url = await factory(probe_interval_s=0.5)
            # Warm up both the path and the one the fault sends requests to (LiteLLM's first call to a
            # provider builds its client, about 0.7 s here, which is not the time to fail over).
            for warm in dict.fromkeys((model, "auto", "cloud-fast")):
                for stream in (False, True):
                    await one(session, url, stream, warm)
            # And LiteLLM's own fallback machinery: the first streamed answer after a fallback in a LiteLLM
            # process ends 0.5-0.7 s late (measured: a gap before its last chunk, whatever the failure;
            # 0.01 s from the second on). One failed attempt, then a success on the same host so that the
            # breaker's count starts from zero again.
            stack.sim.set_fault(HOST, "error_500", count=1)
            await one(session, url, True, "auto")
            await one(session, url, False, "auto")
            stack.sim.set_fault(target, mode)
            mark = len(stack.events())
            results = [await one(session, url, i % 2 == 1, model) for i in range(N)]
            events = stack.events()[mark:]

    def on_target(deployment: str) -> bool:
        if target == HOST:
            return deployment == FAST or deployment.startswith(HOST + "/")
        return deployment.startswith("openai-api/")

    first_pick: dict[str, str] = {}
    picked_at: dict[str, list[float]] = {}  # request -> when each of its attempts was routed
    for e in events:
        if e["event"] == "route_selected" and e.get("deployment") and e["request_id"] not in first_pick:
            first_pick[e["request_id"]] = e["deployment"]
        if e["event"] == "route_selected":
            picked_at.setdefault(e["request_id"], []).append(e["ts"])
    failover = [
        took for kind, took, rid in results if kind == "answered" and on_target(first_pick.get(rid, ""))
    ]
    # From the pick of the failed target to the next attempt's pick: the time to notice the failure.
    detect = [
        picked_at[rid][1] - picked_at[rid][0]
        for kind, _, rid in results
        if kind == "answered" and on_target(first_pick.get(rid, "")) and len(picked_at.get(rid, ())) > 1
    ]
    # Per breaker target (a deployment, or a host and every model on it): its picks after it first opened,
    # and those outside half-open trials (between an open and the next half-open).
    opened_at: float | None = None
    while_open, after_open = 0, 0
    for tgt in sorted({e["target"] for e in events if e["event"] == "breaker_changed"}):
        mine = [e for e in events if e["event"] == "breaker_changed" and e["target"] == tgt]
        first_open = next((e["ts"] for e in mine if e["to_state"] == "open"), None)
        if first_open is None:
            continue
        opened_at = first_open if opened_at is None else min(opened_at, first_open)
        windows, start = [], None
        for e in mine:
            if e["to_state"] == "open":
                start = e["ts"]
            elif start is not None:
                windows.append((start, e["ts"]))
                start = None
        if start is not None:
            windows.append((start, float("inf")))
        for e in events:
            d = e.get("deployment") or ""
            if (
                e["event"] != "route_selected"
                or not (d == tgt or d.startswith(tgt + "/"))
                or e["ts"] <= first_open
            ):
                continue
            after_open += 1
            while_open += any(a < e["ts"] < b for a, b in windows)
    return {
        "answered": sum(k == "answered" for k, _, _ in results),
        "clean": sum(k == "clean_error" for k, _, _ in results),
        "hung": sum(k == "hung" for k, _, _ in results),
        "failover_p50": statistics.median(failover) if failover else None,
        "failover_max": max(failover) if failover else None,
        "detect_max": max(detect) if detect else None,
        "opened": opened_at is not None,
        "sent_while_open": while_open if opened_at is not None else None,
        "sent_after_open": after_open if opened_at is not None else None,
        "first_attempt_on_target": sum(on_target(d) for d in first_pick.values()),
    }


def fmt(x: object) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


async def main() -> None:
    print(f"{N} requests per mode, half streamed; client timeout {CLIENT_TIMEOUT_S:.0f} s; budgets {BUDGETS}")
    print(f"(the 'one timeout' row: {ONE_TIMEOUT})")
    print(
        "| mode | breakers | answered | clean errors | hung | fail-over p50 s | fail-over max s | "
        "failure noticed max s | first attempt on failed target | sent while open | "
        "sent after open (trials incl.) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, target, mode, model, budgets in MODES:
        if ONLY and name not in ONLY.split(","):
            continue
        for label, breaker in (("on", ON), ("off (baseline)", OFF)):
            r = await run_mode(breaker, target, mode, model, budgets)
            cells = [name, label, r["answered"], r["clean"], r["hung"], r["failover_p50"], r["failover_max"]]
            cells += [r["detect_max"]]
            cells += [r["first_attempt_on_target"], r["sent_while_open"], r["sent_after_open"]]
            print("| " + " | ".join(fmt(c) for c in cells) + " |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
