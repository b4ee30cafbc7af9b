"""/jobs: submit a prediction, get an id at once, fetch the result later."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from router.edge import bodies
from router.edge.deps import JobsDep, RecordDep, ServiceDep, SettingsDep
from router.edge.schemas import ERROR_RESPONSES, BatchBody, ErrorResponse, JobAccepted, JobStatus, PredictBody, request_body
from router.errors import JobsUnavailable, NotFound
from router.jobs.store import JobPayload, is_job_id

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=202, summary="Submit a prediction (or a batch) as a job",
             response_model=JobAccepted, responses={**ERROR_RESPONSES, 503: {"model": ErrorResponse}},
             openapi_extra=request_body({"oneOf": [PredictBody.model_json_schema(), BatchBody.model_json_schema()]}))
async def submit_job(request: Request, service: ServiceDep, settings: SettingsDep, jobs: JobsDep, record: RecordDep,
                     idempotency_key: Annotated[str | None, Header(max_length=256)] = None):
    fields, upload = await bodies.read_fields(request)
    is_batch = "inputs" in fields and upload is None
    # The job id is not known yet: canary routing uses X-User-ID, else this request's id.
    items, opts = (bodies.batch(request, settings, record.request_id, fields) if is_batch
                   else bodies.single(request, settings, record.request_id, fields, upload))
    await service.prepare(items, opts)  # every 4xx now, before anything is queued
    try:
        job_id, created = await jobs.submit(JobPayload.of(items, opts, is_batch), idempotency_key)
    except Exception as exc:  # redis-py's errors: the queue is not reachable
        raise JobsUnavailable("the job queue is unreachable; nothing was queued") from exc
    url = f"/jobs/{job_id}"
    return JSONResponse({"job_id": job_id, "status_url": url, "created": created}, status_code=202,
                        headers={"Location": url})


@router.get("/jobs/{job_id}", summary="A job's status and, once done, its result",
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
