"""Image preprocessing: the tensor a normal digit image gives, the limits
checked from the header, bounded work for large or extreme images, and one
422 for every malformed file. The malformed files are made here with Pillow
and byte edits."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from router.dataplane import preprocess
from router.dataplane.catalog import ModelInfo
from tests.router.fakes import triton_config
from router.errors import InvalidInput, PayloadTooLarge

DIGITS = ModelInfo.from_config(triton_config("digits"))
SENTIMENT = ModelInfo.from_config(triton_config("sentiment"))
MAX_PIXELS = 4096 * 4096
UNDECODABLE = "the file is not an image that can be decoded"


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def digit(index: int, scale: int = 8, invert: bool = True) -> Image.Image:
    """A scikit-learn digit scaled up with np.kron, as the integration test does."""
    big = np.kron(_digits().images[index] * (255 / 16), np.ones((scale, scale)))
    return Image.fromarray((255 - big if invert else big).astype(np.uint8))


_DIGITS_CACHE: list = []


def _digits():
    if not _DIGITS_CACHE:
        from sklearn.datasets import load_digits

        _DIGITS_CACHE.append(load_digits())
    return _DIGITS_CACHE[0]


def reference(raw: bytes, dims=(8, 8)) -> np.ndarray:
    """The preprocessing as specified, step by step, with no bound on the
    work: grayscale, ink bright on dark, crop to the ink, centre in a
    square, BOX resize, stretch to 0-255."""
    gray = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float32)
    if gray.mean() > 127:
        gray = 255.0 - gray
    ink = gray > gray.max() * 0.25 if gray.max() > 0 else np.zeros_like(gray, dtype=bool)
    if ink.any():
        rows, cols = np.where(ink.any(axis=1))[0], np.where(ink.any(axis=0))[0]
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(gray.shape)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    small = np.asarray(Image.fromarray(square).resize((dims[1], dims[0]), Image.Resampling.BOX), dtype=np.float32)
    if small.max() > 0:
        small = small * (255.0 / small.max())
    return np.clip(np.rint(small), 0, 255).astype(np.uint8).reshape((1, *dims))


def tensor(raw: bytes, max_pixels: int = MAX_PIXELS, max_aspect: float = 64.0) -> np.ndarray:
    return preprocess.image_tensor(raw, DIGITS, max_pixels, max_aspect)


def numpy_peak(fn) -> int:
    """Peak bytes numpy (and Python) allocated while fn ran."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- malformed and unusual files, made here -------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def png(width: int, height: int, depth: int = 8, colour: int = 0, idat: bytes | None = None,
        crc: int | None = None) -> bytes:
    """A PNG written chunk by chunk, so that any field can be wrong."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + b"\x80" * max(1, width) for _ in range(min(height, 64))))
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr, crc) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_broken_second_chunk() -> bytes:
    """Image data split over two chunks, the second with a garbage type:
    Pillow raises SyntaxError while decoding."""
    data = zlib.compress(b"".join(b"\x00" + b"\x80" * 16 for _ in range(16)))
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data[:10])
            + png_chunk(b"\x00\x01\x02\x03", data[10:]) + png_chunk(b"IEND", b""))


def dds_unknown_pixel_format() -> bytes:
    """A DirectDraw Surface header Pillow raises NotImplementedError on."""
    header = struct.pack("<6I", 0x1007, 8, 8, 0, 0, 0) + b"\0" * 44 + struct.pack("<4I", 32, 0, 0, 0)
    return b"DDS " + struct.pack("<I", 124) + header.ljust(120, b"\0")


def tiff_entry(raw: bytes, tag: int, value: int | None = None, kind: int | None = None,
               count: int | None = None) -> bytes:
    """A little-endian TIFF with one entry of its first directory rewritten."""
    out = bytearray(raw)
    ifd = struct.unpack_from("<I", out, 4)[0]
    for i in range(struct.unpack_from("<H", out, ifd)[0]):
        at = ifd + 2 + 12 * i
        t, ty, n, v = struct.unpack_from("<HHII", out, at)
        if t == tag:
            struct.pack_into("<HHII", out, at, t, ty if kind is None else kind, n if count is None else count,
                             v if value is None else value)
            return bytes(out)
    raise KeyError(tag)


def jpeg_declaring(raw: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header declares another size."""
    out, i = bytearray(raw), 2
    while i < len(out):
        marker, length = out[i + 1], struct.unpack_from(">H", out, i + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", out, i + 5, height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no frame header")


def noise(size=(64, 64), mode: str = "L") -> Image.Image:
    rng = np.random.default_rng(1)
    bands = len(mode) if mode not in ("L", "P") else 1
    arr = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr)


def malformed() -> dict[str, bytes]:
    """Files no decoder should turn into a tensor; each is a 422."""
    png_ok, tiff_ok = encode(noise()), encode(noise(), "TIFF")
    jpeg_ok, bmp_ok, gif_ok = encode(noise(mode="RGB"), "JPEG"), encode(noise(), "BMP"), encode(noise(), "GIF")
    return {
        "not an image": b"hello, this is not an image",
        "png truncated": png_ok[: len(png_ok) // 2],
        "png cut after its header": png_ok[:33],
        "png IHDR with a bad checksum": png(64, 64, crc=0),
        "png IHDR bit depth 3": png(64, 64, depth=3),
        "png IHDR colour type 9": png(64, 64, colour=9),
        "png IHDR zero width": png(0, 64),
        "png garbage image data": png(64, 64, idat=b"\x78\x9c" + b"\xff" * 200),
        "png too little image data": png(64, 64, idat=zlib.compress(b"\x00\x80")),
        "png broken second chunk (SyntaxError)": png_broken_second_chunk(),
        "tiff 99 bits per sample": tiff_entry(tiff_ok, 258, value=99),
        "tiff strip offset past the end": tiff_entry(tiff_ok, 273, value=10**9),
        "tiff unknown compression": tiff_entry(tiff_ok, 259, value=12345),
        "tiff unknown photometric": tiff_entry(tiff_ok, 262, value=77),
        "tiff zero rows per strip": tiff_entry(tiff_ok, 278, value=0),
        "tiff width of type 99": tiff_entry(tiff_ok, 256, kind=99),
        "tiff huge strip count": tiff_entry(tiff_ok, 273, count=2**30),
        "tiff truncated": tiff_ok[:40],
        "gif header then garbage": b"GIF89a" + bytes(range(256)) * 4,
        "gif truncated": gif_ok[:30],
        "bmp header then garbage": b"BM" + bytes(reversed(range(256))) * 4,
        "bmp zero bits per pixel": bmp_ok[:28] + b"\x00\x00" + bmp_ok[30:],
        "bmp truncated": bmp_ok[:60],
        "jpeg truncated": jpeg_ok[: len(jpeg_ok) // 3],
        "jpeg header only": jpeg_ok[:20],
        "webp header then zeros": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 40,
        "ppm zero maxval": b"P5\n3 4\n0\n" + b"\x00" * 12,
        "dds unknown pixel format (NotImplementedError)": dds_unknown_pixel_format(),
        "eps (not an accepted format)": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    }


def unusual() -> dict[str, bytes]:
    """Valid files in less common modes; each decodes exactly as the
    reference does."""
    three = digit(3)
    frames = [three, digit(5)]
    cmyk = three.convert("CMYK")
    palette = three.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgba = three.convert("RGBA")
    return {
        "animated gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
        "animated png": encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "rgba png": encode(rgba),
        "la png": encode(three.convert("LA")),
        "palette png": encode(palette),
        "palette png with transparency": encode(palette, transparency=0),
        "bilevel png": encode(three.convert("1")),
        "cmyk jpeg": encode(cmyk, "JPEG", quality=95),
        "cmyk tiff": encode(cmyk, "TIFF"),
        "lzw tiff": encode(three, "TIFF", compression="tiff_lzw"),
        "webp": encode(three.convert("RGB"), "WEBP", lossless=True),
        "bmp": encode(three, "BMP"),
        "pgm": encode(three, "PPM"),
    }


# --- normal images: the same tensors as before ------------------------------------

@pytest.mark.parametrize("fmt,mode,scale", [("PNG", "L", 8), ("PNG", "RGB", 8), ("JPEG", "L", 8), ("JPEG", "RGB", 8),
                                            ("PNG", "L", 1), ("BMP", "L", 3), ("PNG", "L", 128)])
def test_digit_images_give_exactly_the_reference_tensor(fmt, mode, scale):
    for index in range(0, 1797, 9 if scale < 100 else 90):
        for invert in (True, False):
            raw = encode(digit(index, scale, invert).convert(mode), fmt)
            assert np.array_equal(tensor(raw), reference(raw)), (index, invert)


@pytest.mark.parametrize("name", list(unusual()))
def test_unusual_but_valid_images_give_the_reference_tensor(name):
    raw = unusual()[name]
    out = tensor(raw)
    assert out.shape == (1, 8, 8) and out.dtype == np.uint8 and out.max() == 255
    assert np.array_equal(out, reference(raw))


def test_a_16_bit_png_reads_as_its_8_bit_twin():
    """convert("L") clips 16-bit values at 255: the scale is used instead."""
    eight = np.asarray(digit(3), dtype=np.uint16)
    sixteen = encode(Image.fromarray(eight * 257))
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    assert np.array_equal(tensor(sixteen), reference(encode(Image.fromarray(eight.astype(np.uint8)))))


def test_a_large_digit_is_shrunk_first_and_still_reads_the_same():
    """3000x2000, not aligned to any grid: a few levels off at most, and the
    float work is bounded by WORK_SIDE, not by the image."""
    small = Image.fromarray((255 - _digits().images[3] * (255 / 16)).astype(np.uint8))
    canvas = Image.new("L", (3000, 2000), 255)
    canvas.paste(small.resize((1300, 1100), Image.Resampling.BILINEAR), (977, 411))
    raw = encode(canvas)
    out, expected = tensor(raw), reference(raw)
    assert np.abs(out.astype(int) - expected).max() <= 12
    side = preprocess.WORK_SIDE
    assert numpy_peak(lambda: tensor(raw)) < 3 * side * side * 4  # the reference: ~100 MiB


# --- limits, from the header -----------------------------------------------------------

@pytest.mark.parametrize("size", [(16384, 1), (1, 16384), (16777216, 1), (6500, 100)])
def test_an_extreme_aspect_is_refused_before_anything_is_allocated(size):
    raw = encode(Image.new("L", size, 255))
    width, height = size
    with pytest.raises(InvalidInput) as err:
        assert numpy_peak(lambda: tensor(raw)) < 1 << 20
    assert err.value.message == f"image is {width}x{height}; its longer side may be at most 64 times its shorter side"


def test_a_wide_image_within_the_aspect_limit_is_padded_on_a_bounded_canvas():
    """16384x1 once made a 16384x16384 float square (1 GiB); with the
    aspect check off it is shrunk first and stays small."""
    raw = encode(Image.new("L", (16384, 1), 0))
    assert numpy_peak(lambda: tensor(raw, max_aspect=1e9)) < 16 << 20
    wide = encode(Image.new("L", (8192, 256), 0))  # aspect 32: a 256 MiB square before
    assert numpy_peak(lambda: tensor(wide)) < 16 << 20


def test_too_many_pixels_is_413_with_the_size():
    raw = encode(Image.new("L", (5000, 4000), 255))
    with pytest.raises(PayloadTooLarge) as err:
        tensor(raw)
    assert err.value.message == "image is 5000x4000; at most 16777216 pixels are accepted"
    with pytest.raises(PayloadTooLarge):
        preprocess.check_image(raw, DIGITS, MAX_PIXELS, 64)


def test_a_jpeg_declaring_a_huge_size_is_413_from_its_header():
    """65000x65000 declared in a 1 KB file: Pillow's own guard, a 413."""
    raw = jpeg_declaring(encode(noise(mode="RGB"), "JPEG"), 65000, 65000)
    with pytest.raises(PayloadTooLarge) as err:
        tensor(raw)
    limit = 2 * Image.MAX_IMAGE_PIXELS
    assert err.value.message == f"image is over {limit} pixels; at most 16777216 pixels are accepted"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about the bogus tags
@pytest.mark.parametrize("name", list(malformed()))
def test_every_malformed_file_is_the_same_422(name):
    with pytest.raises(InvalidInput) as err:
        tensor(malformed()[name])
    assert err.value.message == UNDECODABLE


def test_an_image_for_a_text_model_and_an_empty_one_are_refused():
    with pytest.raises(InvalidInput, match="model 'sentiment' takes text, not an image"):
        preprocess.check_image(encode(digit(3)), SENTIMENT, MAX_PIXELS, 64)
    with pytest.raises(InvalidInput, match="the image is empty"):
        preprocess.check_image(b"", DIGITS, MAX_PIXELS, 64)


def test_check_image_reads_the_header_only(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert preprocess.check_image(encode(Image.new("L", (4096, 4096), 255)), DIGITS, MAX_PIXELS, 64) == (4096, 4096)
    monkeypatch.undo()
    truncated = malformed()["png truncated"]
    assert preprocess.check_image(truncated, DIGITS, MAX_PIXELS, 64) == (64, 64)  # a header-only check passes it
    with pytest.raises(InvalidInput, match=UNDECODABLE):
        tensor(truncated)
