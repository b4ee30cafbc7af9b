"""/jobs: submit a prediction, get an id at once, fetch the result later."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from router.context import RequestRecord
from router.edge import bodies
from router.edge.deps import JobsDep, RecordDep, ServiceDep, SettingsDep, require
from router.edge.schemas import ERROR_RESPONSES, BatchBody, ErrorResponse, JobAccepted, JobStatus, PredictBody, request_body
from router.errors import JobsUnavailable, NotFound, RouterError
from router.settings import Settings
from router.jobs.store import JobPayload, is_job_id

router = APIRouter(tags=["jobs"], dependencies=[require("jobs")])


def owner(request: Request, record: RequestRecord) -> str:
    """Jobs (and their Idempotency-Keys) belong to the API key that sent them;
    anonymous ones to the client's address, so anonymous clients cannot read
    or collide with each other's."""
    if record.key_name is not None:
        return f"key:{record.key_name}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


def _retry_later(exc: RouterError, settings: Settings) -> RouterError:
    """A 503 of the job queue, with Retry-After."""
    exc.headers["Retry-After"] = str(max(1, math.ceil(settings.jobs_redis_timeout_s)))
    return exc


@router.post("/jobs", status_code=202, summary="Submit a prediction (or a batch) as a job",
             response_model=JobAccepted, responses={**ERROR_RESPONSES, 503: {"model": ErrorResponse}},
             openapi_extra=request_body(PredictBody, BatchBody))
async def submit_job(request: Request, service: ServiceDep, settings: SettingsDep, jobs: JobsDep, record: RecordDep,
                     idempotency_key: Annotated[str | None, Header(max_length=256)] = None):
    fields, upload = await bodies.read_fields(request, settings.max_json_depth)
    is_batch = "inputs" in fields and upload is None
    # The job id is not known yet: canary routing uses X-User-ID, else this request's id.
    items, opts = (bodies.batch(request.headers, settings, record.request_id, fields) if is_batch
                   else bodies.single(request.headers, settings, record.request_id, fields, upload))
    await service.check(items, opts)  # every 4xx the headers show, before anything is queued; the worker decodes once
    try:
        job_id, created = await jobs.submit(JobPayload.of(items, opts, is_batch), idempotency_key,
                                            owner=owner(request, record))
    except RouterError as exc:
        raise _retry_later(exc, settings) if exc.status == 503 else exc
    url = f"/jobs/{job_id}"
    return JSONResponse({"job_id": job_id, "status_url": url, "created": created}, status_code=202,
                        headers={"Location": url})


@router.get("/jobs/{job_id}", summary="A job's status and, once done, its result",
            response_model=JobStatus,
            responses={code: {"model": ErrorResponse} for code in (401, 403, 404, 429, 503)})
async def get_job(job_id: str, request: Request, jobs: JobsDep, record: RecordDep, settings: SettingsDep):
    if not is_job_id(job_id):
        raise NotFound(f"unknown job {job_id!r}")
    try:
        job = await jobs.get(job_id, owner=owner(request, record))
    except Exception as exc:  # redis-py's errors
        raise _retry_later(JobsUnavailable("the job store is unreachable"), settings) from exc
    if job is None:  # another owner's job reads exactly as an unknown one
        raise NotFound(f"unknown job {job_id!r} (or its result expired)")
    return job
