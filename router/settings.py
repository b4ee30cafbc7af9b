"""One settings class, from the environment and `.env`, validated at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def parse_version(value: int | str | None) -> int | None:
    """`2`, `"2"`, `"v2"` and `"V2"` -> 2; None and "" -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip()
        text = text[1:] if text[:1] in ("v", "V") else text
        if not (text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 18):
            raise ValueError(f"model version must look like 2 or v2, got {str(value)[:40]!r}")
        number = int(text)
    if not 1 <= number < 10**18:
        raise ValueError(f"model version must be a positive integer under 10**18, got {str(value)[:40]!r}")
    return number


class ModelRoute(BaseModel):
    """How one model's traffic is split. None for the default means the
    highest version Triton reports ready."""

    default_version: int | None = None
    canary_version: int | None = None
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    shadow_version: int | None = None
    shadow_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    # The rollout's measurement window each attempt is counted in (None: nothing counted).
    window: int | None = None

    @field_validator("default_version", "canary_version", "shadow_version", mode="before")
    @classmethod
    def _version(cls, value):
        return parse_version(value)


Scope = Literal["predict", "jobs", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = ("predict", "jobs", "admin", "metrics")


def parse_rate(value: str | None) -> str | None:
    """A rate such as `100/second` or `100/s`, checked by the `limits` library; "" or "none": no limit."""
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    from limits import parse

    text = str(value).strip()
    short = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
    amount, _, unit = text.partition("/")
    text = f"{amount}/{short.get(unit.strip(), unit.strip())}"
    try:
        parse(text)
    except ValueError:
        raise ValueError(f"rate {value!r} must look like 100/second, 100/s or 6000/minute") from None
    return text


class ApiKey(BaseModel):
    """One entry of API_KEYS. The key itself is never stored: only its sha256."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: set[Scope]
    rate: str | None = None

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value):
        return parse_rate(value)


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
    triton_refresh_s: float = Field(default=1.0, gt=0, description="how often model readiness is re-read")
    triton_ready_timeout_s: float = Field(default=0.5, gt=0, description="Triton not ready within this: /ready 503")
    # Sent with the repository-API calls (index, load) when Triton restricts them
    # (--http-restricted-api / --grpc-restricted-protocol model-repository:<header>=<key>).
    triton_admin_header: str = "triton-admin-key"
    triton_admin_key: SecretStr | None = None

    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.1, gt=0)
    redis_backoff_max_s: float = Field(default=5.0, gt=0)
    redis_in_flight: int = Field(default=1, ge=1, le=64,
                                 description="cache round trips to Redis at once; lookups and stores meanwhile wait "
                                             "and go together in the next one")
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    cache_ttl_jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    cache_namespace: str = "pred"
    # Router-side adaptive batching of cache misses (per model, version and output request).
    batching: bool = Field(default=True, description="gather concurrent misses into one Triton request")
    batch_in_flight: int = Field(default=2, ge=1, le=64, description="Triton calls at once per key; more wait")
    batch_window_ms: float = Field(default=0.0, ge=0, le=100, description="wait this long to fill a batch (0: adaptive)")
    batch_max_queue: int = Field(default=4096, ge=1, description="misses waiting per key; more are 503")
    fast_path: bool = Field(default=True, description="serve /predict and /v2 infer without FastAPI's layers")
    # The in-process tier (in front of Redis, or alone without it): entries and bytes; 0 entries: none.
    cache_lru_size: int = Field(default=10_000, ge=0)
    cache_lru_max_mb: float = Field(default=64.0, gt=0, description="bytes of values kept in the process")

    # Jobs: a Redis Stream; defaults to REDIS_URL. Job data has no TTL until
    # it is done, so a `volatile-*` or `noeviction` memory policy never evicts it.
    jobs_redis_url: str | None = None
    jobs_redis_timeout_s: float = Field(default=5.0, gt=0)
    jobs_max_queued: int = Field(default=10_000, ge=0, description="jobs waiting or running; 0: no limit")
    job_submit_attempts: int = Field(default=3, ge=1, le=10, description="tries of one submit when Redis fails")
    job_result_ttl_seconds: int = Field(default=86_400, ge=1)
    job_max_attempts: int = Field(default=3, ge=1)
    job_claim_idle_ms: int = Field(default=30_000, ge=100, description="pending this long -> another worker takes it")
    worker_concurrency: int = Field(default=8, ge=1)
    worker_drain_s: float = Field(default=20.0, ge=0)

    # Rollout states: CONTROL_REDIS_URL, else the jobs' Redis, else this process only.
    control_redis_url: str | None = None
    control_refresh_s: float = Field(default=5.0, gt=0, description="re-read every state (missed announcements)")
    # Rollout analysis: one controller at a time (a lease in that Redis), figures from every replica.
    rollout_tick_s: float = Field(default=0.5, gt=0, le=10, description="how often the controller judges a step")
    rollout_lease_s: float = Field(default=4.0, ge=1, le=60, description="the controller's lease; takeover within it")
    rollout_max_holds: int = Field(default=3, ge=1, description="held intervals (too few requests) before a pause")
    rollout_p99_floor_ms: float = Field(default=5.0, ge=0, description="a canary p99 under this never fails a step")
    rollout_figures_flush_s: float = Field(default=0.5, gt=0, le=10, description="how often figures reach Redis")
    rollout_figures_ttl_s: int = Field(default=7 * 86_400, ge=60, description="how long a step's figures are kept")
    shadow_max_in_flight: int = Field(default=32, ge=1, description="shadow calls at once; more are skipped")
    shadow_min_cosine: float = Field(default=0.99, ge=-1, le=1, description="tensor outputs agree at this cosine")

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
    max_image_aspect: float = Field(default=64.0, ge=1.0, description="longer side / shorter side, at most")
    preprocess_workers: int = Field(default=2, ge=1, le=64, description="threads that decode images off the event loop")
    gc_gen0_threshold: int = Field(default=10_000, ge=0, le=1_000_000,
                                   description="allocations between the garbage collector's young passes, set at "
                                               "start-up (Python's own: 700; 0 leaves it as it is)")
    max_batch_items: int = Field(default=64, ge=1)
    max_top_k: int = Field(default=10, ge=1)
    # The Open Inference Protocol's /v2 routes: beyond these, 400 before Triton is asked.
    v2_max_inputs: int = Field(default=16, ge=1, description="inputs, and requested outputs, of one /v2 request")
    v2_max_elements: int = Field(default=1 << 20, ge=1, description="elements of one /v2 input tensor")
    parse_memo_mb: float = Field(default=8.0, ge=0,
                                 description="megabytes of /predict and /v2 infer bodies kept with what was parsed "
                                             "from them, so that a body seen before is not parsed again (0: none)")

    # The edge. Header and body read timeouts and the header size limit are
    # enforced by the HTTP server (router/edge/server.py); the in-flight cap
    # by the edge middleware (probes are exempt).
    max_header_bytes: int = Field(default=16_384, ge=1024, description="request line + headers; beyond: 431")
    header_timeout_s: float = Field(default=10.0, gt=0, description="to receive the request line and headers; 408")
    body_timeout_s: float = Field(default=30.0, gt=0, description="to receive the whole body; 408")
    max_in_flight: int = Field(default=512, ge=1, description="requests served at once per process; beyond: 503")
    max_json_depth: int = Field(default=32, ge=2, description="nesting of a JSON body; beyond: 400")

    # Authentication: API_KEYS (JSON list) or API_KEYS_FILE (a path to the same).
    # Without keys the router runs open: anonymous requests get ANONYMOUS_SCOPES,
    # by default predict, jobs and metrics; once keys exist, nothing by default.
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_keys_file: Path | None = None
    anonymous_scopes: Annotated[set[Scope] | None, NoDecode] = None  # "predict,jobs" or a JSON list
    metrics_public: bool = False

    # Rate limits shared across replicas through REDIS_URL (else per process):
    # RATE_LIMIT per key (a key's own `rate` wins), per client address when anonymous.
    rate_limit: str | None = "1000/second"

    log_level: str = "INFO"
    log_json: bool = True
    request_logging: bool = True
    metrics_enabled: bool = True

    @field_validator("default_model_version", "canary_version", mode="before")
    @classmethod
    def _version(cls, value):
        return parse_version(value)

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate(cls, value):
        return parse_rate(value)

    @field_validator("anonymous_scopes", mode="before")
    @classmethod
    def _scopes(cls, value):
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [s.strip() for s in text.split(",") if s.strip()]
        return value

    @model_validator(mode="after")
    def _keys(self) -> "Settings":
        if self.api_keys_file is not None:
            try:
                entries = json.loads(self.api_keys_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"API_KEYS_FILE {self.api_keys_file}: {exc}") from None
            self.api_keys = [*self.api_keys, *(ApiKey.model_validate(e) for e in entries)]
        names = [k.name for k in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError("API_KEYS: every key needs its own name")
        if len({k.key_sha256 for k in self.api_keys}) != len(self.api_keys):
            raise ValueError("API_KEYS: the same key is listed twice")
        if self.anonymous_scopes is None:
            self.anonymous_scopes = set() if self.api_keys else {"predict", "jobs", "metrics"}
        if "admin" in self.anonymous_scopes:
            raise ValueError("ANONYMOUS_SCOPES must not include admin: admin always needs a key")
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def anonymous(self) -> frozenset[str]:
        scopes = set(self.anonymous_scopes or ())
        return frozenset(scopes | {"metrics"} if self.metrics_public else scopes)

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
    def triton_admin_headers(self) -> dict[str, str] | None:
        if self.triton_admin_key is None:
            return None
        return {self.triton_admin_header: self.triton_admin_key.get_secret_value()}

    @property
    def jobs_url(self) -> str | None:
        return self.jobs_redis_url or self.redis_url

    @property
    def control_url(self) -> str | None:
        """Rollout states live with the jobs: in the durable Redis."""
        return self.control_redis_url or self.jobs_url

    @property
    def triton_url(self) -> str:
        return self.triton_grpc_url if self.triton_protocol == "grpc" else self.triton_http_url
