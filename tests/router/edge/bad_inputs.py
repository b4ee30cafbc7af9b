"""Bad requests and the exact status, code and message each gets: asserted
against the app over a FakeTriton and against the real router process."""

from __future__ import annotations

import io

import numpy as np


def digit_png(index: int = 3, invert: bool = True) -> tuple[bytes, int]:
    """A scikit-learn digit scaled up to 64x64, dark ink on white paper."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = np.kron(digits.images[index] * (255 / 16), np.ones((8, 8)))
    img = (255 - big if invert else big).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue(), int(digits.target[index])


BIG = "x" * (1 << 20)
UNKNOWN_MODEL = "unknown model 'nope'; available: {models}"  # the server's models, filled in by each test


def expected(message: str, models: list[str]) -> str:
    return message.format(models=", ".join(sorted(models))) if message is UNKNOWN_MODEL else message


BAD_INPUTS = [
    (lambda c: c.post("/predict", content=b'{"text": ', headers={"content-type": "application/json"}),
     400, "bad_request", "the request body is not valid JSON"),
    (lambda c: c.post("/predict", json={"text": 5}), 422, "invalid_input", "text: Input should be a valid string"),
    (lambda c: c.post("/predict", json={"text": "   "}), 422, "invalid_input", "text must not be empty"),
    (lambda c: c.post("/predict", json={}), 422, "invalid_input", "model 'sentiment' needs text (or input)"),
    (lambda c: c.post("/predict", json=["text"]), 422, "invalid_input", "the JSON body must be an object"),
    (lambda c: c.post("/predict", json={"text": "y" * 5001}), 422, "invalid_input",
     "text is longer than 5000 characters"),
    (lambda c: c.post("/predict", json={"text": BIG}), 413, "payload_too_large",
     "request body is larger than 1048576 bytes"),
    (lambda c: c.post("/predict", json={"text": "x", "model": "nope"}), 404, "not_found", UNKNOWN_MODEL),
    (lambda c: c.post("/models/nope/predict", json={"text": "x"}), 404, "not_found", UNKNOWN_MODEL),
    (lambda c: c.post("/predict", json={"text": "x", "model_version": "latest"}), 422, "invalid_input",
     "model version must look like 2 or v2, got 'latest'"),
    (lambda c: c.post("/predict", json={"text": "x", "top_k": 0}), 422, "invalid_input",
     "top_k: Input should be greater than or equal to 1"),
    (lambda c: c.post("/predict", json={"text": "x", "top_k": 11}), 422, "invalid_input",
     "top_k must be between 1 and 10"),
    (lambda c: c.post("/predict", content=b"hi", headers={"content-type": "text/plain"}), 415,
     "unsupported_media_type", "unsupported content type 'text/plain'; send application/json or multipart/form-data"),
    (lambda c: c.post("/predict", json={"model": "digits", "image_b64": "%%%"}), 422, "invalid_input",
     "image_b64 is not valid base64"),
    (lambda c: c.post("/models/digits/predict", files={"file": ("a.png", b"not an image")}), 422, "invalid_input",
     "the file is not an image that can be decoded"),
    (lambda c: c.post("/models/digits/predict", json={"text": "hello"}), 422, "invalid_input",
     "model 'digits' takes an image (file upload or image_b64), not text"),
    (lambda c: c.post("/predict", files={"file": ("three.png", digit_png()[0])}), 422, "invalid_input",
     "model 'sentiment' takes text, not an image"),
    (lambda c: c.post("/predict/batch", json={"inputs": ["a"] * 65}), 422, "invalid_input",
     "inputs holds 65 items; at most 64 are accepted"),
    (lambda c: c.post("/predict/batch", json={"inputs": []}), 422, "invalid_input",
     "inputs must hold at least one item"),
    (lambda c: c.post("/predict/batch", json={"inputs": "text"}), 422, "invalid_input",
     "inputs: Input should be a valid list"),
    (lambda c: c.get("/predict"), 422, "invalid_input", "text: Field required"),
    (lambda c: c.get("/no/such/route"), 404, "not_found", "Not Found"),
]
