"""Compose, Dockerfile, nginx, Prometheus and Kubernetes files, checked
without Docker or a cluster: schemas, the topology's promises, the hardening
(unprivileged read-only containers, secrets from files, Redis ACL users,
Triton's restricted repository API, network policies), and real `nginx -t` /
`promtool` on what the loopback topology renders. Container start scripts run
here against stand-in programs and secret files."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shlex
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
REDIS_ACL = ROOT / "deploy" / "redis"
SECRETS = ROOT / "deploy" / "secrets"
SECRET_NAMES = ("redis_router_password", "redis_jobs_password", "redis_admin_password", "triton_admin_key",
                "router_api_keys")
# Each secret's file in deploy/secrets/ (Compose mounts it at /run/secrets/<name>).
SECRET_FILES = {name: name for name in SECRET_NAMES} | {"router_api_keys": "router_api_keys.json"}
API_KEYS_FILE = "/run/secrets/router_api_keys"
ADMIN_HEADER = "triton-admin-key"
# Triton's restricted API groups (--http-restricted-api / --grpc-restricted-protocol).
TRITON_API_GROUPS = {"health", "metadata", "inference", "shared-memory", "model-config", "model-repository",
                     "statistics", "trace", "logging"}
RESTRICTED = "model-repository,shared-memory,trace,logging"


def _script(service: str) -> str:
    """A service's `sh -ec SCRIPT` command as the shell sees it (Compose turns `$$` into `$`)."""
    command = SERVICES[service]["command"]
    assert command[:2] == ["sh", "-ec"] and len(command) == 3, command
    return command[2].replace("$$", "$")


def _api_keys_file(path: Path) -> str:
    """An API_KEYS_FILE as deploy/make-secrets.sh makes it: one admin key `ops`; returns the key."""
    from router import keys

    key = keys.new_key()
    path.write_text(json.dumps([keys.entry("ops", key, ["admin"], None)]))
    return key


def _fake_secrets(tmp_path: Path) -> dict[str, str]:
    """Secret files as `openssl rand -hex 32 > file` makes them (with a newline),
    named as Compose mounts them; the API keys' file holds an entry."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    values = {}
    for name in SECRET_NAMES:
        if name == "router_api_keys":
            _api_keys_file(folder / name)
            values[name] = (folder / name).read_text()
            continue
        values[name] = hashlib.sha256(name.encode()).hexdigest()
        (folder / name).write_text(values[name] + "\n")
    return values


def _settings_from(env: dict[str, str], api_keys_file: Path, monkeypatch):
    """The router's Settings from a service's environment, its API_KEYS_FILE at `api_keys_file`."""
    from router.settings import Settings

    for name in [n for n in os.environ if n.upper() in ("API_KEYS", "API_KEYS_FILE", "ANONYMOUS_SCOPES",
                                                         "METRICS_PUBLIC")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    assert env["API_KEYS_FILE"] == API_KEYS_FILE
    monkeypatch.setenv("API_KEYS_FILE", str(api_keys_file))
    return Settings(_env_file=None)


def _check_keys_from_the_file(settings, admin_key: str) -> None:
    """Keys on, the file's admin key is `ops` with the admin scope, and anonymous
    requests may predict and be scraped, never administer or submit jobs."""
    from router.edge.auth import KeyRing

    ring = KeyRing.from_settings(settings)
    assert settings.auth_enabled and ring.enabled
    assert ring.authenticate(admin_key).name == "ops" and "admin" in ring.authenticate(admin_key).scopes
    assert settings.anonymous() == {"predict", "metrics"}


def _run_with_fakes(tmp_path: Path, text: str, programs: list[str]) -> subprocess.CompletedProcess:
    """Run a container's shell script here: /run/secrets/ is tmp_path/secrets/, and
    each of `programs` is a stand-in that records its argv and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, "
              "open(os.environ['FAKE_OUT'], 'w'))")
    for program in programs:
        fake = bin_dir / program
        fake.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(record)} \"$@\"\n")
        fake.chmod(0o755)
    text = text.replace("/run/secrets/", f"{tmp_path}/secrets/")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": str(tmp_path / "out.json"),
           "SECRETS_DIR": str(tmp_path / "secrets"), "ACL_DIR": str(tmp_path)}
    return subprocess.run(["sh", "-ec", text], env=env, capture_output=True, text=True, timeout=30)


def _recorded(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out.json").read_text())


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
    assert {"--model-control-mode=explicit", "--load-model=*"} <= set(shlex.split(_script("triton")))
    assert all((ROOT / "model_repository" / m / "1" / "model.onnx").is_file() for m in ("sentiment", "digits"))


def test_router_replicas_settings_and_read_only_root():
    router = SERVICES["router"]
    assert router["deploy"]["replicas"] == 3
    assert router["read_only"] is True and "/tmp" in router["tmpfs"]
    assert router["build"]["dockerfile"] == "Dockerfile.router"
    assert router["env_file"] == [{"path": ".env", "required": False}]
    env = router["environment"]
    assert (env["TRITON_GRPC_URL"], env["PORT"]) == ("triton:8001", "8080")
    assert "REDIS_URL" not in env  # it carries a password: built from the secret file


def _redis_flags(service: str) -> dict[str, str]:
    command = SERVICES[service]["command"]
    return dict(zip(command[0::2], command[1::2]))


def test_redis_keeps_job_data_from_eviction():
    cache, jobs = _redis_flags("redis"), _redis_flags("redis-jobs")
    assert cache["--appendonly"] == jobs["--appendonly"] == "yes"
    assert cache["--maxmemory-policy"] in ("volatile-lru", "allkeys-lru", "volatile-lfu")
    assert jobs["--maxmemory-policy"] == "noeviction"  # job data is never evicted
    for service in ("redis", "redis-jobs"):
        assert SERVICES[service]["deploy"]["resources"]["limits"]["memory"]


def test_workers_scale_and_stop_gracefully():
    worker = SERVICES["worker"]
    assert _script("worker").rstrip().endswith("exec python -m router.jobs.worker")
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
            ("Ingress", "router"), ("PersistentVolumeClaim", "model-repository"), ("ConfigMap", "redis-acl"),
            ("NetworkPolicy", "default-deny"), ("NetworkPolicy", "allow-dns")} <= kinds
    assert not [d for d in docs if d["kind"] == "Secret"]  # secrets come from deploy/secrets, never the base
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


# --- Hardening: Compose -------------------------------------------------------------------

def _compose_services_with_gpu() -> dict[str, dict]:
    merged = copy.deepcopy(SERVICES)
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    for name, service in gpu["services"].items():
        _merge(merged[name], service)
    return merged


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_compose_service_is_unprivileged_with_a_read_only_root(name):
    service = _compose_services_with_gpu()[name]
    assert "no-new-privileges:true" in service.get("security_opt", []), name
    assert service.get("cap_drop") == ["ALL"] and not service.get("cap_add"), name
    assert service.get("read_only") is True, name
    assert not service.get("privileged") and service.get("network_mode") != "host" and service.get("pid") != "host"
    uid = str(service.get("user", "")).split(":")[0]
    assert uid and uid not in ("0", "root"), f"{name} runs as root"
    assert not service.get("devices") and not service.get("volumes_from")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        assert not source.startswith("/") and "docker.sock" not in volume, f"{name} mounts the host's {source}"
        if source.startswith("./"):
            assert volume.endswith(":ro"), f"{name} mounts {source} writable"


def test_writable_paths_are_tmpfs_or_volumes():
    # where each image writes when its root filesystem is read-only
    assert {"/tmp", "/var/cache/nginx"} <= set(SERVICES["nginx"]["tmpfs"])
    assert SERVICES["nginx"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"] <= 80  # :80 as uid 101
    for name in ("triton", "router", "worker", "redis", "redis-jobs"):
        assert "/tmp" in SERVICES[name]["tmpfs"], name
    assert "redis-data:/data" in SERVICES["redis"]["volumes"]
    assert "redis-jobs-data:/data" in SERVICES["redis-jobs"]["volumes"]
    assert "prometheus-data:/prometheus" in SERVICES["prometheus"]["volumes"]
    users = {name: SERVICES[name]["user"] for name in SERVICES}
    assert users["redis"] == users["redis-jobs"] == "999:1000" and users["triton"] == "1000:1000"
    assert users["router"] == users["worker"] == "10001:10001"


def test_compose_commands_never_interpolate_the_host_environment():
    """`$$` is a literal `$` for Compose; a lone `$` would be filled in from the host."""
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint"):
            for part in service.get(key) or []:
                assert "$" not in part.replace("$$", ""), f"{name}.{key}: {part!r}"
        for part in service["healthcheck"]["test"]:
            assert "$" not in part.replace("$$", ""), f"{name}.healthcheck: {part!r}"


# --- Secrets: Compose ---------------------------------------------------------------------

def test_compose_secrets_are_files_in_the_ignored_folder():
    kust = yaml.safe_load((SECRETS / "kustomization.yaml").read_text())
    generated = {f for gen in kust["secretGenerator"] for f in gen["files"]}
    assert set(COMPOSE["secrets"]) == set(SECRET_NAMES) and generated == set(SECRET_FILES.values())
    for name, secret in COMPOSE["secrets"].items():
        assert secret == {"file": f"./deploy/secrets/{SECRET_FILES[name]}"}
    used = {s for service in SERVICES.values() for s in service.get("secrets", [])}
    assert used == set(SECRET_NAMES)
    keys = {"redis_router_password", "redis_jobs_password", "triton_admin_key", "router_api_keys"}
    wanted = {"triton": {"triton_admin_key"},
              "router": keys,
              "worker": keys,
              "redis": {"redis_router_password", "redis_admin_password"},
              "redis-jobs": {"redis_jobs_password", "redis_admin_password"}}
    assert {n: set(s["secrets"]) for n, s in SERVICES.items() if s.get("secrets")} == wanted


@pytest.mark.parametrize("service,module", [("router", "router"), ("worker", "router.jobs.worker")])
def test_router_and_worker_get_their_secret_settings_from_the_files(tmp_path, service, module):
    values = _fake_secrets(tmp_path)
    out = _run_with_fakes(tmp_path, _script(service), ["python"])
    assert out.returncode == 0, out.stderr
    got = _recorded(tmp_path)
    assert got["argv"] == ["-m", module]
    env = got["env"]
    assert env["REDIS_URL"] == f"redis://router:{values['redis_router_password']}@redis:6379/0"
    assert env["JOBS_REDIS_URL"] == f"redis://jobs:{values['redis_jobs_password']}@redis-jobs:6379/0"
    assert env["TRITON_ADMIN_KEY"] == values["triton_admin_key"]
    assert SERVICES[service]["environment"]["TRITON_ADMIN_HEADER"] == ADMIN_HEADER


@pytest.mark.parametrize("service", ["router", "worker"])
def test_compose_router_and_worker_take_their_api_keys_from_the_secret(tmp_path, monkeypatch, service):
    env = SERVICES[service]["environment"]
    assert env["API_KEYS_FILE"] == API_KEYS_FILE and "router_api_keys" in SERVICES[service]["secrets"]
    assert "API_KEYS" not in env  # entries only in the secret file
    assert env["ANONYMOUS_SCOPES"] == SERVICES["router"]["environment"]["ANONYMOUS_SCOPES"]
    key = _api_keys_file(tmp_path / "router_api_keys")
    _check_keys_from_the_file(_settings_from(env, tmp_path / "router_api_keys", monkeypatch), key)


@pytest.mark.parametrize("service", ["router", "worker"])
def test_a_missing_api_keys_file_stops_the_router_at_start(tmp_path, monkeypatch, service):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="API_KEYS_FILE"):
        _settings_from(SERVICES[service]["environment"], tmp_path / "absent", monkeypatch)


@pytest.mark.parametrize("service,program", [("router", "python"), ("worker", "python"), ("triton", "tritonserver")])
def test_a_missing_secret_stops_the_container(tmp_path, service, program):
    (tmp_path / "secrets").mkdir()
    out = _run_with_fakes(tmp_path, _script(service), [program])
    assert out.returncode != 0 and not (tmp_path / "out.json").exists()


# --- Triton: repository and model-control APIs behind the admin header -------------------

def _restricted_flags(args: list[str]) -> dict[str, tuple[set[str], str, str]]:
    """{flag: (api groups, header, value)} for --http-restricted-api / --grpc-restricted-protocol."""
    flags = {}
    for arg in args:
        m = re.fullmatch(r"(--http-restricted-api|--grpc-restricted-protocol)=([a-z,-]+):([a-z0-9-]+)=(.+)", arg)
        if m:
            assert m.group(1) not in flags, f"{m.group(1)} given twice"
            flags[m.group(1)] = (set(m.group(2).split(",")), m.group(3), m.group(4))
    return flags


def _check_restricted(args: list[str], key: str) -> None:
    flags = _restricted_flags(args)
    assert set(flags) == {"--http-restricted-api", "--grpc-restricted-protocol"}, args
    for groups, header, value in flags.values():
        assert groups == set(RESTRICTED.split(",")) and groups <= TRITON_API_GROUPS
        assert "inference" not in groups and "health" not in groups  # serving and probes stay open
        assert (header, value) == (ADMIN_HEADER, key)


def test_compose_triton_restricts_the_repository_api_with_the_secret_key(tmp_path):
    values = _fake_secrets(tmp_path)
    out = _run_with_fakes(tmp_path, _script("triton"), ["tritonserver"])
    assert out.returncode == 0, out.stderr
    args = _recorded(tmp_path)["argv"]
    assert {"--model-repository=/models", "--model-control-mode=explicit", "--load-model=*"} <= set(args)
    _check_restricted(args, values["triton_admin_key"])
    assert values["triton_admin_key"] not in (ROOT / "docker-compose.yml").read_text()


def _expand_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's env as the kubelet resolves it: secretKeyRef values, then
    $(NAME) from variables defined earlier in the list."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
    return env


def _fake_k8s_secrets() -> dict[str, dict[str, str]]:
    kust = yaml.safe_load((SECRETS / "kustomization.yaml").read_text())
    return {gen["name"]: {f: f"value-of-{f}" for f in gen["files"]} for gen in kust["secretGenerator"]}


def _workloads(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")}


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kubernetes_triton_restricts_the_repository_api_with_the_secret_key(overlay):
    secrets = _fake_k8s_secrets()
    triton = _workloads(_kustomize(K8S / overlay))["triton"]["spec"]["template"]["spec"]["containers"][0]
    env = _expand_env(triton, secrets)
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in triton["args"]]
    _check_restricted(args, secrets["triton-admin"]["triton_admin_key"])


@pytest.mark.parametrize("name", ["router", "worker"])
def test_kubernetes_router_and_worker_get_secret_urls_and_the_admin_key(name):
    docs = _kustomize(K8S / "base")
    secrets = _fake_k8s_secrets()
    container = _workloads(docs)[name]["spec"]["template"]["spec"]["containers"][0]
    env = _expand_env(container, secrets)
    redis = secrets["redis-credentials"]
    assert env["REDIS_URL"] == f"redis://router:{redis['redis_router_password']}@redis:6379/0"
    assert env["JOBS_REDIS_URL"] == f"redis://jobs:{redis['redis_jobs_password']}@redis-jobs:6379/0"
    assert env["TRITON_ADMIN_KEY"] == secrets["triton-admin"]["triton_admin_key"]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "router")
    assert {"configMapRef": {"name": "router"}} in container["envFrom"]
    assert config["data"]["TRITON_ADMIN_HEADER"] == ADMIN_HEADER
    assert not {"REDIS_URL", "JOBS_REDIS_URL", "TRITON_ADMIN_KEY"} & set(config["data"])


@pytest.mark.parametrize("name", ["router", "worker"])
def test_kubernetes_router_and_worker_take_their_api_keys_from_the_secret(tmp_path, monkeypatch, name):
    docs = _kustomize(K8S / "base")
    pod = _workloads(docs)[name]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "router")["data"]
    assert {"configMapRef": {"name": "router"}} in container["envFrom"]
    assert config["API_KEYS_FILE"] == API_KEYS_FILE
    assert config["ANONYMOUS_SCOPES"] == SERVICES["router"]["environment"]["ANONYMOUS_SCOPES"]
    assert "API_KEYS" not in config and not [v for v in container.get("env", []) if v["name"].startswith("API_KEYS")]
    # the file: one item of the router-api-keys Secret, mounted read-only where API_KEYS_FILE points
    folder, file = API_KEYS_FILE.rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    assert mount.get("readOnly") is True and "subPath" not in mount  # a subPath mount never sees an update
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert volume == {"secretName": "router-api-keys", "defaultMode": 0o440,
                      "items": [{"key": "router_api_keys.json", "path": file}]}
    # 0440, root-owned: readable through the pod's fsGroup, which is the container's group
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    kust = yaml.safe_load((SECRETS / "kustomization.yaml").read_text())
    assert {"name": "router-api-keys", "type": "Opaque", "files": ["router_api_keys.json"]} in kust["secretGenerator"]
    key = _api_keys_file(tmp_path / "router_api_keys.json")
    _check_keys_from_the_file(_settings_from(config, tmp_path / "router_api_keys.json", monkeypatch), key)


# --- Redis: ACL users from secrets, default user off --------------------------------------

def _acl_users(template: str) -> dict[str, list[str]]:
    users = {}
    for line in (REDIS_ACL / template).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = line.split()
            assert words[0] == "user" and words[1] not in users
            users[words[1]] = words[2:]
    return users


def _placeholders(template: str) -> set[str]:
    """The secret files a template's users take their passwords from."""
    return {w[2:-1] for rules in _acl_users(template).values() for w in rules if w.startswith("#{")}


def _acl_scopes(rules: list[str]) -> list[tuple[set[str], set[str], set[str]]]:
    """(key patterns, allowed commands, channel patterns) of the root permissions and of each selector."""
    text = " ".join(rules)
    selectors = re.findall(r"\(([^)]*)\)", text)
    scopes = []
    for part in [re.sub(r"\([^)]*\)", "", text)] + selectors:
        words = part.split()
        scopes.append(({w[1:] for w in words if w.startswith("~")},
                       {w[1:] for w in words if w.startswith("+")},
                       {w[1:] for w in words if w.startswith("&")}))
    return scopes


@pytest.mark.parametrize("template", ["cache.acl", "jobs.acl"])
def test_redis_acl_has_the_default_user_off_and_no_password_in_clear(template):
    users = _acl_users(template)
    assert users["default"][0] == "off" and "nopass" not in users["default"]
    assert not [w for w in users["default"] if w.startswith(("+", "~", "%", "&", "#", ">"))]
    for name, rules in users.items():
        assert not [w for w in rules if w.startswith((">", "<", "!")) or w in ("nopass", "allkeys", "allcommands")]
        passwords = [w for w in rules if w.startswith("#")]
        if name != "default":
            assert rules[0] == "on" and len(passwords) == 1, name
            assert re.fullmatch(r"#\{(redis_\w+_password)\}", passwords[0]).group(1) in SECRET_NAMES
    assert users["admin"][2:] == ["~*", "&*", "+@all"]


def test_redis_router_user_is_limited_to_the_cache_and_rate_limit_keys():
    users = _acl_users("cache.acl")
    assert set(users) == {"default", "admin", "router"}
    rules = users["router"]
    assert rules[1] == "#{redis_router_password}" and "-@all" in rules and "resetchannels" in rules
    assert not [w for w in rules if w.startswith(("+@", "&", "%"))]
    (root_keys, root_cmds, root_channels), (limit_keys, limit_cmds, limit_channels) = _acl_scopes(rules)
    assert not root_channels and not limit_channels
    assert root_keys == {"pred:*"} and root_cmds == {"get", "mget", "set", "ping", "client|setinfo"}
    # the rate limiter: `limits`'s Redis storage under CACHE_NAMESPACE:ratelimit, its
    # sliding-window counter scripts (GET, SET PX, PTTL, RENAME, EXISTS, INCRBY) and clear (DEL)
    assert limit_keys == {"pred:ratelimit:*"}
    assert {"get", "set", "del", "exists", "incrby", "pttl", "rename", "evalsha", "script|load"} <= limit_cmds
    assert not DANGEROUS & (root_cmds | limit_cmds)


DANGEROUS = {"keys", "scan", "flushall", "flushdb", "config", "debug", "shutdown", "acl", "module", "monitor",
             "client|kill", "client|list", "migrate", "restore", "save", "bgsave", "replicaof", "slaveof", "sync",
             "psync", "function|load", "script|flush", "subscribe", "psubscribe", "publish"}


def test_redis_jobs_user_is_limited_to_the_job_keys():
    users = _acl_users("jobs.acl")
    assert set(users) == {"default", "admin", "jobs"}
    rules = users["jobs"]
    assert rules[1] == "#{redis_jobs_password}" and "-@all" in rules and "resetchannels" in rules
    assert not [w for w in rules if w.startswith(("+@", "%", "&*", "(&*", "~*", "(~*"))]
    (keys, commands, channels), (control_keys, control_commands, control_channels) = _acl_scopes(rules)
    assert keys == {"jobs:*"} and not channels
    # router/jobs/store.py: the submit script (HMGET, EXISTS, XLEN, XGROUP CREATE, HSET, EXPIRE,
    # XADD), reads and claims, MULTI/EXEC pipelines, the worker's trim of acknowledged entries
    assert {"hmget", "exists", "xlen", "xgroup|create", "hset", "expire", "xadd", "xreadgroup", "xautoclaim",
            "xack", "xdel", "hincrby", "hdel", "xinfo|groups", "xpending", "xtrim", "multi", "exec",
            "evalsha", "script|load", "ping"} <= commands
    assert not DANGEROUS & commands
    # router/control/: rollout states under WATCH/MULTI/EXEC, listed from a set and read with MGET, announced on
    # one channel; figures as hash counters with a TTL; the controller's lease scripts. Only control:*.
    assert control_keys == {"control:*"} and control_channels == {"control:rollouts"}
    assert control_commands == {"get", "set", "mget", "sadd", "smembers", "watch", "unwatch", "publish", "subscribe",
                                "unsubscribe", "hincrby", "hincrbyfloat", "hgetall", "expire", "pexpire", "del",
                                "eval", "evalsha"}
    # no SCAN: this user cannot list the instance's key names
    assert DANGEROUS & control_commands == {"publish", "subscribe"}


@pytest.mark.parametrize("service,template", [("redis", "cache.acl"), ("redis-jobs", "jobs.acl")])
def test_compose_redis_starts_with_the_acl_file_made_from_the_secrets(tmp_path, service, template):
    redis = SERVICES[service]
    assert redis["entrypoint"] == ["sh", "/etc/redis-acl/entrypoint.sh", f"/etc/redis-acl/{template}"]
    assert "./deploy/redis:/etc/redis-acl:ro" in redis["volumes"]
    values = _fake_secrets(tmp_path)
    script = shlex.join(["sh", str(REDIS_ACL / "entrypoint.sh"), str(REDIS_ACL / template)] + redis["command"])
    out = _run_with_fakes(tmp_path, script, ["redis-server"])
    assert out.returncode == 0, out.stderr
    argv = _recorded(tmp_path)["argv"]
    acl_file = tmp_path / "users.acl"
    assert argv == ["--aclfile", str(acl_file)] + redis["command"]
    acl = acl_file.read_text()
    assert oct(acl_file.stat().st_mode & 0o777) == "0o600"
    assert "#{" not in acl and not [ln for ln in acl.splitlines() if ln.startswith("#") or not ln.strip()]
    for name, value in values.items():
        assert value not in acl
        if name in _placeholders(template):
            assert "#" + hashlib.sha256(value.encode()).hexdigest() in acl
    assert acl.splitlines()[0].startswith("user default off")


def test_redis_entrypoint_refuses_a_missing_or_empty_secret(tmp_path):
    values = _fake_secrets(tmp_path)
    (tmp_path / "secrets" / "redis_admin_password").write_text("\n")
    script = shlex.join(["sh", str(REDIS_ACL / "entrypoint.sh"), str(REDIS_ACL / "cache.acl")])
    out = _run_with_fakes(tmp_path, script, ["redis-server"])
    assert out.returncode != 0 and "redis_admin_password" in out.stderr
    (tmp_path / "secrets" / "redis_admin_password").unlink()
    out = _run_with_fakes(tmp_path, script, ["redis-server"])
    assert out.returncode != 0 and not (tmp_path / "out.json").exists() and values


def test_redis_health_checks_authenticate_as_the_application_user():
    for service, user, secret in (("redis", "router", "redis_router_password"),
                                  ("redis-jobs", "jobs", "redis_jobs_password")):
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert f"/run/secrets/{secret}" in test[1] and f"--user {user}" in test[1] and "grep -q PONG" in test[1]


def test_kubernetes_redis_uses_the_same_acl_templates_and_the_secret():
    docs = _kustomize(K8S / "base")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "redis-acl")
    assert set(config["data"]) == {"entrypoint.sh", "cache.acl", "jobs.acl"}
    for key, text in config["data"].items():
        assert text == (REDIS_ACL / key).read_text(), f"redis-acl ConfigMap {key} differs from deploy/redis/{key}"
    secrets = _fake_k8s_secrets()
    for name, template, user, secret in (("redis", "cache.acl", "router", "redis_router_password"),
                                         ("redis-jobs", "jobs.acl", "jobs", "redis_jobs_password")):
        pod = _workloads(docs)[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["command"] == ["sh", "/etc/redis-acl/entrypoint.sh", f"/etc/redis-acl/{template}"]
        assert container["args"] == SERVICES[name]["command"][:2] + container["args"][2:]
        assert _flags(container["args"])["--maxmemory-policy"] == _redis_flags(name)["--maxmemory-policy"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/etc/redis-acl"]["name"]]["configMap"] == {"name": "redis-acl"}
        secret_volume = volumes[mounts["/run/secrets"]["name"]]["secret"]
        needed = _placeholders(template)
        assert {i["key"] for i in secret_volume["items"]} == needed
        assert needed <= set(secrets[secret_volume["secretName"]])
        assert secret_volume["defaultMode"] == 0o440
        for probe in ("readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["sh", "-c"] and f"--user {user}" in command[2] and secret in command[2]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(zip(args[0::2], args[1::2]))


# --- Hardening: Kubernetes ----------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI",
                      "csi", "ephemeral"}
RUN_AS = {"router": 10001, "worker": 10001, "triton": 1000, "redis": 999, "redis-jobs": 999}


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_every_kubernetes_container_is_unprivileged_with_a_read_only_root(overlay):
    workloads = _workloads(_kustomize(K8S / overlay))
    assert set(workloads) == set(RUN_AS)
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC")), name
        pod_ctx = pod.get("securityContext", {})
        assert not pod_ctx.get("sysctls"), name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, f"{name}: volume {volume}"
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container.get("securityContext", {})
            effective = {**pod_ctx, **ctx}
            where = f"{name}/{container['name']}"
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser") == RUN_AS[name], where
            assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("capabilities") == {"drop": ["ALL"]}, where
            assert not ctx.get("privileged") and ctx.get("procMount") in (None, "Default"), where
            assert not [p for p in container.get("ports", []) if p.get("hostPort")], where
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: no writable /tmp"


def test_the_namespace_enforces_the_restricted_pod_security_standard():
    (namespace,) = [d for d in _kustomize(K8S / "base") if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- NetworkPolicies ----------------------------------------------------------------------

NAMESPACE = "triton-canary"
NAMESPACES = {ns: {"kubernetes.io/metadata.name": ns}
              for ns in (NAMESPACE, "ingress-nginx", "monitoring", "kube-system", "default")}
PODS = {  # (namespace, labels)
    "router": (NAMESPACE, {"app.kubernetes.io/name": "router"}),
    "worker": (NAMESPACE, {"app.kubernetes.io/name": "worker"}),
    "triton": (NAMESPACE, {"app.kubernetes.io/name": "triton"}),
    "redis": (NAMESPACE, {"app.kubernetes.io/name": "redis"}),
    "redis-jobs": (NAMESPACE, {"app.kubernetes.io/name": "redis-jobs"}),
    "ingress": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "stranger": ("default", {"app.kubernetes.io/name": "router"}),
    "neighbour": (NAMESPACE, {"app.kubernetes.io/name": "debug"}),
}


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator knows matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict, policy_ns: str, pod: str) -> bool:
    assert "ipBlock" not in peer
    ns, labels = PODS[pod]
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], NAMESPACES[ns]):
            return False
    elif ns != policy_ns:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    return ports is None or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def _allowed_by(policies: list[dict], pod: str, direction: str, peer: str, port: int, protocol: str) -> bool:
    ns, labels = PODS[pod]
    kind, peers = ("Ingress", "from") if direction == "ingress" else ("Egress", "to")
    selecting = [p for p in policies if ns == NAMESPACE and _selects(p["spec"]["podSelector"], labels)
                 and kind in p["spec"]["policyTypes"]]
    if not selecting:
        return True  # not isolated in this direction
    return any(_port_matches(rule.get("ports"), port, protocol)
               and (rule.get(peers) is None or any(_peer_matches(x, NAMESPACE, peer) for x in rule[peers]))
               for p in selecting for rule in p["spec"].get(direction, []))


def _connects(policies: list[dict], src: str, dst: str, port: int, protocol: str = "TCP") -> bool:
    return (_allowed_by(policies, src, "egress", dst, port, protocol)
            and _allowed_by(policies, dst, "ingress", src, port, protocol))


def test_network_policies_allow_only_the_intended_paths():
    docs = _kustomize(K8S / "base")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for pod in ("router", "worker", "triton", "redis", "redis-jobs", "neighbour"):  # DNS resolves everywhere
        assert _connects(policies, pod, "dns", 53, "UDP") and _connects(policies, pod, "dns", 53, "TCP"), pod
    allowed = {("router", "triton", 8000), ("router", "triton", 8001), ("worker", "triton", 8000),
               ("worker", "triton", 8001), ("router", "redis", 6379), ("router", "redis-jobs", 6379),
               ("worker", "redis", 6379), ("worker", "redis-jobs", 6379), ("ingress", "router", 8080),
               ("prometheus", "router", 8080), ("prometheus", "triton", 8002)}
    sources = ("router", "worker", "triton", "redis", "redis-jobs", "ingress", "prometheus", "stranger", "neighbour")
    targets = {"router": (8080,), "worker": (8080,), "triton": (8000, 8001, 8002), "redis": (6379,),
               "redis-jobs": (6379,), "neighbour": (8080,)}
    for src in sources:
        for dst, ports in targets.items():
            for port in ports:
                if src != dst:
                    want = (src, dst, port) in allowed
                    assert _connects(policies, src, dst, port) == want, (src, dst, port)
                    # each side enforces it alone: the target's ingress, and the source's egress
                    assert _allowed_by(policies, dst, "ingress", src, port, "TCP") == want, (src, dst, port)
                    if PODS[src][0] == NAMESPACE:
                        assert _allowed_by(policies, src, "egress", dst, port, "TCP") == want, (src, dst, port)
    # nothing in the namespace reaches out of it but DNS
    for pod in ("router", "worker", "triton", "redis", "redis-jobs"):
        assert not _connects(policies, pod, "stranger", 443) and not _connects(policies, pod, "prometheus", 9090)


def test_network_policy_selectors_match_the_workloads():
    docs = _kustomize(K8S / "base")
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in _workloads(docs).items()}
    for name, (ns, pod_labels) in PODS.items():
        if name in labels:
            assert _selects({"matchLabels": pod_labels}, labels[name]), name
    ports = {name: {p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
             for name, w in _workloads(docs).items()}
    assert ports["triton"] == {8000, 8001, 8002} and ports["router"] == {8080}
    assert ports["redis"] == ports["redis-jobs"] == {6379}


# --- The secret files: deploy/make-secrets.sh ---------------------------------------------

def _make_secrets(folder: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(folder)],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_make_secrets_makes_every_secret_file_once(tmp_path, monkeypatch):
    folder = tmp_path / "secrets"
    _make_secrets(folder)
    made = {f.name: f.read_text() for f in folder.iterdir()}
    assert set(made) == set(SECRET_FILES.values()) | {"router_admin_key"}
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for name in made:  # Compose mounts the host files: the containers' users read them; the admin key stays private
        want = "0o600" if name == "router_admin_key" else "0o644"
        assert oct((folder / name).stat().st_mode & 0o777) == want, name
    passwords = [made[SECRET_FILES[n]] for n in SECRET_NAMES if n != "router_api_keys"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", p) for p in passwords) and len(set(passwords)) == len(passwords)
    key = made["router_admin_key"]
    assert re.fullmatch(r"rk_[A-Za-z0-9_-]{43}", key)
    assert json.loads(made["router_api_keys.json"]) == [
        {"name": "ops", "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": ["admin"]}]
    assert key not in made["router_api_keys.json"]
    _check_keys_from_the_file(_settings_from(SERVICES["router"]["environment"], folder / "router_api_keys.json",
                                             monkeypatch), key)
    # again: nothing is remade, so the deployed secrets and the operator's key stay valid
    _make_secrets(folder)
    assert {f.name: f.read_text() for f in folder.iterdir()} == made
    # the admin key itself reaches no container
    kust = yaml.safe_load((SECRETS / "kustomization.yaml").read_text())
    assert "router_admin_key" not in {f for gen in kust["secretGenerator"] for f in gen["files"]}
    assert "./deploy/secrets/router_admin_key" not in {s["file"] for s in COMPOSE["secrets"].values()}


def test_make_secrets_keeps_what_exists(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "redis_admin_password").write_text("chosen-by-the-operator")
    (folder / "router_api_keys.json").write_text("[]")
    _make_secrets(folder)
    assert (folder / "redis_admin_password").read_text() == "chosen-by-the-operator"
    assert (folder / "router_api_keys.json").read_text() == "[]"
    assert not (folder / "router_admin_key").exists()  # no key made for a file it did not write


# --- No secret in the repository ----------------------------------------------------------

def _committable(*paths: str) -> list[Path]:
    """Files git tracks or would add (untracked and not ignored) under `paths`."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def test_no_secret_value_is_committed():
    files = _committable("deploy", "docker-compose.yml", "docker-compose.gpu.yml", ".env.example")
    assert any(f.name == "kustomization.yaml" and f.parent == SECRETS for f in files)
    assert not [f for f in files if f.parent == SECRETS and f.name != "kustomization.yaml"]
    for path in files:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        assert not re.search(r"requirepass|masterauth", text, re.I), rel
        assert not re.search(r"^\s*user\s+\S+.*\s[><]\S", text, re.M), f"{rel}: an ACL password in clear"
        assert not re.search(r"\bnopass\b", text), rel
        for m in re.finditer(r"rediss?://([^:/@\s]*):([^@\s]*)@", text):
            assert m.group(2).startswith("$"), f"{rel}: a Redis URL with a literal password"
        assert not re.search(r"\b[0-9a-fA-F]{32,}\b", text), f"{rel}: a long hex string looks like a key"
        assert not re.search(r"(admin-key|restricted-api[^\n]*?)=[0-9a-zA-Z]{16,}\b", text), rel
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), f"{rel}: a Secret manifest"


def test_no_api_key_or_key_entry_is_committed():
    """Nowhere in the repository: a key as `python -m router.keys` makes it, an API_KEYS entry
    with a real hash, or a file named like the API keys' secret files."""
    files = _committable(".")
    assert files
    for path in files:
        rel = path.relative_to(ROOT)
        assert not re.fullmatch(r"router_api_keys.*|router_admin_key.*", path.name), rel
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # models and images
        assert not re.search(r"(?<![A-Za-z0-9_])rk_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", text), f"{rel}: an API key"
        assert not re.search(r"key_sha256[\"']?\s*[:=]\s*[\"']?[0-9a-fA-F]{64}", text), f"{rel}: an API_KEYS entry"


def test_secret_files_are_git_ignored():
    paths = ([f"deploy/secrets/{name}" for name in sorted(set(SECRET_NAMES) | set(SECRET_FILES.values()))]
             + ["deploy/secrets/router_admin_key", "deploy/secrets/anything-else"])
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == sorted(paths)
    out = subprocess.run(["git", "check-ignore", "--no-index", "deploy/secrets/kustomization.yaml"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1  # tracked: it names the files, holds no value


# --- With kubectl: the real kustomize build -----------------------------------------------

KUBECTL = shutil.which("kubectl")


def _kubectl_kustomize(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kubectl_kustomize_builds_what_the_tests_render(overlay):
    docs = _kubectl_kustomize(K8S / overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    mine = _kustomize(K8S / overlay)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in mine)
    assert all(d["metadata"].get("namespace") == "triton-canary" for d in docs if d["kind"] != "Namespace")
    triton = _workloads(docs)["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert _restricted_flags(triton["args"]) == _restricted_flags(
        _workloads(mine)["triton"]["spec"]["template"]["spec"]["containers"][0]["args"])


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
def test_the_secrets_kustomization_makes_what_the_manifests_reference(tmp_path):
    """From what deploy/make-secrets.sh makes: every Secret the workloads mount or read, and no more."""
    shutil.copy(SECRETS / "kustomization.yaml", tmp_path)
    _make_secrets(tmp_path)
    secrets = {d["metadata"]["name"]: d for d in _kubectl_kustomize(tmp_path)}
    values = {base64.b64decode(v).decode() for doc in secrets.values() for v in doc["data"].values()}
    assert (tmp_path / "router_admin_key").read_text() not in values  # the admin key itself stays out
    assert (tmp_path / "router_api_keys.json").read_text() in values
    for doc in secrets.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] == "Secret" and doc["metadata"]["namespace"] == "triton-canary"
    referenced = set()
    for workload in _workloads(_kustomize(K8S / "base")).values():
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for var in container.get("env", []):
                if "valueFrom" in var:
                    ref = var["valueFrom"]["secretKeyRef"]
                    referenced.add((ref["name"], ref["key"]))
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                referenced |= {(volume["secret"]["secretName"], i["key"]) for i in volume["secret"]["items"]}
    made = {(name, key) for name, doc in secrets.items() for key in doc["data"]}
    assert referenced == made


def test_the_routers_see_the_clients_address_and_nothing_a_client_claims():
    """Per-address rate limits: nginx overwrites X-Forwarded-For, and the routers trust it (only nginx reaches them)."""
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf and "$proxy_add_x_forwarded_for" not in conf
    router = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["router"]
    assert router["environment"]["FORWARDED_ALLOW_IPS"] == "*"
