"""The simulated fleet over real HTTP: Ollama's API shapes, the cloud's OpenAI API, faults and the fleet."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from tests.harness import served
from torchrouter.sim import CloudSpec, FleetSpec, HostSpec, ModelSpec, SimFleet, SimFleetError, serve_forever
from torchrouter.sim.fleet import SimFleetThread
from torchrouter.sim.ollama_app import GIB, create_host_app, make_reply
from torchrouter.sim.spec import fleet_spec_from_matrix

KEY = "sk-sim-test-key-123"
HOST = "gpu-a"
FAST, SLOW, HUGE = "qwen3:8b", "qwen2.5-coder:32b", "llama3.3:70b"
SPEC = FleetSpec(
    hosts=(
        HostSpec(
            HOST,
            0,
            gpu_memory_gb=24,
            models=(
                ModelSpec(FAST, 6.5, 150.0, 4.6, 40960, reasoning=True),
                ModelSpec(SLOW, 20.0, 40.0, 10.0),
                ModelSpec(HUGE, 40.0, 20.0, 18.0),
            ),
        ),
    ),
    cloud=CloudSpec(0, KEY, ("gpt-4o-mini",)),
    time_scale=0.02,
)
USER = [{"role": "user", "content": "Summarize the routing decision for this request"}]


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    async with SimFleet(SPEC) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def host(fleet: SimFleet) -> str:
    return fleet.host_urls[HOST]


async def chat(http: aiohttp.ClientSession, url: str, **body: Any) -> tuple[int, Any]:
    payload = {"model": FAST, "messages": USER, "stream": False} | body
    # LiteLLM's ollama_chat provider sends JSON as application/octet-stream.
    async with http.post(
        url + "/api/chat", data=orjson.dumps(payload), headers={"Content-Type": "application/octet-stream"}
    ) as resp:
        return resp.status, orjson.loads(await resp.read())


async def state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/sim/state") as resp:
        data: dict[str, Any] = await resp.json()
        return data


def sse_events(text: str) -> list[str]:
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block.strip()]


async def test_native_info_endpoints(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    async with http.get(host(fleet) + "/") as resp:
        assert await resp.text() == "Ollama is running"
    async with http.get(host(fleet) + "/api/version") as resp:
        assert "version" in await resp.json()
    async with http.get(host(fleet) + "/api/tags") as resp:
        tags = await resp.json()
    assert [m["name"] for m in tags["models"]] == [FAST, SLOW, HUGE]
    assert tags["models"][0]["size"] == int(6.5 * GIB)
    async with http.post(host(fleet) + "/api/show", json={"model": FAST}) as resp:
        show = await resp.json()
    assert show["model_info"]["qwen3.context_length"] == 40960 and "thinking" in show["capabilities"]


async def test_chat_non_stream(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    status, cold = await chat(http, host(fleet), think=False, options={"num_predict": 8})
    assert status == 200
    assert cold["message"]["content"].startswith(f"sim:{HOST}:{FAST} reply to 'Summarize the routing")
    assert "thinking" not in cold["message"]
    # num_predict cut the answer: Ollama says so with done_reason "length"
    assert cold["done"] is True and cold["done_reason"] == "length" and cold["eval_count"] == 8
    assert cold["prompt_eval_count"] > 0 and cold["load_duration"] >= 0.9 * 4.6 * 0.02 * 1e9
    _, warm = await chat(http, host(fleet), think=False, options={"num_predict": 8})
    assert warm["load_duration"] == 0
    assert warm["message"] == cold["message"]  # deterministic for the same request and seed
    _, other = await chat(http, host(fleet), think=False, messages=[{"role": "user", "content": "hello"}])
    assert other["message"]["content"] != cold["message"]["content"] and other["eval_count"] == 24


async def test_chat_stream_with_thinking(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    body = {"model": FAST, "messages": USER, "stream": True, "think": True, "options": {"num_predict": 20}}
    async with http.post(host(fleet) + "/api/chat", json=body) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    *chunks, final = lines
    assert all(c["done"] is False and c["model"] == FAST for c in chunks)
    assert final["done"] is True and final["eval_count"] == len(chunks) == 20
    thinking = [c for c in chunks if c["message"].get("thinking")]
    assert thinking and chunks[: len(thinking)] == thinking  # thinking comes first
    content = "".join(c["message"]["content"] for c in chunks)
    assert content.startswith(f"sim:{HOST}:{FAST}")


async def test_think_values_are_counted(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    _, absent = await chat(http, host(fleet))
    assert absent["message"]["thinking"]  # a reasoning model thinks unless told not to
    await chat(http, host(fleet), think=False)
    await chat(http, host(fleet), think=False)
    await chat(http, host(fleet), model=SLOW, think=True)
    got = await state(http, host(fleet))
    assert got["think"] == {FAST: {"absent": 1, "false": 2}, SLOW: {"true": 1}}
    assert got["counters"]["requests"] == 4


async def test_ps_reports_resident_models_and_keep_alive(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    async def ps() -> list[dict[str, Any]]:
        async with http.get(host(fleet) + "/api/ps") as resp:
            models: list[dict[str, Any]] = (await resp.json())["models"]
            return models

    await chat(http, host(fleet), think=False)
    (fast,) = await ps()
    assert fast["name"] == fast["model"] == FAST and fast["details"]["family"] == "qwen3"
    assert fast["size"] == fast["size_vram"] == int(6.5 * GIB)
    expires = datetime.fromisoformat(fast["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=4) < expires <= timedelta(minutes=5)
    await chat(http, host(fleet), think=False, keep_alive=-1)
    assert datetime.fromisoformat((await ps())[0]["expires_at"]).year > 2200  # never expires
    await chat(http, host(fleet), think=False, keep_alive=0)  # unload as soon as idle
    assert await ps() == []


async def test_chat_with_no_messages_loads_the_model_and_answers_done_reason_load(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    status, body = await chat(http, host(fleet), model=SLOW, messages=[], keep_alive="2m")
    took = time.monotonic() - started
    assert status == 200, body
    assert body["done"] is True and body["done_reason"] == "load" and body["model"] == SLOW
    assert body["message"] == {"role": "assistant", "content": ""}
    assert took >= 0.9 * 10.0 * 0.02  # it waited for the load (10 s simulated at this time scale)
    got = await state(http, host(fleet))
    (resident,) = got["resident"]
    assert (resident["model"], resident["active"], resident["loading"]) == (SLOW, 0, False)
    assert 60 < resident["expires_in_s"] <= 120  # its keep_alive, counted from the end of the load
    assert (got["counters"]["loads"], got["counters"]["requests"], got["in_flight"]) == (1, 0, 0)
    status, again = await chat(http, host(fleet), model=SLOW, messages=[])  # resident already: at once
    assert status == 200 and again["done_reason"] == "load"
    assert (await state(http, host(fleet)))["counters"]["loads"] == 1


async def test_bad_requests(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    status, body = await chat(http, host(fleet), model="nope:1b")
    assert (status, body) == (404, {"error": 'model "nope:1b" not found, try pulling it first'})
    async with http.post(host(fleet) + "/api/chat", data=b"{not json") as resp:
        assert resp.status == 400 and "error" in await resp.json()
    status, body = await chat(http, host(fleet), keep_alive="soon")
    assert status == 400
    assert (await state(http, host(fleet)))["counters"]["errors"] == 3


async def test_openai_compatible_endpoint_on_host(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    body = {"model": FAST, "messages": USER, "max_tokens": 6, "reasoning_effort": "none"}
    async with http.post(host(fleet) + "/v1/chat/completions", json=body) as resp:
        data = await resp.json()
    assert data["object"] == "chat.completion" and data["usage"]["completion_tokens"] == 6
    assert data["choices"][0]["message"]["content"].startswith(f"sim:{HOST}:{FAST}")
    async with http.post(host(fleet) + "/v1/chat/completions", json=body | {"stream": True}) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = sse_events(await resp.text())
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).startswith(f"sim:{HOST}")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # max_tokens cut it
    assert (await state(http, host(fleet)))["think"] == {FAST: {"false": 2}}


async def test_one_slot_queues_the_second_request(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    first = asyncio.create_task(chat(http, host(fleet), model=SLOW, options={"num_predict": 40}))
    second = asyncio.create_task(chat(http, host(fleet), model=SLOW, options={"num_predict": 40}))
    await asyncio.sleep(0.08)  # inside the 0.2 s load
    busy = await state(http, host(fleet))
    assert busy["in_flight"] == 2 and busy["waiting"] == {SLOW: 1}
    assert busy["resident"][0]["active"] == 1 and busy["resident"][0]["loading"] is True
    (_, a), (_, b) = await asyncio.gather(first, second)
    assert a["load_duration"] > 0 and b["load_duration"] == 0
    assert b["total_duration"] > a["eval_duration"]  # it waited for the first one
    done = await state(http, host(fleet))
    assert done["in_flight"] == 0 and done["counters"]["loads"] == 1


async def test_memory_pressure_evicts_then_spills(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    await chat(http, host(fleet), model=SLOW)
    await chat(http, host(fleet), think=False)  # 20 + 6.5 > 24: the idle coder model goes
    mid = await state(http, host(fleet))
    assert [r["model"] for r in mid["resident"]] == [FAST] and mid["counters"]["evictions"] == 1
    async with http.post(host(fleet) + "/sim/external", json={"gb": 20}) as resp:
        assert (await resp.json())["external_gb"] == 20
    await chat(http, host(fleet), model=SLOW)  # only 4 GB left for a 20 GB model
    end = await state(http, host(fleet))
    assert end["counters"]["spills"] == 1 and end["resident"][0]["spilled"] is True
    assert end["memory_in_use_gb"] == 4


async def test_client_going_away_frees_its_slot(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    body = {"model": SLOW, "messages": USER, "stream": True, "options": {"num_predict": 5000}}
    resp = await http.post(host(fleet) + "/api/chat", json=body)
    assert (await resp.content.readline()).startswith(b"{")
    resp.close()
    await asyncio.sleep(0.05)
    got = await state(http, host(fleet))
    assert got["in_flight"] == 0 and got["resident"][0]["active"] == 0 and got["counters"]["cancelled"] == 1
    status, _ = await chat(http, host(fleet), model=SLOW, options={"num_predict": 2})
    assert status == 200


async def test_error_fault_for_a_count(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    async with http.post(host(fleet) + "/sim/fault", json={"mode": "error_500", "count": 1}) as resp:
        assert (await resp.json())["fault"] == {"mode": "error_500", "remaining": 1, "after_chunks": 2}
    assert (await chat(http, host(fleet)))[0] == 500
    assert (await chat(http, host(fleet)))[0] == 200
    got = await state(http, host(fleet))
    assert got["fault"]["mode"] == "none" and got["counters"]["errors"] == 1


async def test_cut_stream_fault(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    await fleet.set_fault(HOST, "cut_stream", after_chunks=3)
    body = {"model": FAST, "messages": USER, "stream": True, "think": False}
    lines: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(host(fleet) + "/api/chat", json=body) as resp:
            async for line in resp.content:
                lines.append(line)
    assert len(lines) == 3
    await fleet.set_fault(HOST, "none")
    got = await state(http, host(fleet))
    assert got["in_flight"] == 0 and got["counters"]["errors"] == 1


async def test_cut_non_stream_answer(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    await fleet.set_fault(HOST, "cut_stream", count=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await chat(http, host(fleet))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(host(fleet) + "/v1/chat/completions", json={"model": FAST, "messages": USER}):
            pass
    got = await state(http, host(fleet))
    assert got["in_flight"] == 0 and got["counters"]["errors"] == 2 and got["fault"]["mode"] == "none"


async def test_hang_fault_until_client_gives_up(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    await fleet.set_fault(HOST, "hang", count=1)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            host(fleet) + "/api/chat",
            json={"model": FAST, "messages": USER},
            timeout=aiohttp.ClientTimeout(total=0.2),
        ):
            pass
    await asyncio.sleep(0.05)
    assert (await state(http, host(fleet)))["counters"]["cancelled"] == 1
    assert (await chat(http, host(fleet)))[0] == 200


async def test_refuse_closes_the_port_until_cleared(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    url = host(fleet)
    async with http.post(url + "/sim/fault", json={"mode": "refuse"}) as resp:
        assert resp.status == 200
    with pytest.raises(aiohttp.ClientConnectorError) as err:
        await chat(http, url)
    assert isinstance(err.value.os_error, ConnectionRefusedError)
    await fleet.set_fault(HOST, "none")
    assert host(fleet) == url and (await chat(http, url))[0] == 200


async def test_refuse_through_the_python_api_refuses_a_pooled_connection_at_once(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    """A connection the client keeps alive from before the fault is closed when the host starts refusing
    (as a stopped Ollama closes its idle connections): the next request is refused at once, never left
    hanging on a connection nothing serves any more."""
    url = host(fleet)
    assert (await chat(http, url))[0] == 200  # the session now pools a kept-alive connection
    await fleet.set_fault(HOST, "refuse")
    started = time.monotonic()
    # The pooled connection, if the client picks it before it sees the close, ends at once (as a killed
    # Ollama's would); the next request connects anew and is refused.
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientConnectorError)):
        async with asyncio.timeout(5):
            await chat(http, url)
    with pytest.raises(aiohttp.ClientConnectorError) as err:
        async with asyncio.timeout(5):
            await chat(http, url)
    assert isinstance(err.value.os_error, ConnectionRefusedError) and time.monotonic() - started < 1.0
    await fleet.set_fault(HOST, "none")
    assert (await chat(http, url))[0] == 200


async def test_blackhole_leaves_a_connect_unanswered_until_cleared(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    """A black-holed host never answers a new connection: the client's connect timeout ends it (not a
    refusal, not a read timeout); set through the HTTP API too; cleared, the same port serves again."""
    url = host(fleet)
    async with http.post(url + "/sim/fault", json={"mode": "blackhole"}) as resp:
        assert resp.status == 200 and (await resp.json())["fault"]["mode"] == "blackhole"
    for _ in range(2):  # not once by luck: every new connection waits
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            async with http.post(
                url + "/api/chat",
                json={"model": FAST, "messages": USER},
                timeout=aiohttp.ClientTimeout(sock_connect=0.3, sock_read=10),
            ):
                pass
    assert fleet.runtime(HOST).state()["fault"]["mode"] == "blackhole"
    await fleet.set_fault(HOST, "refuse")  # from one socket fault to the other
    with pytest.raises(aiohttp.ClientConnectorError) as err:
        await chat(http, url)
    assert isinstance(err.value.os_error, ConnectionRefusedError)
    await fleet.set_fault(HOST, "blackhole")
    await fleet.set_fault(HOST, "none")
    assert host(fleet) == url and (await chat(http, url))[0] == 200


async def test_a_black_hole_that_cannot_take_the_port_leaves_no_fault_behind(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    url = host(fleet)
    port = int(url.rsplit(":", 1)[1])
    await fleet.set_fault(HOST, "refuse")
    squatter = socket.create_server(("127.0.0.1", port))  # another process took the port meanwhile
    try:
        with pytest.raises(SimFleetError):
            await fleet.set_fault(HOST, "blackhole")
        assert fleet.runtime(HOST).state()["fault"]["mode"] == "none"
    finally:
        squatter.close()
    await fleet.set_fault(HOST, "none")
    assert (await chat(http, url))[0] == 200


async def test_a_socket_fault_needs_the_fleet_that_owns_the_socket(http: aiohttp.ClientSession) -> None:
    app = create_host_app(SPEC.hosts[0], seed=1, time_scale=0.0)
    async with served(app) as url:
        for mode in ("refuse", "blackhole"):
            async with http.post(url + "/sim/fault", json={"mode": mode}) as resp:
                assert resp.status == 400 and "SimFleet" in (await resp.json())["error"]


async def test_reset(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    await chat(http, host(fleet))
    await fleet.set_fault(HOST, "error_500")
    async with http.post(host(fleet) + "/sim/reset") as resp:
        got = await resp.json()
    assert got["resident"] == [] and got["counters"]["requests"] == 0 and got["fault"]["mode"] == "none"


async def test_cloud_requires_the_key_and_never_echoes_it(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    assert fleet.cloud_api_base is not None
    url = fleet.cloud_api_base + "/chat/completions"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with http.post(url, json={"model": "gpt-4o-mini", "messages": USER}, headers=headers) as resp:
            text = await resp.text()
        assert resp.status == 401 and KEY not in text and "wrong" not in text
        assert orjson.loads(text)["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {KEY}"}
    async with http.get(fleet.cloud_api_base + "/models", headers=auth) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["gpt-4o-mini"]
    async with http.post(url, json={"model": "gpt-9", "messages": USER}, headers=auth) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "model_not_found"


async def test_cloud_chat(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    assert fleet.cloud_api_base is not None
    url, auth = fleet.cloud_api_base + "/chat/completions", {"Authorization": f"Bearer {KEY}"}
    body = {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 5}
    async with http.post(url, json=body, headers=auth) as resp:
        data = await resp.json()
    assert data["choices"][0]["message"]["content"].startswith("sim:cloud:gpt-4o-mini")
    assert data["usage"]["completion_tokens"] == 5
    stream_body = body | {"stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=stream_body, headers=auth) as resp:
        events = sse_events(await resp.text())
    assert events[-1] == "[DONE]"
    usage_chunk = orjson.loads(events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 5
    for mode, status in (("error_429", 429), ("auth", 401)):
        await fleet.set_fault("cloud", mode, count=1)
        async with http.post(url, json=body, headers=auth) as resp:
            assert resp.status == status
            assert resp.status != 429 or resp.headers["Retry-After"] == "1"
    assert fleet.state()["cloud"]["counters"] == {
        "requests": 4,
        "loads": 0,
        "evictions": 0,
        "spills": 0,
        "unloads": 0,
        "errors": 2,
        "cancelled": 0,
    }


async def test_busy_port_is_named_in_the_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = FleetSpec(hosts=(HostSpec("busy", port, 8, models=(ModelSpec("m", 1, 10, 1),)),), cloud=None)
        with pytest.raises(SimFleetError, match=f"127.0.0.1:{port}"):
            await SimFleet(spec).start()


async def test_serve_forever_until_cancelled(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a free port; serve_forever cannot report one it picked itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = FleetSpec(hosts=(HostSpec("solo", port, 8, models=(ModelSpec("m", 1, 10, 1),)),), cloud=None)
    task = asyncio.create_task(serve_forever(spec))
    for _ in range(100):
        try:
            async with http.get(f"http://127.0.0.1:{port}/api/version") as resp:
                assert resp.status == 200
                break
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("serve_forever never listened")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_fleet_thread_serves_a_blocking_caller() -> None:
    # LiteLLM's SDK makes a synchronous call to /api/show from its event loop: a fleet in a thread answers it.
    import urllib.request

    with (
        SimFleetThread(SPEC) as running,
        urllib.request.urlopen(running.host_urls[HOST] + "/api/version") as r,
    ):
        assert r.status == 200


def test_replies_depend_on_seed_and_request() -> None:
    one = make_reply(0, "h", "m", USER, budget=None, thinking=False)
    assert one == make_reply(0, "h", "m", USER, budget=None, thinking=False)
    assert one.text != make_reply(1, "h", "m", USER, budget=None, thinking=False).text
    capped = make_reply(0, "h", "m", USER, budget=3, thinking=True)
    assert capped.eval_count == 3 and capped.text.startswith("sim:h:m")  # thinking never eats the tag


def test_fleet_spec_from_matrix() -> None:
    doc = {
        "schema_version": "1.0",
        "hosts": {
            "gpu-a": {
                "api_base": "http://127.0.0.1:11501",
                "gpu_memory_gb": 24,
                "num_parallel": 2,
                "max_loaded_models": 3,
            }
        },
        "profiles": {
            "gpu-a/ollama/qwen3:8b": {
                "lane": "fast-chat",
                "host_id": "gpu-a",
                "provider": "ollama",
                "model": "qwen3:8b",
                "api_base": "http://127.0.0.1:11501",
                "context_window": 40960,
                "vram_gb": 6.5,
                "speed_score": 0.9,
                "requires_think_false": True,
            },
            "openai-api/openai/gpt-4o-mini": {
                "lane": "cloud-fast",
                "host_id": "openai-api",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "api_base": "http://127.0.0.1:11510/v1",
            },
        },
    }
    spec = fleet_spec_from_matrix(doc, cloud_api_key=KEY, time_scale=0.5)
    (h,) = spec.hosts
    assert (h.host_id, h.port, h.gpu_memory_gb, h.num_parallel, h.max_loaded_models) == (
        "gpu-a",
        11501,
        24,
        2,
        3,
    )
    assert h.models == (ModelSpec("qwen3:8b", 6.5, 20 + 130 * 0.9, 2 + 0.4 * 6.5, 40960, reasoning=True),)
    assert spec.cloud == CloudSpec(11510, KEY, ("gpt-4o-mini",)) and KEY not in repr(spec.cloud)
    assert spec.time_scale == 0.5
