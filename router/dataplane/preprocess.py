"""A user's text or image -> the exact tensor the model's config declares.

Images are refused by their header before any pixel is decoded: the format
must be a common raster one, the size at most MAX_IMAGE_PIXELS, the sides'
ratio at most MAX_IMAGE_ASPECT. Only then are the pixels decoded, and a large
image is shrunk to at most WORK_SIDE pixels a side (JPEG's decoder scales
down while decoding; other formats are box-reduced right after) before any
floating-point copy is made. An image whose sides are all within WORK_SIDE
is processed exactly as it always was.

Pillow's decoders raise many kinds of exception on a malformed file (OSError,
SyntaxError, ValueError, TypeError, struct.error, EOFError, ...): every one
of them is the same 422 to the client.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math

import numpy as np

from router.dataplane.catalog import ModelInfo
from router.errors import InvalidInput, PayloadTooLarge

log = logging.getLogger(__name__)

UNDECODABLE = "the file is not an image that can be decoded"
# Raster formats a client sends; anything else (EPS, which runs Ghostscript,
# PSD, FITS, ...) is refused as undecodable without being parsed further.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# The longest side a decoded image is brought down to before the float work;
# never less than 4x the model's own side.
WORK_SIDE = 1024
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


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
    raw = text.encode("utf-8")[:length].ljust(length, b"\0")
    return np.frombuffer(raw, dtype=np.uint8).reshape(1, length)


def decode_b64(data: object) -> bytes:
    if not isinstance(data, str) or not data:
        raise InvalidInput("image_b64 must be a non-empty base64 string")
    if data.startswith("data:"):  # a data URL from a browser
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_b64 is not valid base64") from None


def check_image(raw: bytes, info: ModelInfo, max_pixels: int, max_aspect: float) -> tuple[int, int]:
    """Everything that can be refused from the header alone (the model's
    input kind, the format, the size, the aspect), without decoding a
    pixel. Returns the image's (width, height)."""
    with _open(raw, info, max_pixels, max_aspect) as image:
        return image.size


def image_tensor(raw: bytes, info: ModelInfo, max_pixels: int, max_aspect: float) -> np.ndarray:
    """Decode, grayscale, make the ink bright on a dark background (as the
    model was trained), crop to the ink, pad to a square, resize."""
    from PIL import Image

    image = _open(raw, info, max_pixels, max_aspect)
    height_out, width_out = info.dims[-2], info.dims[-1]
    bound = max(WORK_SIDE, 4 * max(height_out, width_out))
    try:
        with image:
            gray = np.asarray(_small_gray(image, bound), dtype=np.float32)
    except Image.DecompressionBombError:
        raise _bomb(max_pixels) from None
    except Exception as exc:  # see the module's docstring
        log.debug("undecodable image: %s: %s", type(exc).__name__, exc)
        raise InvalidInput(UNDECODABLE) from None
    if gray.mean() > 127:  # dark ink on light paper -> bright ink on dark
        gray = 255.0 - gray
    ink = gray > gray.max() * 0.25 if gray.max() > 0 else np.zeros_like(gray, dtype=bool)
    if ink.any():
        rows, cols = np.where(ink.any(axis=1))[0], np.where(ink.any(axis=0))[0]
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(gray.shape)  # at most `bound`: the square is at most bound x bound floats
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    small = np.asarray(Image.fromarray(square).resize((width_out, height_out), Image.Resampling.BOX),
                       dtype=np.float32)
    peak = small.max()
    if peak > 0:
        small = small * (255.0 / peak)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8).reshape((1, *info.dims))


def _open(raw: bytes, info: ModelInfo, max_pixels: int, max_aspect: float):
    """The image, opened lazily (header read, no pixels), after every
    header-level check."""
    from PIL import Image

    if info.input_kind != "image_gray":
        raise InvalidInput(f"model {info.name!r} takes text, not an image")
    if not raw:
        raise InvalidInput("the image is empty")
    try:
        image = Image.open(io.BytesIO(raw), formats=FORMATS)
        width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own guard, past twice Image.MAX_IMAGE_PIXELS
        raise _bomb(max_pixels) from None
    except Exception as exc:  # see the module's docstring
        log.debug("undecodable image: %s: %s", type(exc).__name__, exc)
        raise InvalidInput(UNDECODABLE) from None
    if width < 1 or height < 1:
        image.close()
        raise InvalidInput(UNDECODABLE)
    if width * height > max_pixels:
        image.close()
        raise PayloadTooLarge(f"image is {width}x{height}; at most {max_pixels} pixels are accepted")
    if max(width, height) > max_aspect * min(width, height):
        image.close()
        raise InvalidInput(f"image is {width}x{height}; its longer side may be at most "
                           f"{max_aspect:g} times its shorter side")
    return image


def _small_gray(image, bound: int):
    """The first frame as an 8-bit grayscale image whose longest side is at
    most `bound`; images already within it are converted exactly as
    `convert("L")` does."""
    from PIL import Image

    width, height = image.size
    factor = math.ceil(max(width, height) / bound)
    if factor > 1:  # JPEG: decode at 1/2, 1/4 or 1/8 scale; a no-op for other formats
        image.draft("L", (math.ceil(width / factor), math.ceil(height / factor)))
    if image.mode in _SIXTEEN_BIT:  # convert("L") would clip everything above 255
        gray = Image.fromarray((np.asarray(image) // 257).astype(np.uint8))
    else:
        gray = image.convert("L")
    factor = math.ceil(max(gray.size) / bound)
    return gray.reduce(factor) if factor > 1 else gray


def _bomb(max_pixels: int) -> PayloadTooLarge:
    from PIL import Image

    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else max_pixels
    return PayloadTooLarge(f"image is over {limit} pixels; at most {max_pixels} pixels are accepted")
