"""Asynchronous predictions on a Redis Stream with a consumer group.

    jobs:job:<id>   hash: status, payload, owner, attempts, created, result | error
    jobs:stream     stream of {job_id}, one entry per unacknowledged job; group `workers`
    jobs:dead       dead-letter stream of {job_id, error}
    jobs:idem:<h>   hash {job_id, fingerprint}: an owner's Idempotency-Key and its request

Delivery is at least once: a worker stores the result, then acknowledges
(and deletes) the stream entry. A job left pending by a crashed worker is
claimed by another after JOB_CLAIM_IDLE_MS (XAUTOCLAIM); a job already done
is only acknowledged again, so results are idempotent. The payload is
deleted once a job is done or finally failed; the result or error stays
JOB_RESULT_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.errors import IdempotencyKeyReused, JobsBusy, JobsOutcomeUnknown, JobsUnavailable
from router.jobs.payload import JobPayload
from router.settings import Settings

log = logging.getLogger(__name__)

STREAM = "jobs:stream"
DEAD = "jobs:dead"
GROUP = "workers"
JOB_ID_LENGTH = 32
SUBMIT_BACKOFF_S = 0.05
UNKNOWN = "the job queue did not answer in time, so whether the job was queued is unknown; "

# Atomic submit. An Idempotency-Key seen before returns its job (-1: with another
# request body). The job id keys this request's own attempts: a retry whose first
# try ran finds its job. Else, unless the queue is full (-2), the key, the job and
# its stream entry are written together; a missing stream gets its group back.
_SUBMIT = """
if ARGV[5] == '1' then
  local seen = redis.call('HMGET', KEYS[1], 'job_id', 'fingerprint')
  if seen[1] then
    if seen[2] ~= ARGV[6] then return {seen[1], -1} end
    return {seen[1], 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {ARGV[1], 0} end
local max = tonumber(ARGV[8])
if max > 0 and redis.call('XLEN', KEYS[3]) >= max then return {'', -2} end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'fingerprint', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('HSET', KEYS[2], 'status', 'queued', 'payload', ARGV[2], 'created', ARGV[3], 'attempts', 0,
           'owner', ARGV[7])
redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1])
return {ARGV[1], 1}
"""


def job_key(job_id: str) -> str:
    return f"jobs:job:{job_id}"


def idempotency_entry(owner: str, key: str) -> str:
    """An Idempotency-Key is scoped to the owner that sent it."""
    return "jobs:idem:" + hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


def is_job_id(text: str) -> bool:
    return len(text) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def _unsent(exc: Exception) -> bool:
    """redis-py failed before the command reached Redis (no connection), or Redis refused it while loading."""
    return isinstance(exc, BusyLoadingError) or any(t in str(exc) for t in ("connecting to", "No connection"))


def _lost_group(exc: ResponseError) -> bool:
    """The stream or its group is gone (FLUSHALL, a Redis that lost its data)."""
    return "NOGROUP" in str(exc) or "no longer exists" in str(exc)


class JobStore:
    def __init__(self, client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._submit = client.register_script(_SUBMIT)

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, payload: JobPayload, idempotency_key: str | None, owner: str = "") -> tuple[str, bool]:
        """(job id, created). Failed attempts are retried (JOB_SUBMIT_ATTEMPTS), safe
        under the job id; if one may have reached Redis and none answered, the
        outcome is unknown and the error says so."""
        job_id = uuid.uuid4().hex
        fingerprint = payload.fingerprint()
        idem = idempotency_entry(owner, idempotency_key) if idempotency_key else job_key(job_id)
        keys = [idem, job_key(job_id), STREAM]
        args = [job_id, payload.dumps(), f"{time.time():.3f}", self.settings.job_result_ttl_seconds,
                "1" if idempotency_key else "0", fingerprint, owner, self.settings.jobs_max_queued, GROUP]
        maybe_sent, error = False, None
        for attempt in range(self.settings.job_submit_attempts):
            if attempt:
                await asyncio.sleep(SUBMIT_BACKOFF_S * 2 ** (attempt - 1))
            try:
                got_id, outcome = await self._submit(keys=keys, args=args)
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                maybe_sent = maybe_sent or not _unsent(exc)
                error = exc
                log.warning("job submit attempt %d failed: %s", attempt + 1, exc)
            except ResponseError as exc:  # refused before writing: out of memory, a read-only replica
                raise JobsUnavailable("the job queue refused the job; nothing was queued") from exc
        else:
            if maybe_sent:
                raise JobsOutcomeUnknown(UNKNOWN + ("retrying with the same Idempotency-Key is safe" if idempotency_key
                                                    else "a retry may run it twice: send an Idempotency-Key, "
                                                         "with which retrying is safe")) from error
            raise JobsUnavailable("the job queue is unreachable; nothing was queued") from error
        got_id, outcome = _s(got_id), int(outcome)
        if outcome == -1:
            raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body; "
                                       "use a new key for a new request")
        if outcome == -2:
            raise JobsBusy(f"the job queue is full (limit: {self.settings.jobs_max_queued} jobs waiting or running); "
                           "nothing was queued")
        return got_id, outcome == 1 or got_id == job_id

    async def get(self, job_id: str, owner: str = "") -> dict | None:
        """The job, or None when it is unknown, expired or another owner's."""
        status, attempts, job_owner, result, error = await self.client.hmget(
            job_key(job_id), "status", "attempts", "owner", "result", "error")
        if status is None or _s(job_owner or b"") != owner:
            return None
        out = {"job_id": job_id, "status": _s(status), "attempts": int(attempts or 0)}
        out |= {"result": json.loads(result)} if result is not None else {}
        return out | ({"error": json.loads(error)} if error is not None else {})

    # --- the worker's side -------------------------------------------------

    async def _with_group(self, call):
        try:
            return await call()
        except ResponseError as exc:
            if not _lost_group(exc):
                raise
            log.warning("the job stream or its consumer group is gone (%s); creating it again", exc)
            await self.ensure_group()
            return await call()

    async def read(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, str]]:
        reply = await self._with_group(lambda: self.client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count,
                                                                      block=block_ms))
        return await self._jobs([(eid, fields) for _, entries in reply or [] for eid, fields in entries])

    async def claim_stale(self, consumer: str, count: int) -> list[tuple[str, str]]:
        reply = await self._with_group(lambda: self.client.xautoclaim(
            STREAM, GROUP, consumer, self.settings.job_claim_idle_ms, start_id="0-0", count=count))
        return await self._jobs([(eid, fields) for eid, fields in reply[1] if fields])

    async def _jobs(self, entries) -> list[tuple[str, str]]:
        """(entry id, job id) for each entry; one without a job id (not ours: the
        store is not trusted) is acknowledged, removed and dead-lettered, so it
        can neither block a batch nor be claimed again and again."""
        out = []
        for eid, fields in entries:
            job_id = fields.get(b"job_id")
            if job_id is not None:
                out.append((_s(eid), _s(job_id)))
                continue
            log.warning("stream entry %s has no job id; dead-lettered", _s(eid))
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(STREAM, GROUP, eid)
                pipe.xdel(STREAM, eid)
                pipe.xadd(DEAD, {"entry": _s(eid), "error": "a stream entry without a job id"})
                await pipe.execute()
        return out

    async def trim_acknowledged(self) -> int:
        """Deletes entries older than every unacknowledged one (left by versions that
        kept acknowledged entries); returns how many."""
        groups = await self.client.xinfo_groups(STREAM)
        if [_s(g["name"]) for g in groups] != [GROUP]:  # another group's entries are not ours to delete
            return 0
        ms, seq = map(int, _s(groups[0]["last-delivered-id"]).split("-"))
        bound = (ms, seq + 1)
        pending = await self.client.xpending(STREAM, GROUP)
        if pending["pending"]:
            bound = min(bound, tuple(map(int, _s(pending["min"]).split("-"))))
        return await self.client.xtrim(STREAM, minid=f"{bound[0]}-{bound[1]}", approximate=False)

    async def start(self, job_id: str) -> tuple[str, JobPayload | None, int]:
        """(status before, payload, attempt number) and the job marked running."""
        key = job_key(job_id)
        status, payload = await self.client.hmget(key, "status", "payload")
        if status is None or payload is None or _s(status) in ("done", "failed"):
            return (_s(status) if status else "missing"), None, 0
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, "status", "running")
            pipe.hincrby(key, "attempts", 1)
            _, attempts = await pipe.execute()
        return _s(status), JobPayload.loads(payload), int(attempts)

    async def finish(self, entry_id: str, job_id: str, result: dict) -> None:
        key = job_key(job_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": "done", "result": json.dumps(result), "finished": f"{time.time():.3f}"})
            pipe.hdel(key, "error", "payload")
            pipe.expire(key, self.settings.job_result_ttl_seconds)
            pipe.xack(STREAM, GROUP, entry_id)
            pipe.xdel(STREAM, entry_id)
            await pipe.execute()

    async def fail(self, entry_id: str, job_id: str, error: dict, final: bool) -> None:
        """Final: dead-letter it and report `failed`. Otherwise leave it
        pending, to be claimed again after JOB_CLAIM_IDLE_MS."""
        key = job_key(job_id)
        async with self.client.pipeline(transaction=True) as pipe:
            if final:
                pipe.hset(key, mapping={"status": "failed", "error": json.dumps(error)})
                pipe.hdel(key, "payload")
                pipe.expire(key, self.settings.job_result_ttl_seconds)
                pipe.xadd(DEAD, {"job_id": job_id, "error": json.dumps(error)})
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.xdel(STREAM, entry_id)
            else:
                pipe.hset(key, mapping={"status": "queued", "error": json.dumps(error)})
            await pipe.execute()

    async def ack(self, entry_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, entry_id)
            pipe.xdel(STREAM, entry_id)
            await pipe.execute()


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def open_jobs(settings: Settings) -> AsyncIterator[JobStore | None]:
    """The job store on its own pool (blocking reads need a longer timeout than the
    cache's), or None without Redis. redis-py's retries are off: a command re-sent
    after a timeout could run twice, so callers retry only what is safe."""
    if not settings.jobs_url:
        yield None
        return
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis.from_url(settings.jobs_url, socket_timeout=settings.jobs_redis_timeout_s,
                                     socket_connect_timeout=settings.jobs_redis_timeout_s, max_connections=64,
                                     retry=Retry(NoBackoff(), 0))
    try:
        store = JobStore(client, settings)
        try:
            await store.ensure_group()
        except Exception as exc:  # Redis down at start: submitting will say so, the app still starts
            log.warning("cannot prepare the job stream: %s", exc)
        yield store
    finally:
        await client.aclose()
