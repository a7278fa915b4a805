"""The connect budget on its own, through LiteLLM's real call path (its SDK in this process, real HTTP to
the simulated fleet): a host whose SYN is never answered ("blackhole") fails an attempt after the connect
budget, not after the first-byte budget, for the Ollama provider (our client) and the OpenAI one
(``httpx.Timeout``); the failure is told apart from a read timeout; a host that answers is served as
before, streamed or not."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import litellm
import pytest
from litellm import exceptions as llm

from litellm_hooks.connect_budget import (
    LocalClients,
    apply_budget,
    cloud_timeout,
    connect_capped,
    socket_factory,
)
from litellm_hooks.failures import classify
from torchrouter.sim import CloudSpec, FleetSpec, HostSpec, ModelSpec
from torchrouter.sim.fleet import SimFleetThread
from torchrouter_core.breaker import Failure

# LiteLLM's SDK in this process builds pydantic schemas of its own TypedDicts on first use; pydantic warns
# about a ``ReadOnly`` item in one of them (third-party code, nothing we can change).
pytestmark = pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")

KEY = "sk-sim-connect-key-456"
HOST = "gpu-c"
MODEL = "qwen3:8b"
SPEC = FleetSpec(
    hosts=(HostSpec(HOST, 0, gpu_memory_gb=24, models=(ModelSpec(MODEL, 6.5, 150.0, 4.6, 40960),)),),
    cloud=CloudSpec(0, KEY, ("gpt-4o-mini",)),
    time_scale=0.0,
)
CONNECT_S = 0.3
READ_S = 10.0  # the first-byte budget: a connect that waited for it would take this long
USER = [{"role": "user", "content": "One line, please."}]


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleetThread]:
    running = SimFleetThread(SPEC)
    with running:
        yield running


@pytest.fixture
async def clients(fleet: SimFleetThread) -> AsyncIterator[LocalClients]:
    fleet.call(fleet.fleet.reset())
    mine = LocalClients()
    yield mine
    await mine.aclose()
    fleet.call(fleet.fleet.reset())


async def local_call(fleet: SimFleetThread, clients: LocalClients, *, stream: bool, read_s: float) -> str:
    response: Any = await litellm.acompletion(
        model=f"ollama_chat/{MODEL}",
        api_base=fleet.fleet.host_urls[HOST],
        messages=USER,
        stream=stream,
        timeout=read_s,
        client=clients.for_connect(CONNECT_S),
    )
    if not stream:
        return str(response.choices[0].message.content)
    return "".join([chunk.choices[0].delta.content or "" async for chunk in response])


@pytest.mark.parametrize("stream", [False, True])
async def test_a_local_attempt_stops_connecting_after_the_connect_budget(
    fleet: SimFleetThread, clients: LocalClients, stream: bool
) -> None:
    fleet.call(fleet.fleet.set_fault(HOST, "blackhole"))
    started = time.monotonic()
    with pytest.raises(llm.Timeout) as err:
        await local_call(fleet, clients, stream=stream, read_s=READ_S)
    took = time.monotonic() - started
    assert classify(err.value, time.time()) == (Failure.CONNECT_TIMEOUT, None)
    # Not a timing benchmark: the two budgets are 33x apart, and only the connect budget can end it early.
    assert took < READ_S / 2, took


async def test_a_read_timeout_through_the_same_client_stays_a_timeout(
    fleet: SimFleetThread, clients: LocalClients
) -> None:
    fleet.call(fleet.fleet.set_fault(HOST, "hang"))
    with pytest.raises(llm.Timeout) as err:
        await local_call(fleet, clients, stream=False, read_s=0.5)
    assert classify(err.value, time.time()) == (Failure.TIMEOUT, None)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_host_that_answers_is_served_through_the_client(
    fleet: SimFleetThread, clients: LocalClients, stream: bool
) -> None:
    text = await local_call(fleet, clients, stream=stream, read_s=READ_S)
    assert text.startswith(f"sim:{HOST}:{MODEL}"), text
    assert clients.owns(clients.for_connect(CONNECT_S)) and not clients.owns(object())


async def test_a_cloud_attempt_stops_connecting_after_the_connect_budget(
    fleet: SimFleetThread,
) -> None:
    fleet.call(fleet.fleet.reset())
    fleet.call(fleet.fleet.set_fault("cloud", "blackhole"))
    started = time.monotonic()
    try:
        with pytest.raises(llm.Timeout) as err:
            await litellm.acompletion(
                model="openai/gpt-4o-mini",
                api_base=fleet.fleet.cloud_api_base,
                api_key=KEY,
                messages=USER,
                timeout=cloud_timeout(READ_S, CONNECT_S),
                max_retries=0,
            )
    finally:
        fleet.call(fleet.fleet.reset())
    took = time.monotonic() - started
    assert classify(err.value, time.time()) == (Failure.CONNECT_TIMEOUT, None)
    assert took < READ_S / 2, took
    assert KEY not in str(err.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [({"connect": 8.0, "read": 8.0, "write": 8.0, "pool": 8.0}, 0.3), ({"connect": 0.1}, 0.1), ({}, 0.3)],
)
async def test_the_hook_lowers_the_connect_timeout_only(given: dict[str, float], expected: float) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/api/chat", extensions={"timeout": dict(given)})
    await connect_capped(0.3)(request)
    timeout = request.extensions["timeout"]
    assert timeout["connect"] == expected
    assert {k: v for k, v in timeout.items() if k != "connect"} == {
        k: v for k, v in given.items() if k != "connect"
    }


def test_the_cloud_timeout_never_allows_more_to_connect_than_in_all() -> None:
    assert cloud_timeout(8.0, 2.0) == httpx.Timeout(8.0, connect=2.0)
    assert cloud_timeout(1.0, 2.0) == httpx.Timeout(1.0, connect=1.0)


def test_the_sockets_fail_a_dead_kept_alive_connection_after_the_connect_budget() -> None:
    """A request written into a connection kept alive from before its host vanished is never acknowledged:
    TCP_USER_TIMEOUT (the connect budget, in ms) fails it then; SO_KEEPALIVE as LiteLLM's own sockets."""
    sock = socket_factory(0.3)((socket.AF_INET, socket.SOCK_STREAM, 0, "", ()))
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 300
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getblocking() is False
    finally:
        sock.close()
    huge = socket_factory(3_000_000.0)((socket.AF_INET, socket.SOCK_STREAM, 0, "", ()))  # never an overflow
    try:
        assert huge.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2**31 - 1
    finally:
        huge.close()


OLLAMA = {"litellm_params": {"model": f"ollama_chat/{MODEL}"}}
OPENAI = {"litellm_params": {"model": "openai/gpt-4o-mini"}}


async def test_each_attempt_gets_its_budgets_the_way_its_provider_takes_them() -> None:
    mine = LocalClients()
    try:
        kwargs: dict[str, Any] = {}
        apply_budget(kwargs, OLLAMA, 8.0, 2.0, mine)  # local: our client, one number for the rest
        assert (
            kwargs["client"] is mine.for_connect(2.0) and kwargs["timeout"] == kwargs["stream_timeout"] == 8.0
        )
        apply_budget(kwargs, OPENAI, 8.0, 2.0, mine)  # a later cloud hop: our client taken back
        assert "client" not in kwargs
        assert kwargs["timeout"] == kwargs["stream_timeout"] == httpx.Timeout(8.0, connect=2.0)
        apply_budget(kwargs, OLLAMA, 60.0, 0.5, mine)  # a cold pick, another tier's connect budget
        assert kwargs["client"] is mine.for_connect(0.5) and kwargs["client"] is not mine.for_connect(2.0)
        assert kwargs["timeout"] == 60.0
        foreign = object()  # a client someone else set stays for a cloud attempt
        kwargs = {"client": foreign}
        apply_budget(kwargs, OPENAI, 8.0, 2.0, mine)
        assert kwargs["client"] is foreign
        apply_budget({}, {}, 8.0, 2.0, mine)  # a deployment without litellm_params: the cloud's way
    finally:
        await mine.aclose()
