"""The VRAM ledger: the pure rule (table-driven), and both backends (in-process, real Redis) held to it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from collections.abc import AsyncIterator

import pytest

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from capability_matrix.model import Matrix, Profile, WarmState
from litellm_hooks.reservations import Reservations
from tests.harness import eventually
from tests.redis_server import RedisServer
from torchrouter.redis_ledger import RedisLedger
from torchrouter_core.ledger import (
    InProcessLedger,
    Lease,
    Ledger,
    LedgerBook,
    ReserveRequest,
    admits,
    memory_claim,
    pending_by_model,
)
from torchrouter_core.memory import OLLAMA_MIN_MEMORY_GB
from torchrouter_core.usability import HostRoom

NOW = 1_000_000.0
_prefixes = itertools.count()


def req(
    lease_id: str,
    model: str = "m",
    gb: float = 10.0,
    *,
    host: str = "h",
    free: float = 24.0,
    slots: int = 3,
    resident: frozenset[str] = frozenset(),
    victims: tuple[tuple[str, float], ...] = (),
) -> ReserveRequest:
    return ReserveRequest(lease_id, host, model, gb, free, slots, resident, victims)


def lease(
    lease_id: str,
    model: str,
    gb: float,
    expires: float = NOW + 60,
    victims: tuple[tuple[str, float], ...] = (),
) -> Lease:
    return Lease(lease_id, "h", model, gb, expires, victims)


AB = frozenset({"a", "b"})  # two resident models, 10 GB each, on a host with 4 GB free


# -- the pure rule -----
@pytest.mark.parametrize(
    ("request_", "held", "expected"),
    [
        (req("a", gb=10, free=24), [], True),
        (req("a", gb=24, free=24), [], True),  # exactly full fits
        (req("a", gb=24.5, free=24), [], False),
        (req("a", "x", 10, free=24), [lease("b", "y", 14)], True),
        (req("a", "x", 10, free=24), [lease("b", "y", 15)], False),
        # a second request for the same pending model shares its load: one copy counted
        (req("a", "y", 14, free=24), [lease("b", "y", 14), lease("c", "z", 10)], True),
        # a lease whose model the poll now lists as resident is in the poll's "used" already
        (req("a", "x", 20, free=24, resident=frozenset({"y"})), [lease("b", "y", 14)], True),
        # model slots: two pending models but one slot left
        (req("a", "x", 1, slots=1), [lease("b", "y", 1)], False),
        (req("a", "x", 1, slots=0), [], False),
        # a request for a model already resident needs no memory
        (req("a", "x", 100, free=0, slots=0, resident=frozenset({"x"})), [], True),
        # -- evictions: a load counts its victims' memory and model slots as freed
        (req("e", "x", 14, free=4, slots=0, resident=AB, victims=(("a", 10),)), [], True),
        (req("e", "x", 14.5, free=4, slots=0, resident=AB, victims=(("a", 10),)), [], False),
        (req("e", "x", 24, free=4, slots=0, resident=AB, victims=(("a", 10), ("b", 10))), [], True),
        # a victim is counted once: a second load may not count a's memory again
        (
            req("e", "y", 4, free=4, slots=0, resident=AB, victims=(("a", 10),)),
            [lease("d", "x", 14, victims=(("a", 10),))],
            False,
        ),
        # ... nor fit beside the first without a victim of its own (no slot, no memory left)
        (req("e", "y", 1, free=4, slots=0, resident=AB), [lease("d", "x", 14, victims=(("a", 10),))], False),
        # ... but with b as its own victim it does
        (
            req("e", "y", 10, free=4, slots=0, resident=AB, victims=(("b", 10),)),
            [lease("d", "x", 14, victims=(("a", 10),))],
            True,
        ),
        # a model with a live lease (just loaded: settling) is never a victim
        (
            req("e", "x", 10, free=4, slots=0, resident=AB, victims=(("a", 10),)),
            [lease("d~settle", "a", 10)],
            False,
        ),
        # a victim the poll no longer lists is already gone: its memory is in the poll's free figure
        (req("e", "x", 14, free=14, slots=1, resident=frozenset({"b"}), victims=(("a", 10),)), [], True),
        # a second request for a model whose load (and eviction) is already reserved adds nothing
        (req("e", "x", 14, free=4, slots=0, resident=AB), [lease("d", "x", 14, victims=(("a", 10),))], True),
    ],
)
def test_admits(request_: ReserveRequest, held: list[Lease], expected: bool) -> None:
    assert admits(request_, held) is expected


def test_pending_counts_each_model_once_at_its_largest_claim() -> None:
    leases = [lease("a", "x", 4), lease("b", "x", 6), lease("c", "y", 2), lease("d", "r", 9)]
    assert pending_by_model(leases, {"r"}) == {"x": 6, "y": 2}


@pytest.mark.parametrize(
    ("warm", "local", "observed", "expected"),
    [
        (WarmState.COLD, True, {}, 5.0 + OLLAMA_MIN_MEMORY_GB),  # declared + Ollama's minimum memory
        (WarmState.COLD, True, {("h1", "qwen3:8b"): 7.5}, 7.5),  # observed size_vram wins
        (WarmState.WARM, True, {}, None),
        (WarmState.HOT, True, {}, None),
        (WarmState.UNKNOWN, True, {}, None),
        (WarmState.COLD, False, {}, None),  # cloud
    ],
)
def test_memory_claim(
    warm: WarmState, local: bool, observed: dict[tuple[str, str], float], expected: float | None
) -> None:
    class P:  # only the fields memory_claim reads
        is_local = local
        warm_state = warm
        host_id = "h1"
        model = "qwen3:8b"
        vram_gb = 5.0

    assert memory_claim(P(), observed) == expected  # type: ignore[arg-type]


def test_book_expiry_frees_memory_and_renewal_keeps_it() -> None:
    book = LedgerBook()
    assert book.reserve(req("a", "x", 20), NOW, ttl_s=10)
    assert book.reserve(req("b", "y", 20), NOW + 1, ttl_s=10) is False
    assert book.renew("a", NOW + 9, ttl_s=10)  # now lives until NOW + 19
    assert book.reserve(req("b", "y", 20), NOW + 18, ttl_s=10) is False
    assert book.reserve(req("b", "y", 20), NOW + 19, ttl_s=10)  # a expired at NOW + 19
    assert book.release("a") is False
    assert book.peak_gb == {"h": 20}


def test_the_ledger_never_overcommits_with_evictions() -> None:
    """Random reserves, some naming victims, releases and polls on one 24 GB host: after every grant,
    reserved + resident models that are no live lease's victim <= capacity (never an overcommit)."""
    rng = random.Random(9)
    capacity, sizes = 24.0, {f"m{i}": float(rng.choice((4, 6, 8, 10))) for i in range(8)}
    book, resident = LedgerBook(), {"m0", "m1"}
    for step in range(400):
        now = NOW + step
        used = sum(sizes[m] for m in resident)
        if rng.random() < 0.25:  # a poll: a pending load finished, its victims went
            view = book.view(now, {"h": resident})
            if "h" in view and view["h"].pending:
                loaded = rng.choice(sorted(view["h"].pending))
                gone = {
                    v for lease in book.leases.values() if lease.model == loaded for v, _ in lease.victims
                }
                resident = (resident - gone) | {loaded}
            continue
        if rng.random() < 0.3 and book.leases:
            book.release(rng.choice(sorted(book.leases)), now, settle_s=rng.choice((0.0, 2.0)))
            continue
        model = rng.choice(sorted(set(sizes) - resident))
        idle = sorted(resident)
        rng.shuffle(idle)
        victims = tuple((m, sizes[m]) for m in idle[: rng.randint(0, len(idle))])
        request = req(
            f"l{step}", model, sizes[model], free=capacity - used, slots=3 - len(resident),
            resident=frozenset(resident), victims=victims,
        )  # fmt: skip
        if book.reserve(request, now, ttl_s=30):
            held = book.view(now, {"h": resident})["h"]
            staying = sum(sizes[m] for m in resident - held.evicting)
            assert held.reserved_gb + staying <= capacity + 1e-9, (step, held, resident)
            assert held.pending_models + len(resident - held.evicting) <= 3


# -- both backends -----
@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield InProcessLedger(ttl_s=10.0)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    backend = RedisLedger(server.url, ttl_s=10.0, prefix=f"test:{next(_prefixes)}")
    try:
        yield backend
    finally:
        await backend.close()


async def test_reserve_release_double_release(ledger: Ledger) -> None:
    assert await ledger.reserve(req("a", "x", 20), NOW)
    assert await ledger.reserve(req("b", "y", 20), NOW) is False  # does not fit beside a
    view = await ledger.view(NOW, {})
    assert view["h"].reserved_gb == 20 and [x.lease_id for x in view["h"].leases] == ["a"]
    assert await ledger.release("a", "h", NOW) is True
    assert await ledger.release("a", "h", NOW) is False  # exactly once
    assert await ledger.view(NOW, {}) == {}
    assert await ledger.reserve(req("b", "y", 20), NOW)
    assert await ledger.peaks() == {"h": 20}


async def test_expiry_and_renewal(ledger: Ledger) -> None:
    assert await ledger.reserve(req("a", "x", 20), NOW)
    assert await ledger.renew("a", "h", NOW + 9)  # lives until NOW + 19
    assert await ledger.reserve(req("b", "y", 20), NOW + 18.5) is False
    assert (await ledger.view(NOW + 18.5, {}))["h"].reserved_gb == 20
    assert await ledger.view(NOW + 19, {}) == {}  # expired: not counted by any read
    assert await ledger.renew("a", "h", NOW + 19) is False
    assert await ledger.reserve(req("b", "y", 20), NOW + 19)
    assert await ledger.release("a", "h", NOW) is False  # an expired lease is not released again


async def test_resident_models_are_not_counted_twice(ledger: Ledger) -> None:
    assert await ledger.reserve(req("a", "x", 20), NOW)
    # the poll now lists x: its memory is in the host's "used" (free went down), the lease stops counting
    assert await ledger.reserve(req("b", "y", 4, free=4, resident=frozenset({"x"})), NOW)
    assert (await ledger.view(NOW, {"h": ["x"]}))["h"].reserved_gb == 4


async def test_hosts_are_independent(ledger: Ledger) -> None:
    assert await ledger.reserve(req("a", "x", 20, host="h1"), NOW)
    assert await ledger.reserve(req("b", "x", 20, host="h2"), NOW)
    assert sorted(await ledger.view(NOW, {})) == ["h1", "h2"]


async def test_concurrent_reserves_never_overcommit(ledger: Ledger) -> None:
    """100 racing reserves of 5 GB against 24 GB: exactly 4 distinct models get in; racing releases and
    re-reserves never let the total pass 24 GB."""
    results = await asyncio.gather(
        *(ledger.reserve(req(f"l{i}", f"m{i}", 5, slots=100), NOW) for i in range(100))
    )
    assert sum(results) == 4
    granted = [f"l{i}" for i, ok in enumerate(results) if ok]
    released, regranted = await asyncio.gather(
        asyncio.gather(*(ledger.release(g, "h", NOW) for g in granted * 2)),
        asyncio.gather(*(ledger.reserve(req(f"r{i}", f"n{i}", 5, slots=100), NOW) for i in range(50))),
    )
    assert sum(released) == 4  # each released exactly once although asked twice
    assert 0 <= sum(regranted) <= 4
    assert (await ledger.peaks())["h"] <= 24
    view = await ledger.view(NOW, {})
    assert view.get("h") is None or view["h"].reserved_gb <= 24


async def test_two_clients_of_one_redis_share_the_memory(redis_server: RedisServer) -> None:
    prefix = f"test:{next(_prefixes)}"
    one, two = RedisLedger(redis_server.url, prefix=prefix), RedisLedger(redis_server.url, prefix=prefix)
    try:
        results = await asyncio.gather(
            *((one if i % 2 else two).reserve(req(f"l{i}", f"m{i}", 6, slots=100), NOW) for i in range(40))
        )
        assert sum(results) == 4  # 24 GB / 6 GB, whichever worker asked
        assert sum([await two.release(f"l{i}", "h", NOW) for i in range(40)]) == 4
        assert await one.view(NOW, {}) == {}
    finally:
        await one.close()
        await two.close()


async def test_evictions_in_both_backends(ledger: Ledger) -> None:
    """The same victims rule in the in-process book and the Redis script: victims free their memory for
    one load only, a leased model is never a victim, victims survive renewal and settling."""
    evict_a = req("x1", "x", 14, free=4, slots=0, resident=AB, victims=(("a", 10.0),))
    assert await ledger.reserve(evict_a, NOW)
    again_a = req("y1", "y", 4, free=4, slots=0, resident=AB, victims=(("a", 10.0),))
    assert await ledger.reserve(again_a, NOW) is False  # a is x's victim already
    assert await ledger.reserve(req("x2", "x", 14, free=4, slots=0, resident=AB), NOW)  # x's load, shared
    view = (await ledger.view(NOW, {"h": AB}))["h"]
    assert (view.reserved_gb, view.freed_gb, view.evicting, view.pending) == (
        14.0,
        10.0,
        frozenset({"a"}),
        frozenset({"x"}),
    )
    assert await ledger.renew("x1", "h", NOW + 5)
    assert (await ledger.view(NOW + 5, {"h": AB}))["h"].evicting == frozenset({"a"})  # renewal keeps them
    assert await ledger.release("x1", "h", NOW + 5, settle_s=4)
    settled = (await ledger.view(NOW + 6, {"h": AB}))["h"]
    assert settled.evicting == frozenset({"a"}) and settled.freed_gb == 10.0  # settling keeps them
    # the poll lists x (loaded) and no longer a (evicted): nothing reserved, nothing freed
    after = (await ledger.view(NOW + 6, {"h": {"b", "x"}}))["h"]
    assert (after.reserved_gb, after.freed_gb) == (0.0, 0.0)
    # x has live leases: it may not be evicted for another load now
    evict_x = req("z1", "z", 10, free=4, slots=0, resident=frozenset({"b", "x"}), victims=(("x", 14.0),))
    assert await ledger.reserve(evict_x, NOW + 6) is False
    evict_b = req("z2", "z", 10, free=4, slots=0, resident=frozenset({"b", "x"}), victims=(("b", 10.0),))
    assert await ledger.reserve(evict_b, NOW + 6)


async def test_a_released_load_settles_until_the_poll_lists_it(ledger: Ledger) -> None:
    assert await ledger.reserve(req("a", "x", 20), NOW)
    assert await ledger.release("a", "h", NOW, settle_s=4) is True
    assert await ledger.release("a", "h", NOW, settle_s=4) is False
    # the poll does not list x yet: its memory still counts, so y does not fit
    assert await ledger.reserve(req("b", "y", 20), NOW + 1) is False
    # the poll lists x (and its memory is in "used"): nothing counted twice
    assert await ledger.reserve(req("b", "y", 4, free=4, resident=frozenset({"x"})), NOW + 1)
    assert await ledger.release("b", "h", NOW)
    # the settling lease runs out at NOW + 4 whatever the poll says
    assert await ledger.view(NOW + 4, {}) == {}
    assert await ledger.reserve(req("c", "y", 20), NOW + 4)


# -- the hooks' side: a caller cancelled mid-call never strands a lease -----
def _cold_pick() -> tuple[Profile, Matrix]:
    matrix = load_matrix(DEFAULT_MATRIX_PATH)
    local = next(p for p in matrix.profiles.values() if p.is_local)
    return dataclasses.replace(local, warm_state=WarmState.COLD), matrix


async def test_a_reserve_cancelled_mid_call_is_given_back(ledger: Ledger) -> None:
    # LiteLLM cancels a call whose client left (cancel_on_disconnect) wherever it is awaiting, also while
    # the ledger answers a reserve: a grant then made must be released, not left to expire.
    reservations = Reservations(ledger, settle_s=0.0)
    profile, matrix = _cold_pick()
    task = asyncio.create_task(reservations.reserve("tok", profile, HostRoom(1000.0, 3), matrix, NOW))
    await asyncio.sleep(0)  # the reserve is now waiting on the ledger
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def empty() -> bool:
        return await ledger.view(NOW, {}) == {}

    await eventually(empty, timeout_s=5, what="the cancelled reserve given back")
    assert reservations.held == {}
    await eventually(lambda: not reservations.background, timeout_s=5, what="the background calls done")


async def test_a_release_cancelled_mid_call_still_completes(ledger: Ledger) -> None:
    reservations = Reservations(ledger, settle_s=0.0)
    profile, matrix = _cold_pick()
    assert await reservations.reserve("tok", profile, HostRoom(1000.0, 3), matrix, NOW)
    task = asyncio.create_task(reservations.release("tok", None, NOW))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def empty() -> bool:
        return await ledger.view(NOW, {}) == {}

    await eventually(empty, timeout_s=5, what="the release finished after its caller was cancelled")
