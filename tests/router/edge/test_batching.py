"""Router-side batching of misses through the whole app over a FakeTriton:
misses arriving while Triton is busy go as one Triton request with its own
request id (each caller's logged against it), every caller gets exactly what
it would get alone, and a failed batch falls back per caller."""

from __future__ import annotations

import asyncio
import logging

import httpx
import numpy as np

from router.errors import TritonUnavailable


def _texts(n: int, tag: str) -> list[str]:
    return [f"{tag} review number {i}: {'good' if i % 2 else 'bad'}" for i in range(n)]


def _burst(client, fake, texts: list[str], path: str = "/predict", **extra):
    """One request held in Triton, then `texts` sent while it is: they queue behind it."""

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=10) as http:
            fake.hold = True
            first = asyncio.ensure_future(http.post(path, json={"text": "held first", **extra}))
            second = asyncio.ensure_future(http.post(path, json={"text": "held second", **extra}))
            while len(fake.calls) < 2:  # two calls in flight per key (BATCH_IN_FLIGHT)
                await asyncio.sleep(0.005)
            rest = [asyncio.ensure_future(http.post(path, json={"text": t, **extra},
                                                    headers={"X-Request-ID": f"caller-{i}"}))
                    for i, t in enumerate(texts)]
            await asyncio.sleep(0.05)
            fake.hold = False
            return await asyncio.gather(first, second, *rest)
    return client.portal.call(scenario)


def test_misses_waiting_on_a_busy_triton_go_as_one_request(app_client, fake, caplog):
    texts = _texts(20, "batched")
    with app_client(request_logging=True) as client, caplog.at_level(logging.INFO, "router.access.batch"):
        answers = _burst(client, fake, texts)
        assert [a.status_code for a in answers] == [200] * 22
        # 2 calls held, then the 20 waiting rows in one call
        assert [c.rows for c in fake.calls] == [1, 1, 20]
        batch_id = fake.calls[2].request_id
        assert batch_id.startswith("batch-")
        line = next(r for r in caplog.records if r.name == "router.access.batch")
        assert line.triton_request_id == batch_id and line.request_ids == [f"caller-{i}" for i in range(20)]
        assert line.request_id == batch_id  # the batch's own, not whichever request's started its call
        # each caller got what it gets alone
        with app_client(batching=False) as alone:
            for text, answer in zip(texts, answers[2:]):
                one, many = alone.post("/predict", json={"text": text}).json(), answer.json()
                assert (many["prediction"], many["scores"], many["model_version"]) == \
                    (one["prediction"], one["scores"], one["model_version"])
        assert 'router_batch_rows_count{model="sentiment"} 3.0' in client.get("/metrics").text


def test_a_batch_never_exceeds_the_models_max_batch_size(app_client, fake):
    fake.configs["sentiment"]["max_batch_size"] = 8
    with app_client() as client:
        answers = _burst(client, fake, _texts(20, "capped"))
    assert all(a.status_code == 200 for a in answers)
    assert max(c.rows for c in fake.calls) <= 8 and sum(c.rows for c in fake.calls) == 22


def test_a_failed_batch_falls_back_for_each_caller(app_client, fake):
    """The canary (v1, 100%) fails the whole batch: every caller is served by the
    default (v2) as it would be alone, and counted once against the canary."""
    with app_client(canary_version=1, canary_percent=100, default_model_version=2) as client:
        fake.failures[("sentiment", 1)] = TritonUnavailable("v1 is down")
        answers = _burst(client, fake, _texts(10, "fallback"))
        bodies = [a.json() for a in answers]
        assert {a.status_code for a in answers} == {200}
        assert {b["model_version"] for b in bodies} == {2} and {b["routed_by"] for b in bodies} == {"fallback"}
        v1 = [c.rows for c in fake.calls if c.version == 1]
        assert sum(v1) == 12 and len(v1) < 12  # the canary got the misses batched too


def test_v2_misses_are_batched_and_split_back(app_client, fake):
    rows = [np.full((1, 256), i, dtype=np.uint8) for i in range(12)]

    async def scenario(client):
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=10) as http:
            def body(row):
                return {"inputs": [{"name": "text", "datatype": "UINT8", "shape": list(row.shape),
                                    "data": row.ravel().tolist()}]}
            fake.hold = True
            held = [asyncio.ensure_future(http.post("/v2/models/sentiment/infer", json=body(r))) for r in rows[:2]]
            while len(fake.calls) < 2:
                await asyncio.sleep(0.005)
            rest = [asyncio.ensure_future(http.post("/v2/models/sentiment/infer", json=body(r))) for r in rows[2:]]
            await asyncio.sleep(0.05)
            fake.hold = False
            return await asyncio.gather(*held, *rest)

    with app_client() as client:
        answers = client.portal.call(scenario, client)
        batched = [a.json()["outputs"] for a in answers]
        calls = [c.rows for c in fake.calls]
    with app_client(batching=False) as alone:
        single = [alone.post("/v2/models/sentiment/infer", json={"inputs": [{
            "name": "text", "datatype": "UINT8", "shape": [1, 256], "data": r.ravel().tolist()}]}).json()["outputs"]
            for r in rows]
    assert calls == [1, 1, 10] and batched == single


def test_a_miss_waiting_behind_a_hung_call_gets_its_504_within_the_triton_timeout(app_client, fake):
    """Triton hangs: the misses queued behind the calls in flight answer 504 within
    TRITON_TIMEOUT_S of arriving, as a call of their own would, not after two timeouts."""
    import time

    async def scenario(client):
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=10) as http:
            fake.hold = True
            first = [asyncio.ensure_future(http.post("/predict", json={"text": f"hung {n}"})) for n in range(2)]
            while len(fake.calls) < 2:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            queued = await http.post("/predict", json={"text": "queued behind them"})
            waited = time.monotonic() - started
            fake.hold = False
            return queued, waited, await asyncio.gather(*first)

    with app_client(triton_timeout_s=0.5) as client:
        queued, waited, _ = client.portal.call(scenario, client)
    assert queued.status_code == 504 and queued.json()["error"]["code"] == "triton_timeout"
    assert waited < 0.5 + 0.25, waited
