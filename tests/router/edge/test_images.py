"""Images through the whole app over a FakeTriton: the status and body each
malformed or oversized file gets, decoding off the event loop in a bounded
pool, and submit-time checks that decode nothing."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import httpx
import pytest
from PIL import Image

from router.dataplane.types import Item, Options
from router.errors import InvalidInput
from tests.router.dataplane.test_preprocess import digit, encode, jpeg_declaring, malformed, noise, unusual

UNDECODABLE = "the file is not an image that can be decoded"
MALFORMED = malformed()
UNUSUAL = unusual()


def assert_error(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": message,
                                         "request_id": response.headers["x-request-id"]}}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about the bogus tags
@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_upload_is_422(client, name):
    resp = client.post("/models/digits/predict", files={"file": ("x.img", MALFORMED[name])})
    assert_error(resp, 422, "invalid_input", UNDECODABLE)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_malformed_image_anywhere_in_a_batch_is_422(client):
    good = b64(encode(digit(3)))
    for name, raw in MALFORMED.items():
        resp = client.post("/predict/batch", json={"model": "digits", "inputs": [{"image_b64": good},
                                                                                {"image_b64": b64(raw)}]})
        assert_error(resp, 422, "invalid_input", UNDECODABLE)


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_but_valid_images_are_predicted(client, name):
    resp = client.post("/models/digits/predict", files={"file": ("x.img", UNUSUAL[name])})
    assert resp.status_code == 200, resp.text


def test_size_and_aspect_limits(app_client):
    with app_client() as client:
        big = client.post("/models/digits/predict", files={"file": ("big.png", encode(Image.new("L", (5000, 4000))))})
        assert_error(big, 413, "payload_too_large", "image is 5000x4000; at most 16777216 pixels are accepted")
        for size in ((16384, 1), (16777216, 1)):
            wide = client.post("/models/digits/predict", files={"file": ("w.png", encode(Image.new("L", size)))})
            assert_error(wide, 422, "invalid_input",
                         f"image is {size[0]}x{size[1]}; its longer side may be at most 64 times its shorter side")
        bomb = jpeg_declaring(encode(noise(mode="RGB"), "JPEG"), 65000, 65000)
        resp = client.post("/predict", json={"model": "digits", "image_b64": b64(bomb)})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    with app_client(max_image_pixels=1000, max_image_aspect=2) as client:
        assert_error(client.post("/models/digits/predict", files={"file": ("d.png", encode(digit(3, scale=4)))}),
                     413, "payload_too_large", "image is 32x32; at most 1000 pixels are accepted")
        assert_error(client.post("/models/digits/predict", files={"file": ("d.png", encode(Image.new("L", (30, 10))))}),
                     422, "invalid_input", "image is 30x10; its longer side may be at most 2 times its shorter side")


def test_ping_answers_while_a_batch_of_large_images_decodes(app_client):
    """Thirty 4096x4096 PNGs (25 KB files, long to decode) in one batch, one
    decoding thread: /ping keeps answering at once, and keeps being served
    at its own pace, all the while they decode."""
    raw = encode(Image.new("L", (4096, 4096), 255))
    body = {"model": "digits", "inputs": [{"image_b64": b64(raw)}] * 30}

    async def scenario(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=60) as http:
            started = time.perf_counter()
            batch = asyncio.ensure_future(http.post("/predict/batch", json=body))
            pings = []
            while not batch.done():
                sent = time.perf_counter()
                assert (await http.get("/ping")).status_code == 200
                pings.append(time.perf_counter() - sent)
                await asyncio.sleep(0.01)
            return await batch, pings, time.perf_counter() - started

    with app_client(preprocess_workers=1, max_body_bytes=2 << 20) as client:
        resp, pings, took = client.portal.call(scenario, client.app)
    assert resp.status_code == 200, resp.text
    assert took > 0.5, f"the batch took {took:.2f}s: too fast to show anything"
    # Nearly every ping within 100 ms; one unlucky scheduling slice on a busy
    # 2-core machine is not a stall (decoding on the loop stalls for seconds).
    ordered = sorted(pings)
    assert ordered[int(0.95 * (len(ordered) - 1))] < 0.1, f"p95 /ping {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.0f} ms while decoding"
    assert ordered[-1] < 0.5, f"slowest /ping {ordered[-1] * 1000:.0f} ms while the batch decoded"
    # A loop stalled by a decode, even one image at a time, serves far fewer
    # pings than one every 10 ms plus their own time.
    assert len(pings) >= took / 0.05, f"{len(pings)} pings in {took:.2f}s"


def test_the_pool_never_holds_more_work_than_it_has_threads(app_client):
    """Eight batches at once: the pool is handed at most PREPROCESS_WORKERS
    pieces of work at a time; the rest wait, and every request succeeds."""
    raw = encode(Image.new("L", (1024, 1024), 255))
    body = {"model": "digits", "inputs": [{"image_b64": b64(raw)}] * 6}
    with app_client(preprocess_workers=2) as client:
        pool = client.app.state.service.inputs._pool
        submit, lock, outstanding, most = pool.submit, threading.Lock(), [0], [0]

        def done(_) -> None:
            with lock:
                outstanding[0] -= 1

        def counting_submit(fn, *args):
            with lock:
                outstanding[0] += 1
                most[0] = max(most[0], outstanding[0])
            future = submit(fn, *args)
            future.add_done_callback(done)
            return future

        pool.submit = counting_submit

        async def scenario(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=60) as http:
                return await asyncio.gather(*(http.post("/predict/batch", json=body) for _ in range(8)))

        responses = client.portal.call(scenario, client.app)
    assert [r.status_code for r in responses] == [200] * 8
    assert 1 <= most[0] <= 2


def test_the_pool_is_shut_down_with_the_app(app_client):
    with app_client() as client:
        pool = client.app.state.service.inputs._pool
        assert client.post("/models/digits/predict", files={"file": ("d.png", encode(digit(3)))}).status_code == 200
    with pytest.raises(RuntimeError):
        pool.submit(int)


# --- check() at submit time, prepare() in the worker: one decode per image ----------------

@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Every file decode Pillow starts (in any thread): PNG's "zip", "jpeg",
    ...; "raw" is left out, as Image.fromarray uses it for arrays too."""
    seen: list[str] = []
    real = Image._getdecoder

    def counting(mode, decoder_name, *args, **kwargs):
        if decoder_name != "raw":
            seen.append(decoder_name)
        return real(mode, decoder_name, *args, **kwargs)

    monkeypatch.setattr(Image, "_getdecoder", counting)
    return seen


def test_check_decodes_nothing_and_prepare_decodes_each_image_once(client, decodes):
    service = client.app.state.service
    items = [Item(image=encode(digit(i))) for i in range(3)] + [Item(image=encode(digit(4), "JPEG"))]
    opts = Options(model="digits")
    assert client.portal.call(service.check, items, opts) is None
    assert decodes == []
    _, tensors, _ = client.portal.call(service.prepare, items, opts)
    assert len(tensors) == 4 and sorted(decodes) == ["jpeg", "zip", "zip", "zip"]


def test_check_refuses_what_the_header_shows(client, decodes):
    service = client.app.state.service
    cases = [([Item(image=encode(Image.new("L", (16384, 1))))], "its longer side may be at most 64"),
             ([Item(image=MALFORMED["not an image"])], UNDECODABLE),
             ([Item(image=encode(digit(3))), Item(text="hello")], "model 'digits' takes an image"),
             ([Item(image=b"")], "the image is empty")]
    for items, message in cases:
        with pytest.raises(InvalidInput, match=message):
            client.portal.call(service.check, items, Options(model="digits"))
    with pytest.raises(InvalidInput, match="model 'sentiment' takes text, not an image"):
        client.portal.call(service.check, [Item(image=encode(digit(3)))], Options(model="sentiment"))
    assert decodes == []


def test_a_file_whose_pixels_are_corrupt_passes_check_and_fails_in_prepare(client):
    """What a job's worker then records as its `failed` 422."""
    service = client.app.state.service
    items = [Item(image=MALFORMED["png truncated"])]
    client.portal.call(service.check, items, Options(model="digits"))
    with pytest.raises(InvalidInput, match=UNDECODABLE):
        client.portal.call(service.prepare, items, Options(model="digits"))


def test_the_first_refused_item_in_order_is_reported(client):
    service = client.app.state.service
    items = [Item(image=encode(digit(3))), Item(image=MALFORMED["png truncated"]),
             Item(image=encode(Image.new("L", (30000, 2))))]
    with pytest.raises(InvalidInput, match="its longer side"):  # the header phase sees the third first
        client.portal.call(service.prepare, items, Options(model="digits"))
    with pytest.raises(InvalidInput, match=UNDECODABLE):
        client.portal.call(service.prepare, items[:2] + [Item(image=MALFORMED["bmp truncated"])],
                           Options(model="digits"))
