"""The OpenAPI document: FastAPI's, plus the request bodies the routes read
themselves as components, and the limits the router enforces (from
settings) written into the schemas, so that what the document admits the
router accepts, and what it refuses the document excludes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from router.edge.schemas import BODY_MODELS
from router.settings import Settings

NOT_BLANK = r"\S"
VERSION = r"^([vV]?0*[1-9][0-9]{0,17})?$"  # empty: not pinned
BASE64 = r"^(data:[-\w.+/;=]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _branches(schema: dict) -> list[dict]:
    return schema.get("anyOf", [schema])


def _constrain(schema: dict, kind: str, **limits: Any) -> None:
    """Add `limits` to the `kind` (string, integer, array) branch of a property."""
    for branch in _branches(schema):
        if branch.get("type") == kind:
            branch.update(limits)


def _input_fields(props: dict, settings: Settings) -> None:
    for name in ("text", "input"):
        if name in props:
            _constrain(props[name], "string", pattern=NOT_BLANK, maxLength=settings.max_text_chars)
    if "image_b64" in props:
        _constrain(props["image_b64"], "string", minLength=4, pattern=BASE64)


def _options(props: dict, settings: Settings) -> None:
    if "model_version" in props:
        _constrain(props["model_version"], "string", pattern=VERSION)
        _constrain(props["model_version"], "integer", minimum=1, maximum=10**18 - 1)
    if "top_k" in props:
        _constrain(props["top_k"], "integer", minimum=1, maximum=settings.max_top_k)


def _one_input_required(schema: dict) -> None:
    """At least one of text, input, image_b64, and not null."""
    schema["anyOf"] = [{"required": [name], "properties": {name: {"type": "string"}}}
                       for name in ("text", "input", "image_b64")]


def body_components(settings: Settings) -> dict[str, dict]:
    _, top = models_json_schema([(m, "validation") for m in BODY_MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas = top["$defs"]
    predict, batch, item = schemas["PredictBody"], schemas["BatchBody"], schemas["BatchItem"]
    for schema in (predict, item):
        _input_fields(schema["properties"], settings)
        _one_input_required(schema)
    _options(predict["properties"], settings)
    _options(batch["properties"], settings)
    inputs = batch["properties"]["inputs"]
    inputs.update(minItems=1, maxItems=settings.max_batch_items)
    for branch in _branches(inputs["items"]):
        if branch.get("type") == "string":
            branch.update(pattern=NOT_BLANK, maxLength=settings.max_text_chars)
    schemas["PredictForm"] = {"type": "object", "title": "PredictForm", "properties": {
        "file": {"type": "string", "format": "binary", "description": "an image for image models"},
        "text": {"type": "string", "pattern": NOT_BLANK, "maxLength": settings.max_text_chars},
        "model": {"type": "string"}, "model_version": {"type": "string", "pattern": VERSION},
        "top_k": {"type": "integer", "minimum": 1, "maximum": settings.max_top_k}},
        "anyOf": [{"required": ["file"]}, {"required": ["text"]}]}
    return schemas


def _query_parameters(document: dict, settings: Settings) -> None:
    for path in document["paths"].values():
        for operation in path.values():
            for param in operation.get("parameters", []):
                if param.get("in") != "query":
                    continue
                _input_fields({param["name"]: param["schema"]}, settings)
                _options({param["name"]: param["schema"]}, settings)


def install(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with the document described above (built once)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(body_components(settings))
            _query_parameters(document, settings)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
