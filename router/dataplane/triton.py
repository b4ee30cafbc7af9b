"""The Triton gateway of a router process: gRPC (default) or HTTP asyncio
clients from tritonclient, with timeouts and errors mapped to domain errors."""

from __future__ import annotations

import asyncio

import numpy as np
from tritonclient.utils import InferenceServerException

from router.dataplane.gateway import IndexEntry
from router.dataplane.types import Scores
from router.errors import BadRequest, RouterError, TritonFailed, TritonTimeout, TritonUnavailable, VersionUnavailable

_VERSION_GONE = ("unknown model", "not at ready state", "is not found", "unavailable model", "not ready")


def classify(exc: BaseException) -> RouterError:
    """A tritonclient / transport exception as the error a client should see."""
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TritonTimeout("Triton did not answer in time")
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = str(exc.message() or exc)
        lowered = message.lower()
        if any(s in lowered for s in _VERSION_GONE):
            return VersionUnavailable(message)
        if "DEADLINE_EXCEEDED" in status or "timeout" in lowered or "timed out" in lowered:
            return TritonTimeout("Triton did not answer in time")
        # The backend's own refusal of the input (e.g. ONNX Runtime's INVALID_ARGUMENT on a
        # bad shape or an index out of range) reaches gRPC as INTERNAL: still the input's fault.
        if "INVALID_ARGUMENT" in status or status == "400" or "INVALID_ARGUMENT" in message:
            return BadRequest(f"Triton rejected the input: {message}")
        if "UNAVAILABLE" in status or "connect" in lowered or status in ("502", "503"):
            return TritonUnavailable("Triton is unreachable")
        return TritonFailed("Triton could not run the request")
    if isinstance(exc, OSError) or exc.__class__.__module__.startswith(("aiohttp", "grpc")):
        return TritonUnavailable("Triton is unreachable")
    return TritonFailed("Triton could not run the request")


def parse_classes(raw: np.ndarray) -> list[Scores]:
    """Rows of b"score:index:label" (the classification extension) -> scores."""
    rows = []
    for row in raw.reshape(raw.shape[0], -1):
        scores = []
        for item in row:
            text = item.decode() if isinstance(item, bytes) else str(item)
            score, _, rest = text.partition(":")
            _, _, label = rest.partition(":")
            scores.append((label, float(score)))
        rows.append(scores)
    return rows


def _ints64(descriptor, value: dict) -> dict:
    """64-bit integers as numbers, as Triton's HTTP API writes them (protobuf's JSON writes strings)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    wide = (F.CPPTYPE_INT64, F.CPPTYPE_UINT64)
    for name, item in value.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            inner = message.fields_by_name["value"]
            if inner.message_type is not None:
                for entry in item.values():
                    _ints64(inner.message_type, entry)
            elif inner.cpp_type in wide:
                value[name] = {k: int(v) for k, v in item.items()}
        elif message is not None:
            for entry in item if isinstance(item, list) else [item]:
                _ints64(message, entry)
        elif field.cpp_type in wide:
            value[name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value


def http_json(message) -> dict:
    """A gRPC response message as Triton's HTTP API gives the same thing: every field, numbers as numbers."""
    from google.protobuf import json_format

    return _ints64(message.DESCRIPTOR, json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True))


class TritonGateway:
    def __init__(self, protocol: str, url: str, timeout: float, admin_headers: dict[str, str] | None = None) -> None:
        """`admin_headers` go with the repository-API calls (index, load) that a Triton
        started with --http-restricted-api / --grpc-restricted-protocol demands."""
        self.protocol = protocol
        # Triton expects a restricted gRPC protocol's header under this prefix.
        prefix = "triton-grpc-protocol-" if protocol == "grpc" else ""
        self.admin_headers = {prefix + k: v for k, v in admin_headers.items()} if admin_headers else None
        self.url = url
        self.timeout = timeout
        if protocol == "grpc":
            import tritonclient.grpc.aio as module
            from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

            keepalive = KeepAliveOptions()
            self._client = module.InferenceServerClient(url, channel_args=[
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
                ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
                ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
                ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
                # A restarted Triton is found again within a second, not after gRPC's
                # default reconnect back-off (up to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ])
        else:
            import tritonclient.http.aio as module
            self._client = module.InferenceServerClient(url, conn_timeout=timeout, conn_limit=256)
        self._module = module

    async def _call(self, coro, timeout: float | None = None, deadline_set: bool = False):
        """Await a client call, bounded in time, with its errors classified.
        gRPC calls that carry their own deadline need no other."""
        try:
            if deadline_set:
                return await coro
            async with asyncio.timeout(timeout or self.timeout):
                return await coro
        except Exception as exc:
            raise classify(exc) from exc

    async def infer(self, model: str, version: int, input_name: str, output_name: str,
                    tensor: np.ndarray, top_k: int, request_id: str | None) -> list[Scores]:
        mod = self._module
        inp = mod.InferInput(input_name, list(tensor.shape), "UINT8")
        inp.set_data_from_numpy(tensor)
        out = mod.InferRequestedOutput(output_name, class_count=top_k)
        grpc = self.protocol == "grpc"
        kwargs = {"client_timeout": self.timeout} if grpc else {}
        result = await self._call(self._client.infer(
            model, [inp], model_version=str(version), outputs=[out], request_id=request_id or "", **kwargs),
            deadline_set=grpc)
        return parse_classes(result.as_numpy(output_name))

    async def infer_tensors(self, model: str, version: int, inputs: list[tuple[str, str, np.ndarray]],
                            outputs: list[tuple[str, int]], request_id: str | None) -> dict[str, np.ndarray]:
        mod = self._module
        grpc = self.protocol == "grpc"
        tensors = []
        for name, datatype, array in inputs:
            tensor = mod.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [mod.InferRequestedOutput(name, class_count=count) for name, count in outputs] or None
        kwargs = {"client_timeout": self.timeout} if grpc else {}
        result = await self._call(self._client.infer(
            model, tensors, model_version=str(version), outputs=wanted, request_id=request_id or "", **kwargs),
            deadline_set=grpc)
        response = result.get_response()
        names = [o.name for o in response.outputs] if grpc else [o["name"] for o in response.get("outputs", [])]
        return {name: result.as_numpy(name) for name in names}

    async def model_metadata(self, model: str, version: int | None) -> dict:
        if self.protocol == "grpc":
            return http_json(await self._call(self._client.get_model_metadata(model, str(version or ""))))
        return await self._call(self._client.get_model_metadata(model, str(version or "")))

    async def model_config(self, model: str, version: int | None) -> dict:
        if self.protocol == "grpc":
            return http_json((await self._call(self._client.get_model_config(model, str(version or "")))).config)
        return await self._call(self._client.get_model_config(model, str(version or "")))

    async def model_ready(self, model: str, version: int | None) -> bool:
        return bool(await self._call(self._client.is_model_ready(model, str(version or ""))))

    async def server_ready(self, timeout: float) -> bool:
        try:
            return bool(await self._call(self._client.is_server_ready(), timeout=timeout))
        except RouterError:
            return False

    async def index(self) -> list[IndexEntry]:
        if self.protocol == "grpc":
            raw = await self._call(self._client.get_model_repository_index(headers=self.admin_headers, as_json=True))
            models = raw.get("models", [])
        else:
            models = await self._call(self._client.get_model_repository_index(headers=self.admin_headers))
        out = []
        for m in models:
            version = m.get("version")
            out.append(IndexEntry(m["name"], int(version) if version and str(version).isdigit() else None,
                                  m.get("state", "")))
        return out

    async def config(self, model: str) -> dict:
        if self.protocol == "grpc":
            raw = await self._call(self._client.get_model_config(model, as_json=True))
            return raw.get("config", raw)
        return await self._call(self._client.get_model_config(model))

    async def load(self, model: str) -> None:
        """Triton's repository API: load the model's versions as its version policy names."""
        await self._call(self._client.load_model(model, headers=self.admin_headers), timeout=max(60.0, self.timeout))

    async def close(self) -> None:
        await self._client.close()
