"""What Triton serves, re-read in the background: never asked once per request.

A snapshot holds every model in Triton's repository index, the state of each
version, and what each model's config says about its input (kind, shape,
labels). Requests read the latest snapshot; a refresh task replaces it every
TRITON_REFRESH_S, and a version that fails with "not ready" is dropped from
the ready set at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from router.aio import cancel
from router.dataplane.gateway import Gateway
from router.errors import RouterError, TritonUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the protocol's names: FP32, INT64, UINT8, BYTES, ...
    dims: tuple[int, ...]  # without the batch axis; -1 where dynamic

    @classmethod
    def from_config(cls, entry: dict) -> "TensorSpec":
        return cls(entry["name"], str(entry.get("data_type", "TYPE_INVALID")).removeprefix("TYPE_").replace(
            "STRING", "BYTES"), tuple(int(d) for d in entry.get("dims", ())))

    def view(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.dims)}


@dataclass(frozen=True)
class ModelInfo:
    """What a model's config says: every input and output, and, for the models
    /predict serves (one UINT8 input), their kind and class labels."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    input_kind: str | None  # text_utf8 | image_gray; None: raw tensors, served over /v2 only
    labels: tuple[str, ...]
    max_batch_size: int

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def dims(self) -> tuple[int, ...]:
        return self.inputs[0].dims

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @classmethod
    def from_config(cls, config: dict) -> "ModelInfo":
        params = {k: (v.get("string_value", "") if isinstance(v, dict) else str(v))
                  for k, v in (config.get("parameters") or {}).items()}
        labels = tuple(x for x in params.get("labels", "").split(",") if x)
        return cls(
            name=config["name"], inputs=tuple(TensorSpec.from_config(i) for i in config["input"]),
            outputs=tuple(TensorSpec.from_config(o) for o in config["output"]),
            input_kind=params.get("input_kind") or None, labels=labels,
            max_batch_size=int(config.get("max_batch_size", 0)),
        )


@dataclass(frozen=True)
class Snapshot:
    triton_ready: bool = False
    states: dict[str, dict[int, str]] = field(default_factory=dict)  # model -> version -> state
    infos: dict[str, ModelInfo] = field(default_factory=dict)
    taken_at: float = 0.0

    _ready: dict[str, frozenset[int]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def ready(self, model: str) -> frozenset[int]:
        """The model's READY versions (worked out once per snapshot: every request asks)."""
        found = self._ready.get(model)
        if found is None:
            found = self._ready[model] = frozenset(v for v, s in self.states.get(model, {}).items() if s == "READY")
        return found

    def knows(self, model: str) -> bool:
        return model in self.states


class Catalog:
    def __init__(self, gateway: Gateway, refresh_s: float, load_all: bool, on_refresh=None,
                 ready_timeout_s: float = 1.0) -> None:
        self.gateway = gateway
        self.refresh_s = refresh_s
        self.ready_timeout_s = ready_timeout_s
        self.load_all = load_all
        self.snapshot = Snapshot()
        self._on_refresh = on_refresh or (lambda snap: None)
        self._loading: dict[str, asyncio.Task] = {}
        self._task: asyncio.Task | None = None

    async def refresh(self) -> Snapshot:
        try:
            if not await self.gateway.server_ready(self.ready_timeout_s):
                raise TritonUnavailable(f"Triton did not report ready within {self.ready_timeout_s} s")
            entries = await self.gateway.index()
        except RouterError as exc:
            # Not ready now: say so at once (/ready turns 503), but keep what was known, so
            # that requests still try Triton and get its own answer (503, or 504 if it hangs).
            if self.snapshot.triton_ready:
                log.warning("Triton is unreachable: %s", exc.message)
            self.snapshot = replace(self.snapshot, triton_ready=False, taken_at=time.monotonic())
            self._on_refresh(self.snapshot)
            return self.snapshot
        states: dict[str, dict[int, str]] = {}
        for e in entries:
            states.setdefault(e.name, {})
            if e.version is not None:
                states[e.name][e.version] = e.state
        infos = dict(self.snapshot.infos)
        for name, versions in states.items():
            if name not in infos and "READY" in versions.values():
                try:
                    infos[name] = ModelInfo.from_config(await self.gateway.config(name))
                except (RouterError, KeyError, IndexError, ValueError) as exc:
                    log.warning("cannot read the config of %s: %s", name, exc)
        if not self.snapshot.triton_ready:
            log.info("Triton is reachable: %s", ", ".join(f"{m} {sorted(v)}" for m, v in states.items()))
        self.snapshot = Snapshot(True, states, infos, time.monotonic())
        self._on_refresh(self.snapshot)
        return self.snapshot

    def mark_unready(self, model: str, version: int) -> None:
        versions = dict(self.snapshot.states.get(model, {}))
        if versions.get(version) == "READY":
            versions[version] = "UNAVAILABLE"
            self.snapshot = replace(self.snapshot, states={**self.snapshot.states, model: versions})
            log.warning("%s v%d is not ready; routing around it", model, version)

    async def ensure_loaded(self, model: str) -> None:
        """Lazy loading: ask Triton to load `model` (its versions per the
        config's version policy) once, however many requests wait on it."""
        task = self._loading.get(model)
        if task is None:
            task = asyncio.ensure_future(self._load(model))
            self._loading[model] = task
            task.add_done_callback(lambda t: self._loading.pop(model, None))
        await asyncio.shield(task)

    async def _load(self, model: str) -> None:
        log.info("loading %s in Triton", model)
        await self.gateway.load(model)
        await self.refresh()

    async def load_all_models(self) -> None:
        for model in list(self.snapshot.states):
            if not self.snapshot.ready(model):
                try:
                    await self.ensure_loaded(model)
                except RouterError as exc:
                    log.error("could not load %s: %s", model, exc.message)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # the loop must outlive any one bad refresh
                log.exception("model catalog refresh failed")

    async def start(self) -> None:
        await self.refresh()
        if self.load_all and self.snapshot.triton_ready:
            await self.load_all_models()
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        await cancel(self._task)
