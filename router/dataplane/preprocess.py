"""A user's text or image -> the exact tensor the model's config declares."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from router.dataplane.catalog import ModelInfo
from router.errors import InvalidInput, PayloadTooLarge


def text_tensor(text: object, info: ModelInfo, max_chars: int) -> np.ndarray:
    if info.input_kind != "text_utf8":
        raise InvalidInput(f"model {info.name!r} takes an image (file upload or image_b64), not text")
    if not isinstance(text, str):
        raise InvalidInput("text must be a string")
    if not text.strip():
        raise InvalidInput("text must not be empty")
    if len(text) > max_chars:
        raise InvalidInput(f"text is longer than {max_chars} characters")
    length = info.dims[0]
    raw = text.encode("utf-8")[:length]
    out = np.zeros((1, length), dtype=np.uint8)
    out[0, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def decode_b64(data: object) -> bytes:
    if not isinstance(data, str) or not data:
        raise InvalidInput("image_b64 must be a non-empty base64 string")
    if data.startswith("data:"):  # a data URL from a browser
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_b64 is not valid base64") from None


def image_tensor(raw: bytes, info: ModelInfo, max_pixels: int) -> np.ndarray:
    """Decode, grayscale, make the ink bright on a dark background (as the
    model was trained), crop to the ink, pad to a square, resize."""
    from PIL import Image, UnidentifiedImageError

    if info.input_kind != "image_gray":
        raise InvalidInput(f"model {info.name!r} takes text, not an image")
    if not raw:
        raise InvalidInput("the image is empty")
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(f"image is {width}x{height}; at most {max_pixels} pixels are accepted")
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidInput("the file is not an image that can be decoded") from None
    if gray.mean() > 127:  # dark ink on light paper -> bright ink on dark
        gray = 255.0 - gray
    ink = gray > gray.max() * 0.25 if gray.max() > 0 else np.zeros_like(gray, dtype=bool)
    if ink.any():
        rows, cols = np.where(ink.any(axis=1))[0], np.where(ink.any(axis=0))[0]
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(gray.shape)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    height_out, width_out = info.dims[-2], info.dims[-1]
    small = np.asarray(Image.fromarray(square).resize((width_out, height_out), Image.Resampling.BOX),
                       dtype=np.float32)
    peak = small.max()
    if peak > 0:
        small = small * (255.0 / peak)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8).reshape((1, *info.dims))
