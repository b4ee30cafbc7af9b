"""API keys, scopes and rate limits, through the whole app over a FakeTriton."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from pydantic import ValidationError

from router import keys
from router.settings import Settings


def entry(name: str, key: str, scopes: list[str], rate: str | None = None) -> dict:
    return keys.entry(name, key, scopes, rate)


KEYS = [entry("reader", "k-reader", ["predict"]), entry("ops", "k-ops", ["metrics", "jobs", "admin"]),
        entry("slow", "k-slow", ["predict"], "3/minute")]


def assert_error(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": message,
                                         "request_id": response.headers["x-request-id"]}}


@pytest.fixture
def secured(app_client):
    with app_client(api_keys=KEYS) as client:
        yield client


def test_open_mode_says_so(client):
    assert client.get("/health").json()["auth"] == "off"
    assert client.get("/predict", params={"text": "hi"}).status_code == 200
    assert client.get("/metrics").status_code == 200


def test_keys_by_either_header(secured):
    assert secured.get("/health").json()["auth"] == "on"
    assert secured.get("/predict", params={"text": "hi"}, headers={"Authorization": "Bearer k-reader"}).status_code == 200
    assert secured.get("/predict", params={"text": "hi"}, headers={"X-API-Key": "k-reader"}).status_code == 200
    assert secured.get("/predict", params={"text": "hi"}, headers={"authorization": "bearer k-reader"}).status_code == 200


@pytest.mark.parametrize("headers,message", [
    ({}, "this route needs an API key with the 'predict' scope"),
    ({"X-API-Key": "wrong"}, "unknown API key"),
    ({"Authorization": "Bearer "}, "the Authorization header must be `Bearer <API key>`"),
    ({"Authorization": "Basic a2V5Og=="}, "the Authorization header must be `Bearer <API key>`"),
    ({"Authorization": "Bearer k-reader-not"}, "unknown API key"),
])
def test_missing_or_unknown_keys_are_401(secured, fake, headers, message):
    response = secured.get("/predict", params={"text": "hi"}, headers=headers)
    assert_error(response, 401, "unauthorized", message)
    assert response.headers["www-authenticate"] == 'Bearer realm="router"'
    assert fake.calls == []


def test_a_missing_scope_is_403(secured):
    assert_error(secured.get("/predict", params={"text": "hi"}, headers={"X-API-Key": "k-ops"}), 403, "forbidden",
                 "the API key 'ops' does not have the 'predict' scope")
    assert_error(secured.get("/metrics", headers={"X-API-Key": "k-reader"}), 403, "forbidden",
                 "the API key 'reader' does not have the 'metrics' scope")
    assert_error(secured.post("/jobs", json={"text": "x"}, headers={"X-API-Key": "k-reader"}), 403, "forbidden",
                 "the API key 'reader' does not have the 'jobs' scope")
    assert secured.get("/metrics", headers={"X-API-Key": "k-ops"}).status_code == 200
    assert secured.get("/stats", headers={"X-API-Key": "k-ops"}).status_code == 200


@pytest.mark.parametrize("path", ["/ping", "/health", "/ready", "/docs", "/openapi.json", "/", "/models"])
def test_probes_docs_and_the_page_stay_public(secured, path):
    assert secured.get(path).status_code == 200


def test_metrics_public_and_anonymous_scopes(app_client):
    with app_client(api_keys=KEYS, metrics_public=True, anonymous_scopes={"predict"}) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/predict", params={"text": "hi"}).status_code == 200
        assert client.post("/jobs", json={"text": "x"}).status_code == 401


def test_admin_is_never_anonymous():
    with pytest.raises(ValidationError, match="admin always needs a key"):
        Settings(_env_file=None, anonymous_scopes={"admin"})


def test_keys_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS[:1]))
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    settings = Settings(_env_file=None)
    assert [k.name for k in settings.api_keys] == ["reader"] and settings.anonymous() == frozenset()


def test_the_key_is_never_logged_but_its_name_is(app_client, caplog):
    with app_client(api_keys=KEYS, request_logging=True) as client, caplog.at_level(logging.INFO):
        client.get("/predict", params={"text": "hi"}, headers={"X-API-Key": "k-reader"})
        client.get("/predict", params={"text": "hi"}, headers={"X-API-Key": "k-secret-wrong"})
    access = [r for r in caplog.records if r.name == "router.access"]
    assert [r.key for r in access] == ["reader", None]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "k-reader" not in text and "k-secret-wrong" not in text


def test_a_burst_over_a_keys_rate_is_429_with_headers(secured, fake):
    statuses = [secured.get("/predict", params={"text": f"t{n}"}, headers={"X-API-Key": "k-slow"})
                for n in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    refused = statuses[3]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-policy"] == "3;w=60"
    assert len(fake.calls) == 3  # refused before any work
    # another key is not affected
    assert secured.get("/predict", params={"text": "t9"}, headers={"X-API-Key": "k-reader"}).status_code == 200


def test_anonymous_traffic_is_limited_per_address(app_client):
    with app_client(rate_limit="2/minute") as client:
        codes = [client.get("/predict", params={"text": "a"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert client.get("/ping").status_code == 200  # probes are not limited


def test_the_keys_cli_prints_a_key_once_and_an_entry_that_works(capsys):
    assert keys.main(["new", "team-a", "--scopes", "predict,jobs", "--rate", "100/s", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"].startswith("rk_") and len(out["key"]) > 40
    assert out["entry"] == {"name": "team-a", "key_sha256": hashlib.sha256(out["key"].encode()).hexdigest(),
                            "scopes": ["jobs", "predict"], "rate": "100/second"}
    assert keys.main(["new", "bad name", "--scopes", "predict"]) == 2
    assert keys.main(["new", "x", "--scopes", "predict,root"]) == 2
