import pytest
from pydantic import ValidationError

from router.settings import ModelRoute, Settings, parse_version


@pytest.mark.parametrize("raw,expected", [(2, 2), ("2", 2), ("v2", 2), ("V12", 12), (None, None), ("", None)])
def test_parse_version(raw, expected):
    assert parse_version(raw) == expected


@pytest.mark.parametrize("raw", ["two", "v", "-1", "0", "v0", "2.5"])
def test_parse_version_rejects(raw):
    with pytest.raises(ValueError):
        parse_version(raw)


def test_seed_names_apply_to_the_default_model(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key, value in {"DEFAULT_MODEL_VERSION": "v1", "CANARY_VERSION": "2", "CANARY_PERCENT": "20",
                       "MODEL_ROUTES": '{"digits": {"default_version": "v2"}}'}.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.route_for("sentiment") == ModelRoute(default_version=1, canary_version=2, canary_percent=20)
    assert s.route_for("digits") == ModelRoute(default_version=2)
    assert s.route_for("other") == ModelRoute()


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DEFAULT_MODEL=digits\nCACHE_TTL_SECONDS=60\nTRITON_PROTOCOL=http\n")
    s = Settings()
    assert (s.default_model, s.cache_ttl_seconds, s.triton_url) == ("digits", 60, "127.0.0.1:8000")


@pytest.mark.parametrize("env", [
    {"CANARY_PERCENT": "10"},  # no canary version
    {"CANARY_PERCENT": "150", "CANARY_VERSION": "2"},
    {"TRITON_PROTOCOL": "carrier-pigeon"},
    {"MODEL_ROUTES": "not json"},
    {"DEFAULT_MODEL_VERSION": "latest"},
])
def test_bad_configuration_fails_at_start(monkeypatch, tmp_path, env):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises((ValidationError, ValueError)):
        Settings()
