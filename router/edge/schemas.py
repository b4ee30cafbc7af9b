"""Request and response bodies, as the OpenAPI docs show them, and the one
way a pydantic validation error becomes a message."""

from __future__ import annotations

from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from router.errors import InvalidInput


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    text: StrictStr | None = Field(None, description="Text for text models", examples=["I love this system"])
    input: StrictStr | None = Field(None, description="Alias of `text`")
    image_b64: StrictStr | None = Field(None, description="Base64 image (PNG, JPEG, ...) for image models")
    model: StrictStr | None = Field(None, description="Model name (default: DEFAULT_MODEL)")
    model_version: StrictInt | StrictStr | None = Field(None, description="Pin a version: 2 or v2")
    top_k: StrictInt | None = Field(None, ge=1, description="How many classes to return in `scores`")


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: StrictStr | None = None
    input: StrictStr | None = None
    image_b64: StrictStr | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    inputs: list[StrictStr | BatchItem] = Field(..., description="Texts, or objects with text / image_b64")
    model: StrictStr | None = None
    model_version: StrictInt | StrictStr | None = None
    top_k: StrictInt | None = Field(None, ge=1)


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model: str
    model_version: int
    input: str | None = Field(None, description="The text, for text models")
    prediction: str
    confidence: float
    scores: dict[str, float]
    source: str = Field(..., description='"cache" or "model"')
    cached: bool
    latency_ms: float
    routed_by: str = Field(..., description='"pinned", "default", "canary" or "fallback"')
    requested_version: int | None = Field(None, description="Set when the asked-for version was not honoured")


class BatchResponse(BaseModel):
    request_id: str
    results: list[PredictResponse]
    latency_ms: float


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    created: bool = Field(..., description="False when an Idempotency-Key returned an existing job")


class JobStatus(BaseModel):
    job_id: str
    status: str = Field(..., description='"queued", "running", "done" or "failed"')
    attempts: int
    result: dict | None = Field(None, description="The /predict body (or {results: [...]} for a batch)")
    error: ErrorDetail | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503, 504)}

MULTIPART_PREDICT = {"schema": {"type": "object", "properties": {
    "file": {"type": "string", "format": "binary"}, "text": {"type": "string"},
    "model": {"type": "string"}, "model_version": {"type": "string"}, "top_k": {"type": "integer"}}}}


def request_body(json_schema: dict, multipart: bool = True) -> dict:
    """An `openapi_extra` declaring a required body (the routes read it themselves)."""
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if multipart:
        content["multipart/form-data"] = MULTIPART_PREDICT
    return {"requestBody": {"required": True, "content": content}}


def validation_message(errors: Iterable[dict]) -> str:
    """The first error as `field.path: message` (FastAPI's body/query/path prefix dropped)."""
    first = next(iter(errors), None) or {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return f"{where}: {first['msg']}" if where else first["msg"]


Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], fields: dict) -> Model:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc.errors())) from None
