"""Compose, Dockerfile, nginx, Prometheus and Kubernetes files, checked
without Docker or a cluster: schemas, the topology's promises, and real
`nginx -t` / `promtool` on what the loopback topology renders."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from devstack.topology import NGINX_CONF, PROMETHEUS_YML, render_nginx, render_prometheus
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"


def test_compose_files_match_the_compose_schema():
    out = subprocess.run([Path(sys.executable).parent / "check-jsonschema", "--builtin-schema",
                          "vendor.compose-spec", "docker-compose.yml", "docker-compose.gpu.yml"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_long_running_service_has_a_health_check():
    assert set(SERVICES) == {"triton", "router", "worker", "redis", "redis-jobs", "nginx", "prometheus"}
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "/v2/health/ready" in " ".join(SERVICES["triton"]["healthcheck"]["test"])
    assert "/health" in " ".join(SERVICES["router"]["healthcheck"]["test"])


def test_only_nginx_is_published():
    published = {name for name, s in SERVICES.items() if s.get("ports")}
    assert published == {"nginx"}
    assert "ports" not in SERVICES["triton"] and set(SERVICES["triton"]["expose"]) == {"8000", "8001", "8002"}


def test_start_order_waits_for_health():
    assert SERVICES["router"]["depends_on"] == {"triton": {"condition": "service_healthy"},
                                                "redis": {"condition": "service_healthy"},
                                                "redis-jobs": {"condition": "service_healthy"}}
    assert SERVICES["nginx"]["depends_on"] == {"router": {"condition": "service_healthy"}}


def test_triton_serves_the_repository_read_only_with_every_model():
    triton = SERVICES["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert {"--model-control-mode=explicit", "--load-model=*"} <= set(triton["command"])
    assert all((ROOT / "model_repository" / m / "1" / "model.onnx").is_file() for m in ("sentiment", "digits"))


def test_router_replicas_settings_and_read_only_root():
    router = SERVICES["router"]
    assert router["deploy"]["replicas"] == 3
    assert router["read_only"] is True and "/tmp" in router["tmpfs"]
    assert router["build"]["dockerfile"] == "Dockerfile.router"
    assert router["env_file"] == [{"path": ".env", "required": False}]
    env = router["environment"]
    assert (env["TRITON_GRPC_URL"], env["REDIS_URL"], env["PORT"]) == ("triton:8001", "redis://redis:6379/0", "8080")


def _redis_flags(service: str) -> dict[str, str]:
    command = SERVICES[service]["command"]
    return dict(zip(command[1::2], command[2::2]))


def test_redis_keeps_job_data_from_eviction():
    cache, jobs = _redis_flags("redis"), _redis_flags("redis-jobs")
    assert cache["--appendonly"] == jobs["--appendonly"] == "yes"
    assert cache["--maxmemory-policy"] in ("volatile-lru", "allkeys-lru", "volatile-lfu")
    assert jobs["--maxmemory-policy"] == "noeviction"  # job data is never evicted
    for service in ("redis", "redis-jobs"):
        assert SERVICES[service]["deploy"]["resources"]["limits"]["memory"]
    for service in ("router", "worker"):
        env = SERVICES[service]["environment"]
        assert (env["REDIS_URL"], env["JOBS_REDIS_URL"]) == ("redis://redis:6379/0", "redis://redis-jobs:6379/0")


def test_workers_scale_and_stop_gracefully():
    worker = SERVICES["worker"]
    assert worker["command"] == ["python", "-m", "router.jobs.worker"]
    assert worker["image"] == SERVICES["router"]["image"] and worker["deploy"]["replicas"] >= 1
    assert worker["stop_grace_period"] and worker["read_only"] is True


def test_gpu_override_reserves_a_gpu():
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    devices = gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_nginx_balances_the_router_service():
    conf = NGINX_CONF.read_text()
    upstream = re.search(r"upstream routers \{(.*?)\}", conf, re.S).group(1)
    assert "least_conn;" in upstream
    assert re.search(r"server router:8080 resolve", upstream)  # Compose's service name and port
    assert "resolver 127.0.0.11" in conf  # Docker's DNS: scaling needs no reload
    assert "proxy_pass http://routers;" in conf
    assert "proxy_next_upstream error timeout" in conf
    assert "proxy_set_header X-Request-ID $req_id;" in conf
    assert re.search(r"client_max_body_size \d+m;", conf)
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert directive in conf
    assert "nginx.conf:/etc/nginx/nginx.conf:ro" in " ".join(SERVICES["nginx"]["volumes"])


def test_rendered_nginx_conf_passes_nginx_t(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(NGINX_CONF.read_text(), [18081, 18082, 18083], 18080, tmp_path))
    out = subprocess.run([shutil.which("nginx") or "nginx", "-t", "-e", str(tmp_path / "error.log"),
                          "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = conf.read_text()
    assert text.count("server 127.0.0.1:1808") == 3 and "resolver" not in text and "least_conn;" in text


def test_prometheus_scrapes_triton_and_every_router(tmp_path):
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["triton"]["static_configs"] == [{"targets": ["triton:8002"]}]
    assert jobs["router"]["dns_sd_configs"] == [{"names": ["router"], "type": "A", "port": 8080,
                                                 "refresh_interval": "15s"}]
    for name, text in (("repo.yml", PROMETHEUS_YML.read_text()),
                       ("rendered.yml", render_prometheus(PROMETHEUS_YML.read_text(), "127.0.0.1:8002",
                                                          ["127.0.0.1:8081"], "1s"))):
        (tmp_path / name).write_text(text)
        out = subprocess.run([shutil.which("promtool") or "promtool", "check", "config", str(tmp_path / name)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_slim_multi_stage_non_root_with_a_health_check():
    text = (ROOT / "Dockerfile.router").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.M)
    instructions = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"torch|onnx", instructions)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :] [:4] == ["*", "!pyproject.toml", "!README.md", "!router/"]


def test_the_router_runs_without_training_dependencies():
    """What the image installs (the base dependencies) is enough: importing
    the app with torch, onnx, onnxruntime and scikit-learn blocked works."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'sklearn', 'onnxscript', 'pytriton'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from router.edge.app import create_app
from router.settings import Settings
create_app(Settings(_env_file=None))
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def _k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomize(base: Path) -> list[dict]:
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs = []
    for res in kust.get("resources", []):
        target = (base / res).resolve()
        docs += _kustomize(target) if target.is_dir() else _k8s_docs(target)
    for patch in kust.get("patches", []):
        (p,) = _k8s_docs(base / patch["path"])
        match = [d for d in docs if d["kind"] == p["kind"] and d["metadata"]["name"] == p["metadata"]["name"]]
        assert match, f"patch {patch['path']} targets nothing"
        _merge(match[0], p)
    return docs


def _merge(into: dict, patch: dict) -> None:
    """Strategic-merge for what the overlays use: maps, and lists keyed by name."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list) and all("name" in v for v in value):
            for item in value:
                same = [x for x in into[key] if x.get("name") == item["name"]]
                _merge(same[0], item) if same else into[key].append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kubernetes_manifests_validate(overlay):
    docs = _kustomize(K8S / overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "triton"), ("Service", "triton"), ("Deployment", "router"), ("Service", "router"),
            ("HorizontalPodAutoscaler", "router"), ("PodDisruptionBudget", "router"), ("StatefulSet", "redis"),
            ("Service", "redis"), ("StatefulSet", "redis-jobs"), ("Deployment", "worker"),
            ("Ingress", "router"), ("PersistentVolumeClaim", "model-repository")} <= kinds
    triton = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == ("1" if overlay == "overlays/gpu" else None)


def test_router_deployment_fits_its_autoscaler_and_budget():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _kustomize(K8S / "base")}
    deploy, hpa, pdb = (docs[("Deployment", "router")], docs[("HorizontalPodAutoscaler", "router")],
                        docs[("PodDisruptionBudget", "router")])
    assert hpa["spec"]["scaleTargetRef"]["name"] == "router"
    assert hpa["spec"]["minReplicas"] >= deploy["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
