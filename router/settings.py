"""One settings class, from the environment and `.env`, validated at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_version(value: int | str | None) -> int | None:
    """`2`, `"2"`, `"v2"` and `"V2"` -> 2; None and "" -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip()
        text = text[1:] if text[:1] in ("v", "V") else text
        if not text.isdigit():
            raise ValueError(f"model version must look like 2 or v2, got {value!r}")
        number = int(text)
    if number < 1:
        raise ValueError(f"model version must be a positive integer, got {value!r}")
    return number


class ModelRoute(BaseModel):
    """How one model's traffic is split. None for the default means the
    highest version Triton reports ready."""

    default_version: int | None = None
    canary_version: int | None = None
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0)

    @field_validator("default_version", "canary_version", mode="before")
    @classmethod
    def _version(cls, value):
        return parse_version(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")

    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_grpc_url: str = "127.0.0.1:8001"
    triton_http_url: str = "127.0.0.1:8000"
    triton_timeout_s: float = Field(default=10.0, gt=0)
    triton_refresh_s: float = Field(default=2.0, gt=0, description="how often model readiness is re-read")

    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.1, gt=0)
    redis_backoff_max_s: float = Field(default=5.0, gt=0)
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    cache_ttl_jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    cache_namespace: str = "pred"
    cache_lru_size: int = Field(default=10_000, ge=1)

    # Jobs: a Redis Stream; defaults to REDIS_URL. Job data has no TTL until
    # it is done, so a `volatile-*` or `noeviction` memory policy never evicts it.
    jobs_redis_url: str | None = None
    jobs_redis_timeout_s: float = Field(default=5.0, gt=0)
    job_result_ttl_seconds: int = Field(default=86_400, ge=1)
    job_max_attempts: int = Field(default=3, ge=1)
    job_claim_idle_ms: int = Field(default=30_000, ge=100, description="pending this long -> another worker takes it")
    worker_concurrency: int = Field(default=8, ge=1)
    worker_drain_s: float = Field(default=20.0, ge=0)

    default_model: str = "sentiment"
    # The seed's names; they apply to DEFAULT_MODEL.
    default_model_version: int | None = None
    canary_version: int | None = None
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    # Other models: MODEL_ROUTES='{"digits": {"default_version": 1, "canary_version": 2, "canary_percent": 10}}'
    model_routes: dict[str, ModelRoute] = Field(default_factory=dict)
    load_all_models: bool = True

    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_text_chars: int = Field(default=5000, ge=1)
    max_image_pixels: int = Field(default=4096 * 4096, ge=64)
    max_batch_items: int = Field(default=64, ge=1)
    max_top_k: int = Field(default=10, ge=1)

    log_level: str = "INFO"
    log_json: bool = True
    request_logging: bool = True
    metrics_enabled: bool = True

    @field_validator("default_model_version", "canary_version", mode="before")
    @classmethod
    def _version(cls, value):
        return parse_version(value)

    @model_validator(mode="after")
    def _canary_needs_a_version(self) -> "Settings":
        if self.canary_percent > 0 and self.canary_version is None:
            raise ValueError("CANARY_PERCENT is set but CANARY_VERSION is not")
        for name, route in self.model_routes.items():
            if route.canary_percent > 0 and route.canary_version is None:
                raise ValueError(f"MODEL_ROUTES[{name!r}] sets canary_percent without canary_version")
        return self

    def route_for(self, model: str) -> ModelRoute:
        if model in self.model_routes:
            return self.model_routes[model]
        if model == self.default_model:
            return ModelRoute(default_version=self.default_model_version, canary_version=self.canary_version,
                              canary_percent=self.canary_percent)
        return ModelRoute()

    @property
    def jobs_url(self) -> str | None:
        return self.jobs_redis_url or self.redis_url

    @property
    def triton_url(self) -> str:
        return self.triton_grpc_url if self.triton_protocol == "grpc" else self.triton_http_url
