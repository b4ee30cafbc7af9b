"""Analysed rollouts end to end: three routers sharing a Redis of their own, a
real Triton serving `sentiment` and a test-only Python model `flaky` whose
versions are healthy (1, 2), fail every request (3) or are slow (4); client
traffic from threads. Figures to tests/artifacts/rollout_analysis.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import numpy as np
import pytest
import redis

from devstack.processes import RedisServer, RouterProcess
from local_triton import Ports, TritonServer
from router import keys
from tests.conftest import MODEL_REPOSITORY, ROOT, free_port

ADMIN = keys.new_key()
TEXTS = [f"review {n}: " + ("great and fun" if n % 3 else "dull, slow and far too long") + " " * (n % 7)
         + ("but the ending was weak" if n % 5 == 0 else "") for n in range(120)]
PREDICT = keys.new_key()
ARTIFACT = ROOT / "tests" / "artifacts" / "rollout_analysis.json"

FLAKY = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])

    def execute(self, requests):
        if self.version == 4:
            time.sleep(0.15)
        out = []
        for request in requests:
            if self.version == 3:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("version 3 is broken")))
                continue
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", (x * 2).astype(np.float32))]))
        return out
'''
CONFIG = '''name: "flaky"
backend: "python"
max_batch_size: 8
version_policy { all { } }
input { name: "INPUT" data_type: TYPE_FP32 dims: 4 }
output { name: "OUTPUT" data_type: TYPE_FP32 dims: 4 }
instance_group { count: 1 kind: KIND_CPU }
dynamic_batching { max_queue_delay_microseconds: 1000 }
'''


def record(**figures) -> None:
    ARTIFACT.parent.mkdir(exist_ok=True)
    data = json.loads(ARTIFACT.read_text()) if ARTIFACT.exists() else {}
    data.update(figures)
    ARTIFACT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-analysis")
    repo = root / "repository"
    shutil.copytree(MODEL_REPOSITORY / "sentiment", repo / "sentiment")
    (repo / "flaky").mkdir(parents=True)
    (repo / "flaky" / "config.pbtxt").write_text(CONFIG)
    for version in (1, 2, 3, 4):
        (repo / "flaky" / str(version)).mkdir()
        (repo / "flaky" / str(version) / "model.py").write_text(FLAKY)
    triton = TritonServer(repo, Ports(free_port(), free_port(), free_port()), log_path=root / "triton.log")
    triton.start()
    store = RedisServer(root / "redis", persistent=False).start()
    env = {"REDIS_URL": store.url, "REQUEST_LOGGING": "false", "RATE_LIMIT": "none",
           "API_KEYS": json.dumps([keys.entry("ops", ADMIN, ["admin", "metrics"], None),
                                   keys.entry("app", PREDICT, ["predict"], None)]),
           "ANONYMOUS_SCOPES": "predict", "ROLLOUT_TICK_S": "0.2", "CONTROL_REFRESH_S": "1",
           "ROLLOUT_FIGURES_FLUSH_S": "0.25", "MODEL_ROUTES": '{"flaky": {"default_version": 1}}'}
    routers = [RouterProcess(root / f"r{n}", triton, env) for n in range(3)]
    try:
        triton.wait_ready()
        for proc in routers:
            proc.start()
        yield routers, redis.Redis.from_url(store.url), triton
    finally:
        for proc in routers:
            proc.stop()
        store.stop()
        triton.stop()


def admin(router, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{router.url}/admin/rollouts{path}", headers={"X-API-Key": ADMIN}, timeout=10,
                         **kwargs)


def state(router, model: str) -> dict:
    response = admin(router, "GET", f"/{model}")
    assert response.status_code == 200, response.text
    return response.json()


def reset(routers, model: str = "flaky", default: int = 1) -> None:
    """Back to one default version and nothing else, as the next revision."""
    current = state(routers[0], model)
    if current["status"] in ("progressing", "paused"):
        assert admin(routers[0], "POST", f"/{model}/rollback", json={"reason": "test reset"}).status_code == 200
    response = admin(routers[0], "PUT", f"/{model}", json={"default_version": default, "canary_version": None,
                                                           "canary_percent": 0, "shadow_percent": 0})
    assert response.status_code == 200, response.text


def flaky_request(client: httpx.Client, router, rng, n: int) -> httpx.Response:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": rng.random(4).round(4).tolist()}]}
    return client.post(f"{router.url}/v2/models/flaky/infer", json=body, headers={"X-User-ID": uuid.uuid4().hex})


def sentiment_request(client: httpx.Client, router, rng, n: int) -> httpx.Response:
    text = f"{TEXTS[n % len(TEXTS)]} #{uuid.uuid4().hex[:8]}"  # a miss each: every version timed
    return client.post(f"{router.url}/predict", json={"text": text, "model": "sentiment"},
                       headers={"X-User-ID": uuid.uuid4().hex})


class Traffic:
    """Client threads sending requests (by default /v2 inferences of `flaky`
    with random inputs: no cache hits) with random user ids to the live
    routers, counting statuses."""

    def __init__(self, routers, threads: int = 6, send=flaky_request) -> None:
        self.routers = list(routers)
        self.send = send
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, n: int) -> None:
        rng = np.random.default_rng()  # inputs no earlier test sent: misses, each timed
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                routers = self.routers
                router = routers[(n + i) % len(routers)]
                i += 1
                try:
                    r = self.send(client, router, rng, n * 100_000 + i)
                except httpx.HTTPError as exc:
                    if router in self.routers:
                        self.failures.append(f"{router.url}: {exc!r}")
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions[r.headers["x-model-version"]] += 1
                else:
                    self.failures.append(r.text[:200])

    def drop(self, router) -> None:
        self.routers = [r for r in self.routers if r is not router]

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def follow(router, model: str, until: set[str], timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        current = state(router, model)
        if current["status"] in until:
            return current, time.monotonic() - started
        assert time.monotonic() - started < timeout, json.dumps(current, indent=1)[-3000:]
        time.sleep(0.05)


def start(router, model: str, **policy) -> tuple[dict, float]:
    response = admin(router, "POST", f"/{model}/start", json=policy)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic()


def test_a_healthy_version_is_promoted_step_by_step(stack):
    routers, _, _ = stack
    reset(routers)
    with Traffic(routers) as traffic:
        started, t0 = start(routers[1], "flaky", canary_version=2, steps=[30, 60, 100], interval_s=1.5,
                            min_requests=20, max_p99_ratio=10)  # healthy twin: its tail alone varies a lot on 2 shared cores
        assert started["status"] == "progressing" and started["canary_percent"] == 30 and started["step"] == 0
        final, took = follow(routers[2], "flaky", {"promoted", "rolled_back", "paused"}, timeout=60)
        time.sleep(1.5)  # every replica applies the promotion; traffic after it is all v2
    assert final["status"] == "promoted", final["reason"]
    assert final["default_version"] == 2 and final["canary_version"] is None and final["canary_percent"] == 0
    actions = [h["action"] for h in final["history"] if h["revision"] > started["revision"]]
    assert [a for a in actions if a != "hold"] == ["step", "step", "promote"], actions
    assert traffic.statuses[200] > 100 and set(traffic.statuses) == {200}, traffic.failures[:5]
    for router in routers:
        served = httpx.post(f"{router.url}/v2/models/flaky/infer", timeout=10, json={
            "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        assert served.status_code == 200 and served.headers["x-model-version"] == "2"
        assert served.headers["x-routed-by"] == "default"
    record(healthy_promotion_s=round(took, 2), healthy_steps=3, healthy_interval_s=1.5,
           healthy_holds=actions.count("hold"))


def test_a_failing_canary_is_rolled_back_at_once_and_no_client_sees_an_error(stack):
    routers, _, _ = stack
    reset(routers, default=2)
    metrics_before = sum(_rollbacks(r, "error_rate") for r in routers)
    with Traffic(routers) as traffic:
        time.sleep(0.5)
        started, t0 = start(routers[0], "flaky", canary_version=3, steps=[10, 50, 100], interval_s=2.0,
                            min_requests=50)
        final, took = follow(routers[1], "flaky", {"promoted", "rolled_back", "paused"}, timeout=30)
        time.sleep(1.0)
    assert final["status"] == "rolled_back", final
    assert final["canary_percent"] == 0 and final["reason"].startswith("error_rate: canary error rate")
    verdict = final["analysis"]["verdict"]
    assert verdict["result"] == "breach" and verdict["canary"]["errors"] >= 1
    # within two intervals of the first breach (which cannot precede the start)
    assert took < 2 * 2.0, took
    # the canary's failures were served by the default: no client saw a 5xx
    assert set(traffic.statuses) == {200}, (traffic.statuses, traffic.failures[:5])
    assert set(traffic.versions) == {"2"}
    assert sum(_rollbacks(r, "error_rate") for r in routers) == metrics_before + 1
    record(failing_canary_breach_to_rollback_s=round(took, 2), failing_canary_client_errors=sum(
        n for code, n in traffic.statuses.items() if code != 200), failing_canary_requests=sum(
        traffic.statuses.values()))


def test_a_slow_canary_is_rolled_back_on_latency(stack):
    routers, _, _ = stack
    reset(routers, default=2)
    with Traffic(routers, threads=8) as traffic:
        time.sleep(0.5)
        start(routers[0], "flaky", canary_version=4, steps=[50, 100], interval_s=5.0, min_requests=20)
        final, took = follow(routers[2], "flaky", {"promoted", "rolled_back", "paused"}, timeout=30)
    assert final["status"] == "rolled_back", json.dumps(final, indent=1)
    assert final["reason"].startswith("latency: canary p99"), final["reason"]
    verdict = final["analysis"]["verdict"]
    assert verdict["canary"]["p99_ms"] > 150 and verdict["canary"]["timings"] >= 100
    assert took < 2 * 5.0
    assert set(traffic.statuses) == {200}, traffic.failures[:5]
    record(slow_canary_rollback_s=round(took, 2), slow_canary_p99_ms=verdict["canary"]["p99_ms"],
           slow_default_p99_ms=verdict["baseline"]["p99_ms"])


def test_without_traffic_a_rollout_is_never_promoted_and_says_why(stack):
    routers, _, _ = stack
    reset(routers)
    start(routers[0], "flaky", canary_version=2, steps=[50, 100], interval_s=0.5, min_requests=20)
    final, _ = follow(routers[0], "flaky", {"promoted", "rolled_back", "paused"}, timeout=20)
    assert final["status"] == "paused" and final["canary_percent"] == 50 and final["default_version"] == 1
    assert final["reason"].startswith("paused at 50% after 3 held intervals: ")
    assert final["reason"].endswith("of 20 canary requests")
    assert [h["action"] for h in final["history"][-3:]] == ["hold", "hold", "pause"]
    resumed = admin(routers[1], "POST", "/flaky/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "progressing"
    reset(routers)


def test_the_controller_killed_mid_rollout_another_carries_on(stack, tmp_path):
    routers, store, _ = stack
    reset(routers)
    with Traffic(routers) as traffic:
        started, _ = start(routers[0], "flaky", canary_version=2, steps=[30, 60, 100], interval_s=2.0,
                           min_requests=10, max_p99_ratio=10)  # healthy twin: its tail alone varies a lot on 2 shared cores
        deadline = time.monotonic() + 30
        while (now := state(routers[0], "flaky"))["step"] == 0:  # in the middle: after the first step
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
        assert now["status"] == "progressing", json.dumps(now, indent=1)[-2500:]
        holder = store.get("control:lease").decode()
        pid = int(holder.split(":")[1])
        victim = next(r for r in routers if r.proc.pid == pid)
        traffic.drop(victim)
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while (store.get("control:lease") or b"").decode() in ("", holder):
            assert time.monotonic() - killed < 10
            time.sleep(0.02)
        takeover = time.monotonic() - killed
        survivor = next(r for r in routers if r is not victim)
        final, _ = follow(survivor, "flaky", {"promoted", "rolled_back", "paused"}, timeout=60)
    victim.proc.wait(5)
    victim.start()  # the module's other tests keep three routers
    assert final["status"] == "promoted", final
    steps = [h for h in final["history"] if h["revision"] > started["revision"] and h["action"] != "hold"]
    assert [h["action"] for h in steps] == ["step", "step", "promote"], steps
    assert [h["set"].get("step") for h in steps[:2]] == [1, 2]
    assert takeover <= 5.0, takeover
    assert set(traffic.statuses) == {200}, traffic.failures[:5]
    record(controller_takeover_s=round(takeover, 2))


def test_shadow_agreement_equals_the_agreement_computed_directly(stack):
    """sentiment v2 serves; v1 shadows every request. The agreement the rollout
    state reports equals the one computed from Triton's own answers."""
    import tritonclient.http as httpclient

    from router.dataplane.catalog import ModelInfo
    from router.dataplane.preprocess import text_tensor

    routers, _, triton = stack
    texts = TEXTS
    reset(routers, model="sentiment", default=2)
    response = admin(routers[0], "PUT", "/sentiment", json={"shadow_version": 1, "shadow_percent": 100})
    assert response.status_code == 200, response.text
    time.sleep(1.2)  # every replica applies it
    with httpx.Client(timeout=10) as client:
        for n, text in enumerate(texts):
            r = client.post(f"{routers[n % 3].url}/predict", json={"text": text, "model": "sentiment"})
            assert r.status_code == 200 and r.json()["model_version"] == 2
    deadline = time.monotonic() + 10
    while True:
        shadow = (state(routers[1], "sentiment")["analysis"]["live"] or {}).get("shadow") or {}
        if shadow.get("requests", 0) >= len(texts) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert shadow["requests"] == len(texts) and shadow["errors"] == 0, shadow

    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    config = client.get_model_config("sentiment")
    info = ModelInfo.from_config(config)
    batch = np.concatenate([text_tensor(t, info, 10_000) for t in texts])
    top = {}
    for version in ("1", "2"):
        rows = []
        for chunk in (batch[i:i + 60] for i in range(0, len(batch), 60)):  # max_batch_size is 64
            inp = httpclient.InferInput("text", list(chunk.shape), "UINT8")
            inp.set_data_from_numpy(chunk)
            rows.append(client.infer("sentiment", [inp], model_version=version).as_numpy("probabilities"))
        top[version] = np.concatenate(rows).argmax(axis=1)
    client.close()
    direct = float((top["1"] == top["2"]).mean())
    assert shadow["agreements"] == int((top["1"] == top["2"]).sum()), (shadow, direct)
    assert shadow["agreement"] == pytest.approx(direct, abs=1e-6)
    assert 0 < direct  # the two versions answer alike on some inputs at least
    record(shadow_agreement_sentiment_v1_v2=round(direct, 4), shadow_compared=shadow["compared"])
    reset(routers, model="sentiment", default=2)


def export_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROUTER_API_KEY": ADMIN}
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_the_export_cli_promotes_rolls_back_and_reports(stack):
    """`python -m export promote` on a new sentiment version (a copy of v1 on disk as v3):
    loaded into Triton, rolled out and rolled back on shadow agreement (exit 3); then
    promoted (exit 0); `rollback` and `status` with their exit codes."""
    routers, _, triton = stack
    repo = triton.repository
    shutil.copytree(repo / "sentiment" / "1", repo / "sentiment" / "3")
    reset(routers, model="sentiment", default=2)
    common = ["--router", routers[0].url, "--triton", triton.http_url]
    with Traffic(routers, threads=4, send=sentiment_request) as traffic:
        # v3 answers as v1 does, which disagrees with v2 on some of the texts
        failed = export_cli("--repository", str(repo), "promote", "sentiment", "3", *common, "--steps", "50,100", "--interval", "2",
                            "--min-requests", "20", "--min-agreement", "0.999")
        assert failed.returncode == 3, failed.stdout + failed.stderr
        assert "agreement" in failed.stdout + failed.stderr
        assert state(routers[1], "sentiment")["status"] == "rolled_back"
        promoted = export_cli("--repository", str(repo), "promote", "sentiment", "3", *common, "--steps", "50,100", "--interval", "1",
                              "--min-requests", "20", "--max-p99-ratio", "10")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "promoted" in promoted.stdout
        (ARTIFACT.parent / "promote_cli.txt").write_text(failed.stdout + failed.stderr + "\n"
                                                         + promoted.stdout + promoted.stderr)
    assert set(traffic.statuses) == {200}, traffic.failures[:5]
    assert state(routers[2], "sentiment")["default_version"] == 3

    started = export_cli("--repository", str(repo), "promote", "sentiment", "2", *common, "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr
    assert state(routers[0], "sentiment")["status"] == "progressing"
    back = export_cli("rollback", "sentiment", "--router", routers[1].url, "--reason", "cli test")
    assert back.returncode == 0, back.stdout + back.stderr
    shown = export_cli("status", "sentiment", "--router", routers[2].url, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "rolled_back"
    table = export_cli("status", "--router", routers[2].url)
    assert table.returncode == 0 and "sentiment" in table.stdout and "flaky" in table.stdout
    again = export_cli("rollback", "sentiment", "--router", routers[1].url)
    assert again.returncode == 1 and "409" in again.stderr
    denied = subprocess.run([sys.executable, "-m", "export", "status", "--router", routers[0].url],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "ROUTER_API_KEY"})
    assert denied.returncode == 1 and "401" in denied.stderr
    reset(routers, model="sentiment", default=2)


def _rollbacks(router, reason: str) -> float:
    text = httpx.get(f"{router.url}/metrics", headers={"X-API-Key": ADMIN}, timeout=10).text
    for line in text.splitlines():
        if line.startswith("rollout_rollbacks_total{") and f'reason="{reason}"' in line and 'model="flaky"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
