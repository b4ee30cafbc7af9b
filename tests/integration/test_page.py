"""The web page at /, in headless Chromium (Debian's) driven by Playwright,
served by a real router with a real worker, Redis and Triton."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from devstack.processes import RouterProcess, WorkerProcess
from router import keys
from tests.conftest import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
ADMIN = keys.new_key()


@pytest.fixture(scope="module")
def stack(triton, redis_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("page")
    # the page itself is anonymous (as without keys); an admin key changes a rollout
    env = {"REDIS_URL": redis_server.url, "TRITON_REFRESH_S": "0.5", "MODEL_ROUTES": '{"digits": {"default_version": 2}}',
           "API_KEYS": json.dumps([keys.entry("ops", ADMIN, ["admin"], None)]), "ANONYMOUS_SCOPES": "predict,jobs,metrics"}
    with RouterProcess(workdir, triton, env) as router, WorkerProcess(workdir, triton, env, 4, "page-worker"):
        yield router


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make setup` as root"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(stack, browser):
    page = browser.new_page(viewport={"width": 1000, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.url + "/")
    page.wait_for_selector("#models tbody tr")
    yield page
    page.close()
    assert errors == [], errors


def test_models_and_routing_are_listed(page):
    rows = page.locator("#models tbody tr").all_inner_texts()
    assert any(r.startswith("digits") and "v1 ready" in r and "v2 ready" in r for r in rows), rows
    assert any(r.startswith("sentiment (default)") for r in rows), rows
    digits = next(r for r in rows if r.startswith("digits"))
    assert "image UINT8 [8×8]" in digits and "probabilities FP32 [10]" in digits, digits
    embedder = [r for r in rows if r.startswith("embedder")]
    if embedder:  # built by `make models`; raw tensors, offered over /v2 only
        assert "input_ids INT64 [?]" in embedder[0] and "raw tensors: /v2" in embedder[0], embedder
        assert "embedder" not in page.locator("#model option").all_inner_texts()


def test_typed_text_is_predicted(page):
    page.select_option("#model", "sentiment")
    page.fill("#text", "The service was great")
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#prediction") == "positive"
    assert page.inner_text("#meta-version") == "v2"
    assert page.inner_text("#meta-routed") == "default"
    assert page.inner_text("#meta-cache") in ("HIT", "MISS")
    assert page.inner_text("#meta-latency").endswith(" ms")
    assert len(page.inner_text("#meta-request-id")) == 32
    assert page.locator("#scores .bar").count() == 2
    page.click("#predict")  # the same text again: from the cache
    page.wait_for_function("document.querySelector('#meta-cache').textContent === 'HIT'")


def test_uploaded_digit_is_predicted_as_a_job(page, tmp_path):
    from tests.router.edge.bad_inputs import digit_png

    png, label = digit_png(3)
    image = tmp_path / "three.png"
    image.write_bytes(png)
    page.select_option("#model", "digits")
    assert page.is_visible("#image-input") and not page.is_visible("#text-input")
    page.set_input_files("#file", str(image))
    page.check("#as-job")
    page.click("#predict")
    page.wait_for_function("document.querySelector('#job-status').textContent.endsWith(': done')")
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#prediction") == str(label)
    assert page.locator("#scores .bar").count() == 3
    job_id = page.inner_text("#job-status").split()[1].rstrip(":")
    assert page.inner_text("#meta-request-id") == job_id
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
    assert (ARTIFACTS / "page.png").stat().st_size > 10_000


def test_errors_are_shown(page):
    page.uncheck("#as-job")
    page.select_option("#model", "sentiment")
    page.fill("#text", "   ")
    page.click("#predict")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("invalid_input: text must not be empty (request id ")


def test_the_rollout_line_follows_a_change_without_touching_the_form(page, stack, redis_server):
    page.select_option("#model", "sentiment")
    page.fill("#text", "kept while the rollout lines refresh")
    line = '#models tr[data-rollout="digits"]'
    assert page.inner_text(line).startswith("idle · no canary"), page.inner_text(line)
    try:
        change = httpx.put(f"{stack.url}/admin/rollouts/digits", headers={"X-API-Key": ADMIN}, timeout=10,
                           json={"canary_version": 1, "canary_percent": 10, "reason": "page"})
        assert change.status_code == 200, change.text
        page.wait_for_function(f"document.querySelector('{line}').textContent.includes('canary v1 at 10%')",
                               timeout=5000)  # refreshed every 2 s
        text = page.inner_text(line)
        assert text.startswith("idle · canary v1 at 10%") and "default v2: 0.0% errors" in text, text
        assert "canary v1: 0.0% errors" in text, text
        assert page.input_value("#text") == "kept while the rollout lines refresh"
        assert page.input_value("#model") == "sentiment"
    finally:  # the next modules start from no stored state
        import redis

        client = redis.Redis.from_url(redis_server.url)
        client.delete("control:rollout:digits", "control:verdict:digits", *client.scan_iter("control:figures:digits:*"))
        client.close()


def test_the_page_asks_for_a_key_once_per_tab(triton, browser, tmp_path_factory):
    """A router with keys and nothing anonymous: the page asks on the first 401, then keeps the key."""
    import json

    from router import keys

    key = keys.new_key()
    env = {"API_KEYS": json.dumps([keys.entry("page-user", key, ["predict"], None)]), "TRITON_REFRESH_S": "0.5"}
    with RouterProcess(tmp_path_factory.mktemp("page-keys"), triton, env) as router:
        page = browser.new_context().new_page()
        asked: list[str] = []

        def answer(dialog):
            asked.append(dialog.message)
            dialog.accept(key)

        page.on("dialog", answer)
        page.goto(router.url + "/")
        page.wait_for_selector("#models tbody tr")
        for text in ("a fine day", "a fine evening"):
            page.fill("#text", text)
            page.click("#predict")
            page.wait_for_selector("#result:not([hidden])")
            assert page.inner_text("#prediction") in ("positive", "negative")
        assert len(asked) == 1 and "API key" in asked[0]
        assert page.evaluate("sessionStorage.getItem('router-api-key')") == key
        page.close()
