"""/jobs: submit a prediction, get an id at once, fetch the result later."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from router import requests as parse
from router.api import ERRORS, PREDICT_DOC, ServiceDep, SettingsDep
from router.errors import NotFound, RouterError
from router.jobs import JobPayload, JobStore, is_job_id
from router.schemas import BatchBody, ErrorResponse, JobAccepted, JobStatus, PredictBody

jobs_api = APIRouter(tags=["jobs"])


class JobsUnavailable(RouterError):
    status, code = 503, "jobs_unavailable"


async def get_jobs(request: Request) -> JobStore:
    store = request.app.state.jobs
    if store is None:
        raise JobsUnavailable("asynchronous jobs need Redis: set REDIS_URL (or JOBS_REDIS_URL)")
    return store


JobsDep = Annotated[JobStore, Depends(get_jobs)]
_BODIES: dict[str, Any] = {
    "application/json": {"schema": {"oneOf": [PredictBody.model_json_schema(), BatchBody.model_json_schema()]}},
    "multipart/form-data": PREDICT_DOC["openapi_extra"]["requestBody"]["content"]["multipart/form-data"],
}


@jobs_api.post("/jobs", status_code=202, summary="Submit a prediction (or a batch) as a job",
               response_model=JobAccepted, responses={**ERRORS, 503: {"model": ErrorResponse}},
               openapi_extra={"requestBody": {"required": True, "content": _BODIES}})
async def submit_job(request: Request, service: ServiceDep, settings: SettingsDep, jobs: JobsDep,
                     idempotency_key: Annotated[str | None, Header(max_length=256)] = None):
    fields, upload = await parse.read_fields(request)
    is_batch = "inputs" in fields and upload is None
    # The job id is not known yet; canary routing uses X-User-ID, else a fresh key.
    key = request.state.request_id
    items, opts = (parse.batch(request, settings, fields, routing_key=key) if is_batch
                   else parse.single(request, settings, fields, upload, routing_key=key))
    await service.prepare(items, opts)  # every 4xx now, before anything is queued
    try:
        job_id, created = await jobs.submit(JobPayload.of(items, opts, is_batch), idempotency_key)
    except Exception as exc:  # redis-py's errors: the queue is not reachable
        raise JobsUnavailable("the job queue is unreachable; nothing was queued") from exc
    url = f"/jobs/{job_id}"
    return JSONResponse({"job_id": job_id, "status_url": url, "created": created}, status_code=202,
                        headers={"Location": url})


@jobs_api.get("/jobs/{job_id}", summary="A job's status and, once done, its result",
              response_model=JobStatus, responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
async def get_job(job_id: str, jobs: JobsDep):
    if not is_job_id(job_id):
        raise NotFound(f"unknown job {job_id!r}")
    try:
        job = await jobs.get(job_id)
    except Exception as exc:
        raise JobsUnavailable("the job store is unreachable") from exc
    if job is None:
        raise NotFound(f"unknown job {job_id!r} (or its result expired)")
    return job
