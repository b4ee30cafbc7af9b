"""What the edge hands the dataplane, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field

Scores = list[tuple[str, float]]  # (label, probability), best first


@dataclass(frozen=True)
class Item:
    """One input: text, or an encoded image (bytes of a PNG, JPEG, ...)."""

    text: str | None = None
    image: bytes | None = None
    # what is worked out from the item alone, once (an item the lane keeps serves many requests)
    derived: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Options:
    model: str
    requested_version: int | None = None
    top_k: int = 1
    routing_key: str = ""  # X-User-ID, else the request id


@dataclass
class Prediction:
    model: str
    model_version: int
    routed_by: str  # pinned | default | canary | fallback
    scores: Scores
    cached: bool
    input: str | None = None
    requested_version: int | None = None
