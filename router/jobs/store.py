"""Asynchronous predictions on a Redis Stream with a consumer group.

    jobs:job:<id>   hash: status, payload, attempts, created, result | error
    jobs:stream     stream of {job_id}; consumer group `workers`
    jobs:dead       dead-letter stream of {job_id, error}
    jobs:idem:<h>   Idempotency-Key -> job id

Delivery is at least once: a worker stores the result, then acknowledges.
A job left pending by a crashed worker is claimed by another after
JOB_CLAIM_IDLE_MS (XAUTOCLAIM); a job already done is only acknowledged
again, so results are idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import AsyncIterator

from router.dataplane.types import Item, Options
from router.settings import Settings

log = logging.getLogger(__name__)

STREAM = "jobs:stream"
DEAD = "jobs:dead"
GROUP = "workers"
JOB_ID_LENGTH = 32

# Atomic submit: an Idempotency-Key that was seen returns its job; otherwise
# the key, the job and its stream entry are written together.
_SUBMIT = """
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {existing, 0} end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[2], 'status', 'queued', 'payload', ARGV[2], 'created', ARGV[3], 'attempts', 0)
redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1])
return {ARGV[1], 1}
"""


def job_key(job_id: str) -> str:
    return f"jobs:job:{job_id}"


def is_job_id(text: str) -> bool:
    return len(text) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class JobPayload:
    """What a worker needs to run the request exactly as /predict would."""

    items: list[dict]  # {"text": ...} or {"image_b64": ...}
    model: str
    requested_version: int | None
    top_k: int
    routing_key: str
    batch: bool

    @classmethod
    def of(cls, items: list[Item], opts: Options, batch: bool) -> "JobPayload":
        raw = [{"text": i.text} if i.image is None else {"image_b64": base64.b64encode(i.image).decode()}
               for i in items]
        return cls(raw, opts.model, opts.requested_version, opts.top_k, opts.routing_key, batch)

    def to_items(self) -> list[Item]:
        return [Item(text=i["text"]) if "text" in i else Item(image=base64.b64decode(i["image_b64"]))
                for i in self.items]

    def options(self) -> Options:
        return Options(self.model, self.requested_version, self.top_k, self.routing_key)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str | bytes) -> "JobPayload":
        return cls(**json.loads(text))


class JobStore:
    def __init__(self, client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._submit = client.register_script(_SUBMIT)

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, payload: JobPayload, idempotency_key: str | None) -> tuple[str, bool]:
        """(job id, created): an Idempotency-Key seen before returns its job."""
        job_id = uuid.uuid4().hex
        idem = "jobs:idem:" + hashlib.sha256((idempotency_key or "").encode()).hexdigest()
        got_id, created = await self._submit(
            keys=[idem, job_key(job_id), STREAM],
            args=[job_id, payload.dumps(), f"{time.time():.3f}", self.settings.job_result_ttl_seconds,
                  "1" if idempotency_key else "0"])
        return (got_id.decode() if isinstance(got_id, bytes) else got_id), bool(created)

    async def get(self, job_id: str) -> dict | None:
        raw = await self.client.hgetall(job_key(job_id))
        if not raw:
            return None
        job = {k.decode(): v.decode() for k, v in raw.items()}
        out = {"job_id": job_id, "status": job["status"], "attempts": int(job.get("attempts", 0))}
        if "result" in job:
            out["result"] = json.loads(job["result"])
        if "error" in job:
            out["error"] = json.loads(job["error"])
        return out

    # --- the worker's side -------------------------------------------------

    async def read(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, str]]:
        reply = await self.client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms)
        return [(_s(eid), _s(fields[b"job_id"])) for _, entries in reply or [] for eid, fields in entries]

    async def claim_stale(self, consumer: str, count: int) -> list[tuple[str, str]]:
        reply = await self.client.xautoclaim(STREAM, GROUP, consumer, self.settings.job_claim_idle_ms,
                                             start_id="0-0", count=count)
        return [(_s(eid), _s(fields[b"job_id"])) for eid, fields in reply[1] if fields]

    async def start(self, job_id: str) -> tuple[str, JobPayload | None, int]:
        """(status before, payload, attempt number) and the job marked running."""
        key = job_key(job_id)
        status, payload = await self.client.hmget(key, "status", "payload")
        if status is None or _s(status) in ("done", "failed"):
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
            pipe.hdel(key, "error")
            pipe.expire(key, self.settings.job_result_ttl_seconds)
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()

    async def fail(self, entry_id: str, job_id: str, error: dict, final: bool) -> None:
        """Final: dead-letter it and report `failed`. Otherwise leave it
        pending, to be claimed again after JOB_CLAIM_IDLE_MS."""
        key = job_key(job_id)
        async with self.client.pipeline(transaction=True) as pipe:
            if final:
                pipe.hset(key, mapping={"status": "failed", "error": json.dumps(error)})
                pipe.expire(key, self.settings.job_result_ttl_seconds)
                pipe.xadd(DEAD, {"job_id": job_id, "error": json.dumps(error)})
                pipe.xack(STREAM, GROUP, entry_id)
            else:
                pipe.hset(key, mapping={"status": "queued", "error": json.dumps(error)})
            await pipe.execute()

    async def ack(self, entry_id: str) -> None:
        await self.client.xack(STREAM, GROUP, entry_id)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def open_jobs(settings: Settings) -> AsyncIterator[JobStore | None]:
    """The job store on its own pool (long blocking reads need a longer
    socket timeout than the cache's), or None without Redis."""
    if not settings.jobs_url:
        yield None
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.jobs_url, socket_timeout=settings.jobs_redis_timeout_s,
                                     socket_connect_timeout=settings.jobs_redis_timeout_s, max_connections=64)
    try:
        store = JobStore(client, settings)
        try:
            await store.ensure_group()
        except Exception as exc:  # Redis down at start: submitting will say so, the app still starts
            log.warning("cannot prepare the job stream: %s", exc)
        yield store
    finally:
        await client.aclose()
