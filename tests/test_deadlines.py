"""classifier.deadlines: many deadlines on one loop timer fire when due, in order, unless cancelled."""

from __future__ import annotations

import asyncio

from classifier.deadlines import Deadlines


async def test_fires_when_due_in_deadline_order() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    fired: list[tuple[str, float]] = []
    start = loop.time()
    for name, delay in (("c", 0.06), ("a", 0.02), ("b", 0.04)):
        deadlines.call_later(delay, lambda n=name: fired.append((n, loop.time() - start)))
    await asyncio.sleep(0.1)
    assert [name for name, _ in fired] == ["a", "b", "c"]
    for (_, at), due in zip(fired, (0.02, 0.04, 0.06), strict=True):
        assert at >= due  # never early (the loop may be late, as for any timer)
    assert len(deadlines) == 0


async def test_a_cancelled_deadline_never_fires_and_a_late_cancel_is_harmless() -> None:
    deadlines = Deadlines()
    fired: list[str] = []
    early = deadlines.call_later(0.01, fired.append, "early")
    later = deadlines.call_later(0.03, fired.append, "later")
    early.cancel()
    await asyncio.sleep(0.05)
    assert fired == ["later"]
    later.cancel()  # already fired: nothing happens
    assert later.done and fired == ["later"]


async def test_an_earlier_deadline_rearms_the_loop_timer() -> None:
    deadlines = Deadlines()
    fired: list[str] = []
    deadlines.call_later(10.0, fired.append, "far")
    deadlines.call_later(0.01, fired.append, "near")
    await asyncio.sleep(0.03)
    assert fired == ["near"]


async def test_cancelled_deadlines_do_not_pile_up() -> None:
    deadlines = Deadlines()
    for _ in range(10_000):
        deadlines.call_later(300.0, lambda: None).cancel()
    assert len(deadlines) < 200  # the dead are dropped once they outnumber the live
    fired: list[str] = []
    deadlines.call_later(0.01, fired.append, "still works")
    await asyncio.sleep(0.03)
    assert fired == ["still works"]


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    try:
        deadlines = Deadlines()
        fired: list[str] = []

        def fail() -> None:
            raise RuntimeError("boom")

        deadlines.call_later(0.01, fail)
        deadlines.call_later(0.01, fired.append, "next")
        await asyncio.sleep(0.03)
    finally:
        loop.set_exception_handler(None)
    assert fired == ["next"]
    assert [str(e) for e in reported] == ["boom"]


def test_a_deadline_after_its_loop_is_gone_starts_over_on_the_running_one() -> None:
    deadlines = Deadlines()
    fired: list[str] = []

    async def first() -> None:
        deadlines.call_later(300.0, fired.append, "never")  # its loop ends long before

    async def second() -> None:
        deadlines.call_later(0.01, fired.append, "here")
        await asyncio.sleep(0.03)

    asyncio.run(first())
    asyncio.run(second())
    assert fired == ["here"] and len(deadlines) == 0
