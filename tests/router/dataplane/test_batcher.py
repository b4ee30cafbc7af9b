import asyncio
import gc
from dataclasses import dataclass, field

import pytest

from router.dataplane.batcher import Batcher, BatcherClosed, BatcherFull


@dataclass
class Call:
    key: object
    items: list
    release: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    results: object = None  # what to return instead of one result per item


class Backend:
    """Records every call; each stays in flight until the test releases it
    (or at once when `hold` is False). An item's result is `key:item`."""

    def __init__(self, hold: bool = True) -> None:
        self.hold = hold
        self.calls: list[Call] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, key, items):
        call = Call(key, list(items))
        self.calls.append(call)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.hold:
                await call.release.wait()
            if call.error is not None:
                raise call.error
            return call.results if call.results is not None else [f"{key}:{item}" for item in items]
        finally:
            self.running -= 1

    def items(self) -> list[list]:
        return [call.items for call in self.calls]


async def settle() -> None:
    """Lets every ready task run until none is left to run."""
    for _ in range(20):
        await asyncio.sleep(0)


async def release(call: Call) -> None:
    call.release.set()
    await settle()


def run(scenario) -> None:
    """Runs the scenario (a hang fails it), then checks that the batcher left
    no task behind and that no error went unretrieved (the loop's exception handler)."""
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        await asyncio.wait_for(scenario(), 5)
        gc.collect()  # the scenario's futures are garbage now: an unretrieved error is reported here
        await settle()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert errors == []


def submit(batcher: Batcher, key, item, rows: int = 1) -> asyncio.Task:
    return asyncio.ensure_future(batcher.submit(key, item, rows))


def test_an_item_that_finds_the_backend_idle_is_sent_at_once_alone():
    async def scenario():
        backend, batches = Backend(hold=False), []
        batcher = Batcher(backend, max_batch=8, on_batch=lambda *batch: batches.append(batch))
        assert await batcher.submit("k", "a") == "k:a"
        assert backend.items() == [["a"]]
        assert batches == [("k", 1, 1)]
        assert len(batcher) == 0  # nothing kept for an idle key
    run(scenario)


def test_items_arriving_while_a_call_is_in_flight_go_together_in_order_as_the_next_call():
    async def scenario():
        backend, batches = Backend(), []
        batcher = Batcher(backend, max_batch=16, max_in_flight=1, on_batch=lambda *batch: batches.append(batch))
        first = submit(batcher, "k", "a")
        await settle()
        later = [submit(batcher, "k", f"b{i}") for i in range(10)]
        await settle()
        assert backend.items() == [["a"]]
        assert batcher.waiting("k") == 10 and batcher.in_flight("k") == 1
        await release(backend.calls[0])
        assert first.result() == "k:a"
        assert backend.items() == [["a"], [f"b{i}" for i in range(10)]]
        await release(backend.calls[1])
        assert [task.result() for task in later] == [f"k:b{i}" for i in range(10)]
        assert batches == [("k", 1, 1), ("k", 10, 10)]
        assert len(batcher) == 0
    run(scenario)


def test_waiting_items_are_split_over_calls_of_at_most_max_batch_rows_never_splitting_an_item():
    async def scenario():
        backend, batches = Backend(), []
        batcher = Batcher(backend, max_batch=4, max_in_flight=1, on_batch=lambda *batch: batches.append(batch))
        tasks = [submit(batcher, "k", "a")]
        await settle()
        for name, rows in [("b", 1), ("c", 2), ("d", 2), ("e", 3), ("f", 1), ("g", 1), ("h", 1)]:
            tasks.append(submit(batcher, "k", name, rows))
        await settle()
        for i in range(4):
            await release(backend.calls[i])
        assert backend.items() == [["a"], ["b", "c"], ["d"], ["e", "f"], ["g", "h"]]  # b+c+d would be 5 rows
        await release(backend.calls[4])
        assert [rows for _, _, rows in batches] == [1, 3, 2, 4, 2]
        assert [task.result() for task in tasks] == [f"k:{name}" for name in "abcdefgh"]
    run(scenario)


def test_max_batch_may_depend_on_the_key():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=lambda key: {"small": 2, "large": 8}[key], max_in_flight=1)
        tasks = [submit(batcher, key, "first") for key in ("small", "large")]
        await settle()
        tasks += [submit(batcher, key, f"{key}{i}") for key in ("small", "large") for i in range(4)]
        await settle()
        await release(backend.calls[0])
        await release(backend.calls[1])
        assert backend.items()[2:] == [["small0", "small1"], ["large0", "large1", "large2", "large3"]]
        for call in backend.calls[2:]:
            await release(call)
        assert backend.items()[4:] == [["small2", "small3"]]
        await release(backend.calls[4])
        assert all(task.done() and not task.exception() for task in tasks)
    run(scenario)


def test_an_item_bigger_than_max_batch_goes_alone():
    async def scenario():
        backend, batches = Backend(), []
        batcher = Batcher(backend, max_batch=4, max_in_flight=1, on_batch=lambda *batch: batches.append(batch))
        tasks = [submit(batcher, "k", "big", rows=9)]
        await settle()
        tasks += [submit(batcher, "k", "a"), submit(batcher, "k", "huge", rows=6), submit(batcher, "k", "b")]
        await settle()
        for i in range(4):
            await release(backend.calls[i])
        assert backend.items() == [["big"], ["a"], ["huge"], ["b"]]
        assert batches == [("k", 1, 9), ("k", 1, 1), ("k", 1, 6), ("k", 1, 1)]
        assert [task.result() for task in tasks] == ["k:big", "k:a", "k:huge", "k:b"]
    run(scenario)


def test_a_failed_call_fails_every_item_of_its_batch_and_no_other():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        first = submit(batcher, "k", "a")
        await settle()
        batch = [submit(batcher, "k", "b"), submit(batcher, "k", "c")]
        await settle()
        await release(backend.calls[0])
        error = ConnectionError("triton went away")
        backend.calls[1].error = error
        third = submit(batcher, "k", "d")
        await settle()
        await release(backend.calls[1])
        assert first.result() == "k:a"
        assert [task.exception() for task in batch] == [error, error]
        await release(backend.calls[2])
        assert third.result() == "k:d"  # the error is not remembered
    run(scenario)


def test_a_call_returning_another_number_of_results_fails_each_item():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        first = submit(batcher, "k", "a")
        await settle()
        batch = [submit(batcher, "k", "b"), submit(batcher, "k", "c")]
        await settle()
        backend.calls[0].results = "k:a"  # not a list
        await release(backend.calls[0])
        backend.calls[1].results = ["k:b"]
        await release(backend.calls[1])
        with pytest.raises(RuntimeError) as failed:
            first.result()
        assert str(failed.value) == "the batched call for 'k' returned a str for 1 items"
        for task in batch:
            with pytest.raises(RuntimeError) as failed:
                task.result()
            assert str(failed.value) == "the batched call for 'k' returned 1 results for 2 items"
    run(scenario)


def test_a_waiter_cancelled_before_its_item_is_sent_is_dropped_and_the_others_go_on():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        first = submit(batcher, "k", "a")
        await settle()
        waiting = [submit(batcher, "k", name) for name in "bcd"]
        await settle()
        waiting[1].cancel()
        await settle()
        assert batcher.waiting("k") == 2
        await release(backend.calls[0])
        assert backend.items() == [["a"], ["b", "d"]]
        await release(backend.calls[1])
        assert (first.result(), waiting[0].result(), waiting[2].result()) == ("k:a", "k:b", "k:d")
        assert waiting[1].cancelled()
    run(scenario)


def test_a_waiter_cancelled_during_its_call_does_not_cancel_the_call_for_the_others():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        submit(batcher, "k", "a")
        await settle()
        batch = [submit(batcher, "k", name) for name in "bcd"]
        await settle()
        await release(backend.calls[0])
        batch[0].cancel()
        batch[1].cancel()
        await settle()
        assert backend.calls[1].items == ["b", "c", "d"] and backend.running == 1
        await release(backend.calls[1])
        assert batch[2].result() == "k:d"
        # and when that call fails, a gone caller's error is not left unretrieved
        submit(batcher, "k", "e")
        await settle()
        gone, stays = submit(batcher, "k", "f"), submit(batcher, "k", "g")
        await settle()
        await release(backend.calls[2])
        backend.calls[3].error = ConnectionError("boom")
        gone.cancel()
        await settle()
        await release(backend.calls[3])
        assert isinstance(stays.exception(), ConnectionError)
    run(scenario)


def test_a_waiter_cancelled_after_its_error_was_set_but_before_it_resumed_leaves_no_error_behind():
    async def scenario():
        backend = Backend()
        tasks = []
        # The next batch starts in the step that failed the first call's items,
        # before their callers resume: the hook cancels the first caller then.
        batcher = Batcher(backend, max_batch=8, max_in_flight=1,
                          on_batch=lambda key, items, rows: tasks[0].cancel() if len(backend.calls) == 1 else None)
        tasks.append(submit(batcher, "k", "a"))
        await settle()
        tasks.append(submit(batcher, "k", "b"))
        await settle()
        backend.calls[0].error = ConnectionError("boom")
        await release(backend.calls[0])
        assert tasks[0].cancelled()
        await release(backend.calls[1])
        assert tasks[1].result() == "k:b"
    run(scenario)


def test_many_abandoned_items_are_compacted_and_order_is_kept():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=100, max_in_flight=1)
        submit(batcher, "k", "first")
        await settle()
        tasks = [submit(batcher, "k", i) for i in range(100)]
        await settle()
        for i, task in enumerate(tasks):
            if i % 10:
                task.cancel()
        await settle()
        assert batcher.waiting("k") == 10
        assert len(batcher._lanes["k"].queue) < 40
        await release(backend.calls[0])
        assert backend.calls[1].items == list(range(0, 100, 10))
        await release(backend.calls[1])
        assert [tasks[i].result() for i in range(0, 100, 10)] == [f"k:{i}" for i in range(0, 100, 10)]
    run(scenario)


def test_more_than_max_queue_waiting_items_are_refused_with_batcher_full():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=2, max_queue=3, max_in_flight=1)
        tasks = [submit(batcher, "k", "a")]  # in flight: not waiting
        await settle()
        tasks += [submit(batcher, "k", name) for name in "bcd"]
        await settle()
        with pytest.raises(BatcherFull, match="3 items already wait for a batch"):
            await batcher.submit("k", "e")
        assert backend.items() == [["a"]]
        await release(backend.calls[0])  # b, c go: one waits
        tasks.append(submit(batcher, "k", "e"))
        await settle()
        assert batcher.waiting("k") == 2
        for i in (1, 2):
            await release(backend.calls[i])
        assert backend.items() == [["a"], ["b", "c"], ["d", "e"]]
        assert [task.result() for task in tasks] == [f"k:{name}" for name in "abcde"]
    run(scenario)


def test_close_fails_waiting_items_and_calls_in_flight_and_refuses_new_ones():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        in_flight = submit(batcher, "k", "a")
        await settle()
        waiting = [submit(batcher, "k", "b"), submit(batcher, "j", "c"), submit(batcher, "j", "d")]
        await settle()
        await batcher.close()
        await settle()
        for task in [in_flight, *waiting]:
            with pytest.raises(BatcherClosed):
                task.result()
        assert backend.items() == [["a"], ["c"]]
        assert len(batcher) == 0
        with pytest.raises(BatcherClosed, match="the batcher is closed"):
            await batcher.submit("k", "e")
    run(scenario)


def test_close_fails_the_items_of_a_call_that_had_not_begun():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8)
        task = submit(batcher, "k", "a")
        await asyncio.sleep(0)  # submitted: its call is a task that has not run yet
        await batcher.close()
        await settle()
        assert backend.calls == []
        assert isinstance(task.exception(), BatcherClosed)
    run(scenario)


def test_different_keys_never_share_a_call_nor_wait_for_each_other():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=1)
        tasks = [submit(batcher, "x", "a"), submit(batcher, "y", "b")]
        await settle()
        assert backend.items() == [["a"], ["b"]]  # y did not wait for x's call
        tasks += [submit(batcher, key, f"{key}{i}") for i in range(3) for key in ("x", "y")]
        await settle()
        await release(backend.calls[0])
        await release(backend.calls[1])
        await release(backend.calls[2])
        await release(backend.calls[3])
        assert [(call.key, call.items) for call in backend.calls[2:]] == [("x", ["x0", "x1", "x2"]),
                                                                        ("y", ["y0", "y1", "y2"])]
        assert [task.result() for task in tasks[2:]] == [f"{key}:{key}{i}" for i in range(3) for key in ("x", "y")]
    run(scenario)


def test_up_to_max_in_flight_calls_run_at_once_per_key_and_the_rest_wait():
    async def scenario():
        backend = Backend()
        batcher = Batcher(backend, max_batch=8, max_in_flight=3)
        tasks = [submit(batcher, "k", i) for i in range(7)]
        await settle()
        assert backend.items() == [[0], [1], [2]]  # each sent at once, alone, while slots were free
        assert batcher.in_flight("k") == 3 and batcher.waiting("k") == 4
        await release(backend.calls[1])
        assert backend.items()[3:] == [[3, 4, 5, 6]]
        assert backend.running == 3
        for call in backend.calls:
            await release(call)
        assert backend.most_running == 3
        assert [task.result() for task in tasks] == [f"k:{i}" for i in range(7)]
    run(scenario)


def test_a_window_holds_a_batch_that_is_not_full_until_its_oldest_item_is_that_old():
    async def scenario():
        backend = Backend(hold=False)
        batcher = Batcher(backend, max_batch=3, window_s=0.02)
        first = [submit(batcher, "k", name) for name in "ab"]
        await settle()
        assert backend.calls == []  # idle, but the batch is not full
        await asyncio.sleep(0.05)
        assert backend.items() == [["a", "b"]]
        assert [task.result() for task in first] == ["k:a", "k:b"]
        full = [submit(batcher, "k", name) for name in "cdef"]
        await settle()
        assert backend.items()[1:] == [["c", "d", "e"]]  # full: sent without waiting
        await asyncio.sleep(0.05)
        assert backend.items()[2:] == [["f"]]
        assert [task.result() for task in full] == [f"k:{name}" for name in "cdef"]
    run(scenario)


def test_items_carry_what_the_call_needs_to_log_each_caller_against_the_batch():
    async def scenario():
        log = []

        async def call(key, items):
            batch_id = "+".join(request_id for request_id, _ in items)
            log.extend((request_id, batch_id) for request_id, _ in items)
            return [value * 2 for _, value in items]

        batcher = Batcher(call, max_batch=8, max_in_flight=1)
        results = await asyncio.gather(*(batcher.submit("k", (f"r{i}", i)) for i in range(3)))
        assert results == [0, 2, 4]
        assert log == [("r0", "r0"), ("r1", "r1+r2"), ("r2", "r1+r2")]
    run(scenario)


def test_a_failing_metrics_hook_does_not_stop_a_call():
    async def scenario():
        def hook(key, items, rows):
            raise ValueError("metrics broke")

        batcher = Batcher(Backend(hold=False), max_batch=8, on_batch=hook)
        assert await batcher.submit("k", "a") == "k:a"
    run(scenario)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Backend(), max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Backend(), max_batch=1, max_in_flight=0)
    with pytest.raises(ValueError, match="negative"):
        Batcher(Backend(), max_batch=1, window_s=-1)

    async def scenario():
        with pytest.raises(ValueError, match="at least one row, not 0"):
            await Batcher(Backend(), max_batch=1).submit("k", "a", rows=0)
        with pytest.raises(ValueError, match="max_batch for 'k' must be at least 1, not 0"):
            await Batcher(Backend(), max_batch=lambda key: 0).submit("k", "a")
    run(scenario)


def test_a_call_runs_in_a_context_of_its_own_not_a_callers():
    import contextvars

    who: contextvars.ContextVar[str | None] = contextvars.ContextVar("who", default=None)
    seen = []

    async def call(key, items):
        seen.append(who.get())
        await asyncio.sleep(0.01)
        return items

    async def scenario():
        batcher = Batcher(call, max_batch=8, max_in_flight=1)

        async def caller(name):
            who.set(name)  # a request's own context: its request id, say
            return await batcher.submit("k", name)

        first = asyncio.ensure_future(caller("first"))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(caller(n)) for n in ("second", "third")]  # wait, then go together
        assert await asyncio.gather(first, *rest) == ["first", "second", "third"]
        await batcher.close()
    run(scenario)
    assert seen == [None, None]  # neither call ran as the request that happened to start it
