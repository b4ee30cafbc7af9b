import asyncio

import pytest

from router.dataplane.singleflight import SingleFlight


class Work:
    """Work that takes 50 ms and counts how often it ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0.05)
        return "result"


def test_concurrent_identical_work_runs_once():
    work = Work()

    async def scenario():
        flights = SingleFlight()
        results = await asyncio.gather(*(flights.do("k", work) for _ in range(50)))
        assert [r for r, _ in results] == ["result"] * 50
        assert sum(shared for _, shared in results) == 49
        await asyncio.sleep(flights.linger + 0.01)
        assert len(flights) == 0
    asyncio.run(scenario())
    assert work.calls == 1


def test_an_error_is_shared_but_not_remembered():
    attempts = 0

    async def failing():
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def scenario():
        flights = SingleFlight()
        results = await asyncio.gather(*(flights.do("k", failing) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert attempts == 1
        with pytest.raises(RuntimeError):
            await flights.do("k", failing)
        assert attempts == 2
    asyncio.run(scenario())


def test_a_store_step_runs_after_callers_are_answered_and_keeps_the_flight_open():
    events = []

    async def work():
        return "value"

    async def store(value):
        events.append("store started")
        await asyncio.sleep(0.05)
        events.append("stored " + value)

    async def scenario():
        flights = SingleFlight(linger=0.01)
        result, shared = await flights.do("k", work, then=store)
        events.append("answered")
        assert (result, shared) == ("value", False)
        late, joined = await flights.do("k", work, then=store)  # during the store: joins
        assert (late, joined) == ("value", True)
        await asyncio.sleep(0.1)
        assert len(flights) == 0
    asyncio.run(scenario())
    assert events == ["store started", "answered", "stored value"] or events == ["answered", "store started", "stored value"]


def test_a_caller_that_goes_away_cancels_only_its_own_wait():
    work = Work()

    async def scenario():
        flights = SingleFlight(linger=0.01)
        first = asyncio.ensure_future(flights.do("k", work))
        leaving = asyncio.ensure_future(flights.do("k", work))
        await asyncio.sleep(0.01)
        flight = flights.pending("k")
        joined = asyncio.ensure_future(flights.join(flight))
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert await first == ("result", False)
        assert await joined == "result"
        assert flight.result() == "result"
        assert flights.join(flight) is flight  # landed: the flight itself, done
        await asyncio.sleep(0.05)
        assert len(flights) == 0
    asyncio.run(scenario())
    assert work.calls == 1


def test_an_error_reaches_a_caller_that_joined():
    async def failing():
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def scenario():
        flights = SingleFlight()
        first = asyncio.ensure_future(flights.do("k", failing))
        await asyncio.sleep(0)
        joined = flights.join(flights.pending("k"))
        with pytest.raises(RuntimeError):
            await joined
        with pytest.raises(RuntimeError):
            await first
        assert flights.pending("k") is None
    asyncio.run(scenario())


def test_work_cancelled_under_its_callers_gives_each_an_error_not_a_cancellation():
    class Gone(Exception):
        pass

    async def scenario():
        flights = SingleFlight(cancelled=lambda: Gone("the call was cancelled"))
        started = asyncio.Event()

        async def work():
            started.set()
            await asyncio.sleep(10)

        callers = [asyncio.ensure_future(flights.do("k", work)) for _ in range(3)]
        await started.wait()
        [flight_task] = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_fly"]
        flight_task.cancel()  # as a closed channel cancels a call: not a caller's doing
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert [type(r) for r in results] == [Gone] * 3
        assert flights.pending("k") is None
    asyncio.run(scenario())
