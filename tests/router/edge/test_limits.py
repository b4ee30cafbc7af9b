"""What the edge refuses before any work: deep or malformed JSON, load over
the in-flight cap; and an OpenAPI document that describes what is accepted."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.router.edge.test_errors import assert_error


@pytest.mark.parametrize("raw,message", [
    (b'{"text": "' + b"[" * 10 + b'"}', None),  # brackets inside a string are text, not nesting
    (b'{"text": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "the JSON body is nested deeper than 32 levels"),
    (b'{"text": "x", "extra": ' + b"[" * 40 + b"]" * 40 + b"}", "the JSON body is nested deeper than 32 levels"),
    (b'{"text": "\\ud800"}', "the request body is not valid JSON"),  # a lone surrogate
    (b'{"text": "\xff\xfe"}', "the request body is not valid JSON"),  # not UTF-8
])
def test_json_bodies_that_are_refused_with_a_400(client, fake, raw, message):
    for path in ("/predict", "/predict/batch"):
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        if message is None:
            assert response.status_code in (200, 422), response.text
        else:
            assert_error(response, 400, "bad_request", message)


def test_a_big_body_is_parsed_off_the_loop_and_still_answers(client):
    body = {"inputs": ["word " * 900] * 60}  # about 270 KB
    response = client.post("/predict/batch", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["results"]) == 60


def test_wrong_methods_say_what_is_allowed(client):
    response = client.put("/predict/batch", json={})
    assert_error(response, 405, "method_not_allowed", "Method Not Allowed")
    assert response.headers["allow"] == "POST"


def test_requests_beyond_the_in_flight_cap_are_shed_with_503(app_client, fake):
    with app_client(max_in_flight=3, batching=False) as client:  # each held request its own Triton call
        fake.hold = True

        async def scenario():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
                held = [asyncio.ensure_future(http.get("/predict", params={"text": f"held {n}"})) for n in range(3)]
                while len(fake.calls) < 3:
                    await asyncio.sleep(0.005)
                shed = await http.get("/predict", params={"text": "one more"})
                probe = await http.get("/ping")
                fake.hold = False
                return shed, probe, await asyncio.gather(*held)

        shed, probe, held = client.portal.call(scenario)
        assert_error(shed, 503, "overloaded", "the router is serving 3 requests at once; retry shortly")
        assert shed.headers["retry-after"] == "1"
        assert probe.status_code == 200
        assert [r.status_code for r in held] == [200, 200, 200]
        assert client.get("/predict", params={"text": "after"}).status_code == 200
        assert 'router_rejected_total{reason="overloaded"} 1.0' in client.get("/metrics").text


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_openapi_document_resolves_and_states_the_limits(client):
    doc = client.get("/openapi.json").json()
    components = doc["components"]["schemas"]
    for ref in set(_refs(doc)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    batch = components["BatchBody"]["properties"]["inputs"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 64)
    assert "latency_ms" not in components["ItemResult"]["properties"]
    assert components["BatchResponse"]["properties"]["results"]["items"] == {"$ref": "#/components/schemas/ItemResult"}
    top_k = [b for b in components["PredictBody"]["properties"]["top_k"]["anyOf"] if b.get("type") == "integer"][0]
    assert (top_k["minimum"], top_k["maximum"]) == (1, 10)
    assert "503" in doc["paths"]["/ready"]["get"]["responses"]
    assert set(doc["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}


def test_a_slowly_sent_body_holds_no_in_flight_slot(app_client, fake):
    """With one slot, a client trickling its body in does not shut others out;
    once its body is complete it counts, and a full router then sheds with 503."""
    with app_client(max_in_flight=1) as client:
        release = asyncio.Event()

        async def trickle():
            yield b'{"text": "slow'
            await release.wait()
            yield b' body"}'

        async def scenario():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
                slow = asyncio.ensure_future(http.post("/predict", content=trickle(),
                                                       headers={"content-type": "application/json"}))
                await asyncio.sleep(0.05)
                meanwhile = await http.get("/predict", params={"text": "not blocked"})
                fake.hold = True
                held = asyncio.ensure_future(http.get("/predict", params={"text": "holds the slot"}))
                while len(fake.calls) < 2:  # the held request is in Triton, holding the one slot
                    await asyncio.sleep(0.005)
                release.set()
                shed = await slow
                fake.hold = False
                return meanwhile, shed, await held

        meanwhile, shed, held = client.portal.call(scenario)
        assert meanwhile.status_code == 200 and held.status_code == 200
        assert_error(shed, 503, "overloaded", "the router is serving 1 requests at once; retry shortly")
        assert shed.headers["retry-after"] == "1"
