"""``GET /fleet`` and the ``classifier_host_*`` metrics: per matrix host, memory, the ledger as the hooks
report it, requests in flight and resident models, through the real stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import Stack, classifiers_for, running_stack
from tests.harness import eventually
from tests.redis_server import RedisServer


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
