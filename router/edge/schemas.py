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


class ItemResult(BaseModel):
    """One prediction: the /predict body without its latency, as each item of a batch."""

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
    routed_by: str = Field(..., description='"pinned", "default", "canary" or "fallback"')
    requested_version: int | None = Field(None, description="Set when the asked-for version was not honoured")


class PredictResponse(ItemResult):
    latency_ms: float


class BatchResponse(BaseModel):
    request_id: str
    results: list[ItemResult]
    latency_ms: float


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthView(BaseModel):
    status: str
    model_loaded: bool = Field(..., description="a version of DEFAULT_MODEL is ready")
    triton: str = Field(..., description='"ready" or "unreachable"')
    redis: str = Field(..., description='"ok", "down" or "disabled"')
    auth: str = Field(..., description='"on" when API keys are configured, "off" when the router is open')


class ReadyModel(BaseModel):
    default_version: int | None
    ready: bool


class ReadyView(BaseModel):
    ready: bool
    triton: bool
    models: dict[str, ReadyModel]


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
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 429, 502, 503, 504)}
# The JSON bodies the routes read themselves: documented as components (see router/edge/openapi.py).
BODY_MODELS = (PredictBody, BatchBody, BatchItem)


def request_body(*models: type[BaseModel], multipart: bool = True) -> dict:
    """An `openapi_extra` declaring a required body of one of `models` (or a form upload)."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    # anyOf: a body that is both (it has `inputs` and `text`) is taken as a batch.
    content: dict[str, Any] = {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}
    if multipart:
        content["multipart/form-data"] = {"schema": {"$ref": "#/components/schemas/PredictForm"}}
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
