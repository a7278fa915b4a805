"""The simulated host's accounting for the fleet benchmark: per-model slots, busy evictions, history."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from torchrouter.sim import FleetSpec, HostSpec, ModelSpec, SimFleet
from torchrouter.sim.ollama_app import HostRuntime
from torchrouter.sim.scheduler import HostScheduler, Start, Wait
from torchrouter.sim.spec import fleet_spec_from_matrix

# 24 GB, one slot per model unless the model says otherwise; A/B/C 10 GB each, loads of 2 s.
HOST = HostSpec(
    host_id="h",
    port=0,
    gpu_memory_gb=24,
    num_parallel=1,
    models=(
        ModelSpec("A", 10, 50.0, 2.0, num_parallel=3),
        ModelSpec("B", 10, 50.0, 2.0),
        ModelSpec("C", 10, 50.0, 2.0),
    ),
)


def test_a_model_s_own_num_parallel_overrides_the_host_s() -> None:
    sched = HostScheduler(HOST)
    a = [sched.submit("A", 0) for _ in range(4)]
    assert [type(sched.try_start(t, 0)).__name__ for t in a] == ["Start", "Start", "Start", "Wait"]
    b = [sched.submit("B", 0) for _ in range(2)]
    assert [type(sched.try_start(t, 0)).__name__ for t in b] == ["Start", "Wait"]


def test_the_matrix_s_profile_num_parallel_reaches_the_model() -> None:
    host = {"api_base": "http://127.0.0.1:1", "gpu_memory_gb": 24, "num_parallel": 2, "max_loaded_models": 3}
    profile = {"provider": "ollama", "host_id": "h", "vram_gb": 6.0, "speed_score": 0.5}
    doc = {
        "hosts": {"h": host},
        "profiles": {
            "h/ollama/a": profile | {"model": "a", "num_parallel": 4},
            "h/ollama/b": profile | {"model": "b"},
        },
    }
    spec = fleet_spec_from_matrix(doc, cloud_api_key="k").hosts[0]
    assert [(m.name, m.num_parallel, spec.slots(m)) for m in spec.models] == [("a", 4, 4), ("b", None, 2)]


def test_evicting_a_model_with_requests_waiting_for_it_is_a_busy_eviction() -> None:
    sched = HostScheduler(HOST)
    a1, b1 = sched.submit("A", 0), sched.submit("B", 0)
    assert isinstance(sched.try_start(a1, 0), Start) and isinstance(sched.try_start(b1, 0), Start)
    waiting_for_a = [sched.submit("A", 1) for _ in range(3)]
    a1_more = [sched.try_start(t, 1) for t in waiting_for_a]
    assert [type(d).__name__ for d in a1_more] == ["Start", "Start", "Wait"]  # 3 slots: the third waits
    c = sched.submit("C", 1)
    assert sched.try_start(c, 1) == Wait("memory")
    for t in (a1, *waiting_for_a[:2]):
        sched.release(t, 5)  # A is idle now, one request still queued for it
    start = sched.try_start(c, 5)  # C's load is retried first and takes A from under the queued request
    assert isinstance(start, Start) and start.evicted == ("A",)
    assert sched.counters.evictions == 1 and sched.counters.busy_evictions == 1


def test_evicting_an_idle_model_nobody_waits_for_is_not_a_busy_eviction() -> None:
    sched = HostScheduler(HOST)
    for model, t in (("A", 0), ("B", 1)):
        ticket = sched.submit(model, t)
        sched.try_start(ticket, t)
        sched.release(ticket, t + 0.5)
    c = sched.submit("C", 2)
    assert isinstance(sched.try_start(c, 2), Start)
    assert sched.counters.evictions == 1 and sched.counters.busy_evictions == 0


def test_history_says_what_each_request_waited_for_and_when_it_ran() -> None:
    sched = HostScheduler(HOST, time_scale=1.0)
    first = sched.submit("B", 0, label="req-1")
    assert isinstance(sched.try_start(first, 0), Start)
    second = sched.submit("B", 1, label="req-2")
    assert sched.try_start(second, 1) == Wait("slot")
    assert sched.try_start(second, 2) == Wait("slot")  # a retry that still waits keeps counting
    sched.release(first, 4)
    assert isinstance(sched.try_start(second, 4), Start)
    gone = sched.submit("B", 5, label="req-3")  # waits for the slot, then its client gives up
    assert sched.try_start(gone, 5) == Wait("slot")
    sched.release(gone, 5.5)
    sched.release(second, 6)
    assert [t.label for t in sched.history] == ["req-1", "req-3", "req-2"]
    assert (gone.started_at, gone.finished_at, gone.waited_s) == (None, 5.5, {"slot": 0.5})
    assert (first.loaded, first.started_at, first.ready_at, first.finished_at) == (True, 0, 2.0, 4)
    assert (second.loaded, second.started_at, second.ready_at, second.waited_s) == (False, 4, 4, {"slot": 3})
    assert second.submitted_at == 1 and second.finished_at == 6
    sched.reset()
    assert not sched.history and sched.counters.busy_evictions == 0


@pytest.mark.parametrize("content", ["req-0042 write a function", [{"type": "text", "text": "req-0042 hi"}]])
async def test_the_simulated_ollama_labels_a_request_by_its_prompt(content: object) -> None:
    spec = FleetSpec(hosts=(HOST,), cloud=None, time_scale=0.001)
    async with SimFleet(spec) as fleet, aiohttp.ClientSession() as http:
        body = {"model": "B", "stream": False, "messages": [{"role": "user", "content": content}]}
        async with http.post(fleet.host_urls["h"] + "/api/chat", data=orjson.dumps(body)) as resp:
            assert resp.status == 200
        runtime = fleet.runtime("h")
        assert isinstance(runtime, HostRuntime)
        (done,) = runtime.sched.history
        assert done.label.startswith("req-0042") and done.loaded and done.finished_at is not None
