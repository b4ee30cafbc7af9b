"""`python -m router.jobs.worker`: runs queued jobs through the same routing,
cache and Triton path as /predict.

Each worker reads new entries of the job stream with its consumer group,
and now and then claims entries another worker left pending too long (a
crash); a stream or group that is gone (Redis lost its data) is created
again. It stores the result, then acknowledges and deletes the entry. A
job that fails is left pending to be retried; after JOB_MAX_ATTEMPTS (or
at once, for an input the model can never take) it goes to the
dead-letter stream as `failed`.
On SIGTERM it stops reading, finishes what it holds within WORKER_DRAIN_S,
and leaves the rest pending for another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time

from router import context
from router.control.store import open_control
from router.dataplane.runtime import open_service
from router.dataplane.service import PredictionService
from router.dataplane.views import response_body
from router.errors import RouterError, error_body
from router.jobs.store import JobStore, open_jobs
from router.logs import startup_settings
from router.metrics import Metrics
from router.settings import Settings

log = logging.getLogger(__name__)
CLAIM_EVERY_S = 1.0
BLOCK_MS = 1000


class Worker:
    def __init__(self, service: PredictionService, store: JobStore, settings: Settings, consumer: str,
                 concurrency: int) -> None:
        self.service = service
        self.store = store
        self.settings = settings
        self.consumer = consumer
        self.concurrency = concurrency
        self.tasks: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        await self.store.ensure_group()
        try:
            trimmed = await self.store.trim_acknowledged()
            if trimmed:
                log.info("deleted %d acknowledged entries from the job stream", trimmed)
        except Exception as exc:  # housekeeping only
            log.warning("could not trim the job stream: %s", exc)
        # A blocking read must return before the socket timeout.
        block_ms = max(10, min(BLOCK_MS, int(self.settings.jobs_redis_timeout_s * 500)))
        log.info("worker %s reading jobs with %d tasks", self.consumer, self.concurrency)
        last_claim = 0.0
        backoff = 0.5
        while not self.stopping.is_set():
            free = self.concurrency - len(self.tasks)
            if free <= 0:
                await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                entries = []
                if time.monotonic() - last_claim >= CLAIM_EVERY_S:
                    last_claim = time.monotonic()
                    entries = await self.store.claim_stale(self.consumer, free)
                if not entries:
                    entries = await self.store.read(self.consumer, free, block_ms)
                backoff = 0.5
            except Exception as exc:  # Redis unreachable: wait and try again
                log.warning("job queue unreachable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            for entry_id, job_id in entries:
                task = asyncio.create_task(self.process(entry_id, job_id))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        await self.drain()

    async def drain(self) -> None:
        if not self.tasks:
            return
        log.info("finishing %d job(s) before exit", len(self.tasks))
        done, pending = await asyncio.wait(self.tasks, timeout=self.settings.worker_drain_s)
        for task in pending:  # left pending in the stream: another worker claims them
            task.cancel()
        if pending:
            log.warning("handed back %d unfinished job(s)", len(pending))

    async def process(self, entry_id: str, job_id: str) -> None:
        _, token = context.begin(job_id)
        try:
            try:
                before, payload, attempt = await self.store.start(job_id)
            except RouterError as exc:  # a payload that cannot be read can never run
                log.warning("job %s: %s (dead-lettered)", job_id, exc.message)
                await self.store.fail(entry_id, job_id, error_body(exc.code, exc.message, job_id)["error"], True)
                return
            if payload is None:  # done already (a redelivery), or expired
                await self.store.ack(entry_id)
                return
            started = time.perf_counter()
            try:
                preds = await self.service.predict_many(payload.to_items(), payload.options(), job_id)
            except RouterError as exc:
                final = exc.status < 500 or attempt >= self.settings.job_max_attempts
                log.warning("job %s attempt %d failed: %s: %s%s", job_id, attempt, exc.code, exc.message,
                            " (dead-lettered)" if final else "")
                await self.store.fail(entry_id, job_id, error_body(exc.code, exc.message, job_id)["error"], final)
                return
            latency = round((time.perf_counter() - started) * 1000, 3)
            result = response_body(preds, job_id, payload.batch, latency)
            await self.store.finish(entry_id, job_id, result)
            log.info("job %s done", job_id, extra={"attempt": attempt, "latency_ms": latency})
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis failed mid-job, or a bug: the entry stays pending and is retried
            log.exception("job %s could not be completed; it stays pending", job_id)
        finally:
            context.end(token)


async def serve(settings: Settings, concurrency: int, consumer: str) -> int:
    async with open_service(settings, Metrics()) as service, open_jobs(settings) as store, \
            open_control(settings, service):
        if store is None:
            log.error("the worker needs Redis: set REDIS_URL (or JOBS_REDIS_URL)")
            return 2
        worker = Worker(service, store, settings, consumer, concurrency)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopping.set)
        await worker.run()
        log.info("worker %s stopped", consumer)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.jobs.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, help="jobs run at once (default: WORKER_CONCURRENCY)")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}", help="consumer name")
    args = parser.parse_args(argv)
    settings = startup_settings()
    if settings is None:
        return 2
    return asyncio.run(serve(settings, args.concurrency or settings.worker_concurrency, args.name))


if __name__ == "__main__":
    sys.exit(main())
