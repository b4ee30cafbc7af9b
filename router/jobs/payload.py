"""What a job holds: the request, exactly as /predict would run it, stored as
JSON in the job's hash; and its fingerprint, which an Idempotency-Key is bound to."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass

from router.dataplane.types import Item, Options
from router.errors import InvalidInput


@dataclass(frozen=True)
class JobPayload:
    """What a worker needs to run the request exactly as /predict would."""

    items: list[dict]  # {"text": ...} or {"image_b64": ...}
    model: str
    requested_version: int | None
    top_k: int
    routing_key: str
    batch: bool

    @classmethod
    def of(cls, items: list[Item], opts: Options, batch: bool) -> "JobPayload":
        raw = [{"text": i.text} if i.image is None else {"image_b64": base64.b64encode(i.image).decode()}
               for i in items]
        return cls(raw, opts.model, opts.requested_version, opts.top_k, opts.routing_key, batch)

    def to_items(self) -> list[Item]:
        return [Item(text=i["text"]) if "text" in i else Item(image=base64.b64decode(i["image_b64"], validate=True))
                for i in self.items]

    def options(self) -> Options:
        return Options(self.model, self.requested_version, self.top_k, self.routing_key)

    def fingerprint(self) -> str:
        """SHA-256 of the items (images by their bytes' SHA-256), model, requested
        version, top_k and batch flag; not the routing key (by default the request id)."""
        items = [{"text": i["text"]} if "text" in i
                 else {"image_sha256": hashlib.sha256(base64.b64decode(i["image_b64"])).hexdigest()}
                 for i in self.items]
        canonical = {"items": items, "model": self.model, "requested_version": self.requested_version,
                     "top_k": self.top_k, "batch": self.batch}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str | bytes) -> "JobPayload":
        """The stored payload, checked field by field: anything else in its place
        (the job store is not trusted) is an InvalidInput, which fails the job."""
        try:
            data = json.loads(text)
            payload = cls(**data)
            ok = (isinstance(payload.items, list) and payload.items and isinstance(payload.model, str)
                  and isinstance(payload.top_k, int) and isinstance(payload.routing_key, str)
                  and isinstance(payload.batch, bool)
                  and (payload.requested_version is None or isinstance(payload.requested_version, int))
                  and all(isinstance(i, dict) and (isinstance(i.get("text"), str) or isinstance(i.get("image_b64"), str))
                          for i in payload.items))
            if ok:
                payload.to_items()  # the images' base64 decodes
                return payload
        except (ValueError, TypeError, binascii.Error):
            pass
        raise InvalidInput("the job's stored payload cannot be read")
