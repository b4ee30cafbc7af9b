"""The servers a benchmark run measures, on free loopback ports: Triton on a
copy of the repository with a batched and an unbatched twin of one model,
a second Triton with its own response cache on for one model, redis-server,
and routers in the configurations being compared."""

from __future__ import annotations

import shutil
import sys
from contextlib import ExitStack
from pathlib import Path

from devstack.processes import RedisServer, RouterProcess, free_port
from export.config import read_config, render
from export.constants import CONFIG_NAME
from export.repository import copy_version, write_version
from local_triton import Ports, TritonServer

ROOT = Path(__file__).resolve().parent.parent
BATCH_MODEL = "sentiment"
BATCH_VERSION = 2  # the heavier architecture (byte CNN)

ROUTERS: dict[str, dict[str, str | None]] = {
    # name: settings on top of the common ones (None: the common one unset)
    "grpc": {},
    "http": {"TRITON_PROTOCOL": "http"},
    "bare": {"METRICS_ENABLED": "false", "REQUEST_LOGGING": "false"},
    "two": {"WORKERS": "2"},
    # the same router with its in-process cache tier alone: what Redis adds to a miss
    "local": {"REDIS_URL": None},
    # the hot path's alternatives: FastAPI's own routes (no lane, no fast path) under uvicorn,
    # and the app under granian instead (ASGI: its fast path, without the lane inside uvicorn's protocol)
    "routes": {"FAST_PATH": "false"},
    "granian": {},
}
GRANIAN = {"granian"}  # routers served by granian rather than `python -m router`


def bench_repository(dest: Path) -> Path:
    """model_repository/ plus `<model>_batched` and `<model>_unbatched`:
    version 2 of BATCH_MODEL under the same config with and without
    dynamic batching, so that only the scheduler differs."""
    shutil.copytree(ROOT / "model_repository", dest)
    source = dest / BATCH_MODEL
    for suffix, batched in (("batched", True), ("unbatched", False)):
        config = read_config(source)
        name = f"{BATCH_MODEL}_{suffix}"
        config.name = name
        config.ClearField("version_policy")
        config.version_policy.specific.versions.append(1)
        if not batched:
            config.ClearField("dynamic_batching")
        copy_version(source, BATCH_VERSION, dest / name, config)
    return dest


CACHED_MODEL = "sentiment"
TRITON_CACHE_BYTES = 64 * 1024 * 1024


def cached_repository(dest: Path) -> Path:
    """A repository of CACHED_MODEL alone whose config adds
    `response_cache { enable: true }`: Triton's own cache, the baseline the
    router's cache is measured against. The committed config is not touched."""
    shutil.copytree(ROOT / "model_repository" / CACHED_MODEL, dest / CACHED_MODEL)
    config = read_config(dest / CACHED_MODEL)
    config.response_cache.enable = True
    (dest / CACHED_MODEL / CONFIG_NAME).write_text(render(config), encoding="utf-8")
    return dest


HEAVY_MODEL = "heavy_mlp"


def heavy_variants(dest: Path, width: int = 2048, depth: int = 4) -> None:
    """`heavy_mlp_batched` / `_unbatched`: bytes -> a wide MLP (about 67 MB of
    FP32 weights), untrained. Each execution reads every weight once, so one
    row at a time is bound by memory bandwidth and a batch shares the reads:
    the case dynamic batching exists for. Built here, never committed."""
    from dataclasses import replace

    import numpy as np
    import torch
    from torch import nn

    from export.config import VersionPolicy, build_config
    from export.onnx_io import to_onnx
    from export.specs import get_spec

    class WideMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Linear(256, width), nn.ReLU()]
            for _ in range(depth - 1):
                layers += [nn.Linear(width, width), nn.ReLU()]
            self.body = nn.Sequential(*layers, nn.Linear(width, 2))

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(text.to(torch.float32) * (1.0 / 255.0)), dim=-1)

    torch.manual_seed(0)
    spec = replace(get_spec(BATCH_MODEL), name=HEAVY_MODEL)
    model_bytes = to_onnx(WideMLP().eval(), spec, np.zeros((2, 256), dtype=np.uint8))
    for suffix, batched in (("batched", True), ("unbatched", False)):
        name = f"{HEAVY_MODEL}_{suffix}"
        config = build_config(replace(spec, name=name), VersionPolicy("all"))
        if not batched:
            config.ClearField("dynamic_batching")
        metadata = {"model": name, "version": 1, "architecture": f"untrained mlp, {depth} x {width}"}
        write_version(dest / name, 1, model_bytes, metadata, config, spec.labels)


class GranianRouter(RouterProcess):
    """The router's app (`app_from_env`, the same settings) served by granian's
    ASGI interface with uvloop, one worker, HTTP/1.1."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(self.port), "--loop", "uvloop", "--workers", "1", "--http", "1", "--no-ws",
                "router.edge.app:app_from_env"]


class BenchStack:
    def __init__(self, workdir: Path, routers: list[str]) -> None:
        self.workdir = workdir
        self.router_names = routers
        self._stack = ExitStack()
        self.triton: TritonServer | None = None
        self.cache_triton: TritonServer | None = None
        self.redis: RedisServer | None = None
        self.routers: dict[str, RouterProcess] = {}

    def __enter__(self) -> "BenchStack":
        try:
            repo = bench_repository(self.workdir / "model_repository")
            heavy_variants(repo)
            self.triton = self._stack.enter_context(TritonServer(
                repo, Ports(free_port(), free_port(), free_port()), log_path=self.workdir / "triton.log"))
            self.cache_triton = self._stack.enter_context(TritonServer(
                cached_repository(self.workdir / "cached_repository"), Ports(free_port(), free_port(), free_port()),
                models=[CACHED_MODEL], log_path=self.workdir / "triton-cache.log",
                response_cache_bytes=TRITON_CACHE_BYTES))
            self.redis = RedisServer(self.workdir / "redis").start()
            self._stack.callback(self.redis.stop)
            # The load generator is one client: without this its own rate limit would be measured.
            common = {"REDIS_URL": self.redis.url, "DEFAULT_MODEL_VERSION": "2", "LOG_LEVEL": "INFO",
                      "RATE_LIMIT": "none"}
            for name in self.router_names:
                env = {k: v for k, v in {**common, **ROUTERS[name]}.items() if v is not None}
                kind = GranianRouter if name in GRANIAN else RouterProcess
                proc = kind(self.workdir / "routers", self.triton, env)
                self.routers[name] = proc.start()
                self._stack.callback(proc.stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
