"""Requests in flight per deployment (torchrouter_core.inflight): start, finish, a request's end, expiry."""

from __future__ import annotations

from torchrouter_core.inflight import InFlight


def test_start_finish_and_counts() -> None:
    flights = InFlight(ttl_s=10.0)
    flights.start("a", "rq-1", 0.0)
    flights.start("a", "rq-2", 0.0)
    flights.start("b", "rq-1", 1.0)  # the same request's fallback attempt on another deployment
    assert flights.counts(2.0) == {"a": 2, "b": 1}
    assert flights.finish("a", "rq-2") is True
    assert flights.finish("a", "rq-2") is False  # exactly once
    assert flights.counts(2.0) == {"a": 1, "b": 1}


def test_a_request_that_ends_as_a_whole_leaves_every_deployment() -> None:
    flights = InFlight(ttl_s=10.0)
    flights.start("a", "rq-1", 0.0)
    flights.start("b", "rq-1", 0.0)
    flights.start("a", "rq-2", 0.0)
    assert flights.finish_request("rq-1") == 2
    assert flights.finish_request("rq-1") == 0
    assert flights.counts(1.0) == {"a": 1}


def test_an_entry_never_heard_from_expires() -> None:
    flights = InFlight(ttl_s=10.0)
    flights.start("a", "rq-1", 0.0)
    flights.start("a", "rq-2", 5.0)
    assert flights.counts(10.0) == {"a": 2}
    assert flights.counts(10.5) == {"a": 1}
    assert len(flights) == 1


def test_a_start_again_renews_its_entry_and_counts_once() -> None:
    flights = InFlight(ttl_s=10.0)
    flights.start("a", "rq-1", 0.0)
    flights.start("b", "rq-2", 3.0)
    flights.start("a", "rq-1", 6.0)  # the same request on the same deployment again: one entry, renewed
    assert flights.counts(6.0) == {"a": 1, "b": 1}
    assert flights.counts(13.5) == {"a": 1}  # b (started 3.0) expired; a, renewed at 6.0, did not
    assert flights.counts(16.5) == {} and len(flights) == 0
    flights.start("a", "rq-3", 20.0)
    assert flights.finish("a", "rq-3") and flights.counts(20.0) == {}  # no count left at zero


def test_counts_agree_with_the_entries_through_any_mix_of_events() -> None:
    import random
    from collections import Counter

    rng = random.Random(4)
    flights = InFlight(ttl_s=5.0)
    now = 0.0
    alive: dict[tuple[str, str], float] = {}
    for _ in range(3000):
        now += rng.random()
        key, token = rng.choice("abcd"), f"rq-{rng.randrange(40)}"
        action = rng.random()
        if action < 0.5:
            flights.start(key, token, now)
            alive[(key, token)] = now
        elif action < 0.8:
            assert flights.finish(key, token) is (alive.pop((key, token), None) is not None)
        elif action < 0.9:
            ended = [e for e in alive if e[1] == token]
            assert flights.finish_request(token) == len(ended)
            for e in ended:
                del alive[e]
        else:
            alive = {e: t for e, t in alive.items() if now - t <= 5.0}
            assert flights.counts(now) == dict(Counter(k for k, _ in alive))
            assert len(flights) == len(alive)
