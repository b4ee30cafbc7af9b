"""The job store against a real redis-server: idempotency scoped per owner and
bound to the request, owners, payload deletion, the queue cap, a lost consumer
group, and what a failed submit reports."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.dataplane.types import Item, Options
from router.errors import IdempotencyKeyReused, JobsBusy, JobsOutcomeUnknown, JobsUnavailable
from router.jobs.store import GROUP, STREAM, JobPayload, job_key


def payload(text="hello", model="sentiment", version=None, top_k=1, routing_key="rk", batch=False, image=None):
    items = [Item(image=image)] if image is not None else [Item(text=t) for t in ([text] if batch is False else text)]
    return JobPayload.of(items, Options(model, version, top_k, routing_key), batch)


def test_fingerprint_covers_the_request_but_not_the_routing_key():
    base = payload().fingerprint()
    assert payload(routing_key="another request id").fingerprint() == base
    assert payload(text="hello").fingerprint() == base
    for other in (payload(text="hello!"), payload(model="other"), payload(version=2), payload(top_k=2),
                  payload(text=["hello"], batch=True)):
        assert other.fingerprint() != base
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    assert payload(image=png).fingerprint() == payload(image=png, routing_key="x").fingerprint()
    assert payload(image=png).fingerprint() != payload(image=png + b"\0").fingerprint()


def test_idempotency_key_is_per_owner_and_bound_to_the_body(with_store, db):
    async def scenario(store):
        first = await store.submit(payload("a"), "order-1")
        again = await store.submit(payload("a", routing_key="other request"), "order-1")
        with pytest.raises(IdempotencyKeyReused) as reused:
            await store.submit(payload("b"), "order-1")
        alice = await store.submit(payload("b"), "order-1", owner="alice")
        alice_again = await store.submit(payload("b"), "order-1", owner="alice")
        return first, again, reused.value, alice, alice_again

    first, again, reused, alice, alice_again = with_store(scenario)
    assert first[1] is True and again == (first[0], False)
    assert reused.status == 422 and reused.code == "idempotency_key_reused"
    assert "different request body" in reused.message
    assert alice[0] != first[0] and alice[1] is True and alice_again == (alice[0], False)
    assert db.xlen(STREAM) == 2


def test_jobs_are_read_only_by_their_owner(with_store):
    async def scenario(store):
        anon, _ = await store.submit(payload("a"), None)
        mine, _ = await store.submit(payload("a"), None, owner="alice")
        return [await store.get(anon), await store.get(anon, "alice"), await store.get(mine, "alice"),
                await store.get(mine), await store.get(mine, "bob")]

    anon_as_anon, anon_as_alice, mine_as_alice, mine_as_anon, mine_as_bob = with_store(scenario)
    assert anon_as_anon["status"] == mine_as_alice["status"] == "queued"
    assert anon_as_alice is None and mine_as_anon is None and mine_as_bob is None
    assert "payload" not in anon_as_anon


def test_payload_is_deleted_once_done_or_finally_failed(with_store, db):
    async def scenario(store):
        ids = [(await store.submit(payload(f"job {i}"), None))[0] for i in range(3)]
        entries = dict((job, entry) for entry, job in await store.read("w", 10, 100))
        for job in ids:
            await store.start(job)
        await store.finish(entries[ids[0]], ids[0], {"prediction": "positive"})
        await store.fail(entries[ids[1]], ids[1], {"code": "x", "message": "m", "request_id": ids[1]}, final=False)
        await store.fail(entries[ids[2]], ids[2], {"code": "x", "message": "m", "request_id": ids[2]}, final=True)
        return ids, [await store.get(job) for job in ids]

    (done, retried, failed), jobs = with_store(scenario, job_result_ttl_seconds=600)
    assert [j["status"] for j in jobs] == ["done", "queued", "failed"]
    assert not db.hexists(job_key(done), "payload") and not db.hexists(job_key(failed), "payload")
    assert db.hexists(job_key(retried), "payload"), "a job to be retried keeps its payload"
    assert jobs[0]["result"] == {"prediction": "positive"} and jobs[2]["error"]["code"] == "x"
    assert 0 < db.ttl(job_key(done)) <= 600 and 0 < db.ttl(job_key(failed)) <= 600
    assert db.ttl(job_key(retried)) == -1
    assert db.xlen(STREAM) == 1, "acknowledged entries are deleted; the one to retry stays"


def test_the_queue_cap_refuses_new_jobs_atomically(with_store, db):
    async def scenario(store):
        first, _ = await store.submit(payload("a"), "k-a")
        await store.submit(payload("b"), None)
        with pytest.raises(JobsBusy) as busy:
            await store.submit(payload("c"), None)
        replay = await store.submit(payload("a"), "k-a")  # a key seen before still answers when full
        entry, job = (await store.read("w", 1, 100))[0]
        await store.start(job)
        await store.finish(entry, job, {})
        room = await store.submit(payload("c"), None)
        return first, busy.value, replay, room

    first, busy, replay, room = with_store(scenario, jobs_max_queued=2)
    assert busy.status == 503 and busy.code == "jobs_busy" and "nothing was queued" in busy.message
    assert replay == (first, False) and room[1] is True
    assert db.xlen(STREAM) == 2


@pytest.mark.parametrize("lose", ["flushall", "destroy_group"])
def test_a_lost_stream_or_group_is_created_again(with_store, db, lose):
    async def scenario(store):
        await store.submit(payload("before"), None)
        assert len(await store.read("w", 10, 100)) == 1
        reader = asyncio.create_task(store.read("w", 10, 2000))  # blocked when the data goes
        await asyncio.sleep(0.2)
        if lose == "flushall":
            await store.client.flushall()
        else:
            await store.client.xgroup_destroy(STREAM, GROUP)
        got = await reader  # the group made again from the stream's start: unacknowledged entries come again
        after, _ = await store.submit(payload("after"), None)
        got += await store.read("w", 10, 100)
        return after, [job for _, job in got]

    after, got = with_store(scenario)
    assert after in got
    assert [g["name"] for g in db.xinfo_groups(STREAM)] == [GROUP.encode()]


def test_trim_deletes_only_entries_acknowledged_before_every_pending_one(with_store, db):
    async def scenario(store):
        ids = [(await store.submit(payload(f"t{i}"), None))[0] for i in range(6)]
        read = await store.read("w", 4, 100)
        for entry, _ in read[:2]:
            await store.client.xack(STREAM, GROUP, entry)  # acknowledged, not deleted: an older version's way
        await store.client.xack(STREAM, GROUP, read[3][0])
        trimmed = await store.trim_acknowledged()
        left = [job for _, job in await store.read("w", 10, 100)]
        return ids, read, trimmed, left

    ids, read, trimmed, left = with_store(scenario)
    assert trimmed == 2
    remaining = [e.decode() for e, _ in db.xrange(STREAM)]
    assert remaining[:2] == [read[2][0], read[3][0]] and len(remaining) == 4
    assert left == ids[4:], "undelivered entries stay"


class FlakyScript:
    """Stands in for the submit script: raises the given errors, then runs the real one."""

    def __init__(self, real, errors):
        self.real, self.errors, self.calls = real, list(errors), 0

    async def __call__(self, keys, args):
        self.calls += 1
        if self.errors:
            error = self.errors.pop(0)
            if error == "sent":  # the script ran, but its answer was lost
                await self.real(keys=keys, args=args)
                raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
            raise error
        return await self.real(keys=keys, args=args)


REFUSED = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
TIMED_OUT = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")


@pytest.mark.parametrize("errors,key,expect", [
    ([REFUSED] * 3, None, JobsUnavailable),
    ([REFUSED, TIMED_OUT, REFUSED], "k", JobsOutcomeUnknown),
    ([TIMED_OUT] * 3, None, JobsOutcomeUnknown),
    (["sent", "sent", "sent"], "k", JobsOutcomeUnknown),
    (["sent", REFUSED], None, (True, 1)),
    (["sent", TIMED_OUT], "k", (True, 1)),
    ([REFUSED, REFUSED], None, (True, 1)),
])
def test_a_failed_submit_is_retried_and_reports_what_is_known(with_store, db, errors, key, expect):
    async def scenario(store):
        store._submit = FlakyScript(store._submit, errors)
        try:
            job_id, created = await store.submit(payload("flaky"), key)
            return created, store._submit.calls
        except (JobsUnavailable, JobsOutcomeUnknown) as exc:
            return exc

    got = with_store(scenario, job_submit_attempts=3)
    if isinstance(expect, tuple):
        created, calls = got
        assert created is True and calls == len(errors) + 1
        assert db.xlen(STREAM) == expect[1], "an attempt that ran once is not queued twice"
        return
    assert type(got) is expect and got.status == 503
    if expect is JobsUnavailable:
        assert got.message == "the job queue is unreachable; nothing was queued"
        assert db.xlen(STREAM) == 0
    else:
        assert "unknown" in got.message and "nothing was queued" not in got.message
        assert ("retrying with the same Idempotency-Key is safe" in got.message) == (key is not None)
        assert db.xlen(STREAM) == (1 if "sent" in errors else 0)


def test_an_entry_without_a_job_id_is_dead_lettered_and_the_batch_still_runs(with_store, db):
    async def scenario(store):
        job, _ = await store.submit(payload("first"), None)
        await store.client.xadd(STREAM, {"nope": "x"})
        other, _ = await store.submit(payload("second"), None)
        read = await store.read("c1", 10, 100)
        return job, other, read

    job, other, read = with_store(scenario)
    assert [job_id for _, job_id in read] == [job, other]
    dead = db.xrange("jobs:dead")
    assert len(dead) == 1 and dead[0][1][b"error"] == b"a stream entry without a job id"
    assert db.xlen(STREAM) == 2  # the bad entry is gone; the two jobs remain until done


@pytest.mark.parametrize("stored", [b"not json{", b'{"foo": 1}', b'{"items": [{"zzz": 1}], "model": "m", '
                                    b'"requested_version": null, "top_k": 1, "routing_key": "", "batch": false}',
                                    b'{"items": [{"image_b64": "%%%"}], "model": "m", "requested_version": null, '
                                    b'"top_k": 1, "routing_key": "", "batch": false}'])
def test_a_payload_that_cannot_be_read_is_an_invalid_input(with_store, db, stored):
    from router.errors import InvalidInput

    async def scenario(store):
        job, _ = await store.submit(payload("x"), None)
        await store.client.hset(job_key(job), "payload", stored)
        with pytest.raises(InvalidInput, match="the job's stored payload cannot be read"):
            await store.start(job)

    with_store(scenario)
