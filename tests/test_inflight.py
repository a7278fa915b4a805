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
