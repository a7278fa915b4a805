"""``GET /fleet`` and the ``classifier_host_*`` metrics: per matrix host, memory, the ledger as the hooks
report it, requests in flight and resident models, through the real stack."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from classifier.fleet_status import LedgerMirror
from tests.conftest import Stack, classifiers_for, running_stack
from tests.harness import eventually
from tests.redis_server import RedisServer
from torchrouter_core.contract import HostReport


async def test_fleet_shows_every_host_its_memory_ledger_and_resident_models(
    stack: Stack, classifier_url: str
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello fleet"}], "max_tokens": 4}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            classifier_url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "inbox-triage"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            served = resp.headers["X-Router-Model"]
            assert float(resp.headers["X-Router-Timing-Score-Ms"]) >= 0
        host_id, _, model = served.split("/", 2)

        async def fleet() -> dict[str, object] | None:
            async with session.get(classifier_url + "/fleet") as r:
                doc = await r.json()
            host = doc["hosts"][host_id]
            resident = {m["model"] for m in host["resident"]}
            return doc if model in resident and doc["ledger_reported_at"] is not None else None

        doc = await eventually(fleet, timeout_s=10, what=f"{model} resident on {host_id} in /fleet")
        hosts = doc["hosts"]
        assert set(hosts) == set(stack.sim.state()) - {"cloud"}
        for host in hosts.values():
            assert host["capacity_gb"] > 0 and host["reserved_gb"] >= 0 and host["requests_in_flight"] >= 0
        assert hosts[host_id]["used_gb"] > 0
        async with session.get(classifier_url + "/metrics") as r:
            text = await r.text()
    assert f'classifier_host_vram_capacity_gb{{host="{host_id}"}}' in text
    assert f'classifier_host_vram_reserved_gb{{host="{host_id}"}}' in text
    assert f'classifier_host_resident_models{{host="{host_id}"}}' in text


async def test_fleet_keeps_no_reservation_or_request_in_flight_after_requests_end(
    stack: Stack, classifier_url: str
) -> None:
    """A burst from a cold fleet (reservations for the loads), streamed and not: once every request has
    ended, /fleet and the metrics show no reservation and no request in flight for them, with no further
    request to refresh the view (the last report was taken while its own request still ran)."""
    stack.sim.reset()
    await _burst_then_idle(classifier_url)


async def test_the_same_with_the_ledger_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/7"  # a database of its own: no other test's leases
    with running_stack(tmp_path, {"TORCHROUTER_LEDGER_REDIS_URL": url}) as stack:
        async with classifiers_for(stack) as factory:
            await _burst_then_idle(await factory(spend_redis_url=url))


async def _burst_then_idle(classifier_url: str) -> None:

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = {
            "model": "auto",
            "stream": n % 2 == 0,
            "messages": [{"role": "user", "content": f"burst {n}: write two lines"}],
            "max_tokens": 16,
        }
        async with session.post(
            classifier_url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "webmaster"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, n) for n in range(6)))
        await one(session, 7)  # and one alone, not streamed: its report counts itself
        async with session.get(classifier_url + "/fleet") as r:
            doc = await r.json()
        async with session.get(classifier_url + "/metrics") as r:
            text = await r.text()
    busy = {
        h: (v["reserved_gb"], v["reservations"], v["requests_in_flight"])
        for h, v in doc["hosts"].items()
        if v["reserved_gb"] or v["reservations"] or v["requests_in_flight"]
    }
    assert busy == {}, busy
    for line in text.splitlines():
        if line.startswith(("classifier_host_requests_in_flight{", "classifier_host_vram_reservations{")):
            assert line.endswith(" 0.0"), line


async def test_a_request_that_ended_before_its_answer_stops_counting_within_a_probe_interval(
    stack: Stack,
) -> None:
    """A request whose client leaves before LiteLLM answers gets no report of its own: the last report
    (taken by another request's answer while it ran) would keep counting it in /fleet and the lanes'
    capacity until the next answer. Within a probe round or two it no longer does, with no request."""
    stack.sim.reset()
    local = [h for h in stack.sim.state() if h != "cloud"]
    for host in local:  # a local answer never comes
        stack.sim.set_fault(host, "hang")
    try:
        async with classifiers_for(stack) as factory:
            url = await factory(probe_interval_s=0.2)
            async with aiohttp.ClientSession() as session:

                async def ask(model: str, timeout_s: float) -> int:
                    body = {"model": model, "messages": [{"role": "user", "content": "one line, please"}]}
                    async with session.post(
                        url + "/v1/chat/completions",
                        json=body,
                        headers={"X-Agent-Id": "inbox-triage"},
                        timeout=aiohttp.ClientTimeout(total=timeout_s),
                    ) as resp:
                        await resp.read()
                        return resp.status

                async def in_flight() -> dict[str, int]:
                    async with session.get(url + "/fleet") as r:
                        hosts = (await r.json())["hosts"]
                    return {h: v["requests_in_flight"] for h, v in hosts.items() if v["requests_in_flight"]}

                waiting = asyncio.create_task(ask("fast-chat", 60.0))  # hangs on a local host

                async def reported() -> dict[str, int] | None:
                    assert await ask("cloud-fast", 10.0) == 200  # another answer: its report counts the first
                    return await in_flight() or None

                counted = await eventually(reported, timeout_s=10.0, what="the hung request in the report")
                assert sum(counted.values()) == 1 and set(counted) <= set(local), counted
                waiting.cancel()  # its client leaves before any answer
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting

                async def settled() -> bool:
                    return await in_flight() == {}

                await eventually(settled, timeout_s=5.0, what="/fleet without the request that left")
    finally:
        stack.sim.reset()


# --- LedgerMirror's rule for requests that end before their answer (units) ------------------------------
H1, H2 = "h1", "h2"


def test_a_lost_request_leaves_only_what_still_runs_after_the_quiet_interval() -> None:
    mirror = LedgerMirror()
    mirror.started()  # A: relayed, own part known
    mirror.answered()
    mirror.update({H1: HostReport(4.0, 1, 1, 2)}, 10.0, "a", {H1: HostReport(0.0, 0, 0, 1)})
    mirror.started()  # B: never answered; the report above counted it (H1: 4 GB, 1 lease, 1 in flight)
    mirror.lost(11.0)
    assert not mirror.expire(11.5, 1.0) and mirror.hosts[H1].in_flight == 2  # not yet: under the interval
    assert mirror.expire(12.0, 1.0)
    assert mirror.hosts == {H1: HostReport(0.0, 0, 0, 1)}  # what A's own part says still runs
    assert mirror.ended("a") and mirror.hosts == {}


def test_nothing_expires_while_another_answer_is_awaited() -> None:
    mirror = LedgerMirror()
    mirror.update({H1: HostReport(2.0, 1, 1, 1)}, 10.0)
    mirror.started()
    mirror.started()
    mirror.lost(11.0)  # one left; the other still awaits its answer (what it holds is not known yet)
    assert not mirror.expire(20.0, 1.0) and H1 in mirror.hosts
    mirror.answered()  # its answer came, with its own part: what it holds is known
    mirror.update({H2: HostReport(0.0, 0, 0, 2)}, 21.0, "b", {H2: HostReport(0.0, 0, 0, 1)})
    mirror.expire(30.0, 1.0)
    assert mirror.hosts == {H2: HostReport(0.0, 0, 0, 1)} and mirror.unsettled_since is None


def test_a_report_after_a_loss_may_still_count_it_and_does_not_settle_it() -> None:
    """Another request's answer brings a report taken before the hooks let go of the lost request (for a
    stream already answered by its provider, at its next chunk: seconds later): it still counts it, so it
    must not end the wait for a settled view."""
    mirror = LedgerMirror()
    mirror.update({H1: HostReport(0.0, 0, 0, 1)}, 10.0)
    mirror.started()
    mirror.started()
    mirror.lost(11.0)  # one client left
    mirror.answered()
    mirror.update({H1: HostReport(0.0, 0, 0, 1)}, 13.0)  # taken before the hooks saw it: still counted
    mirror.ended("nobody")
    mirror.expire(13.0, 1.0)
    assert mirror.hosts == {}


def test_a_request_lost_while_nothing_was_reported_changes_nothing() -> None:
    mirror = LedgerMirror()
    mirror.started()
    mirror.lost(1.0)
    assert mirror.unsettled_since is None and not mirror.expire(100.0, 1.0) and mirror.awaiting == 0
