"""The Compose topology on loopback: the repository's own nginx.conf and
prometheus.yml, rendered for local ports, in front of N router processes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from devstack.processes import ChildProcess, RouterProcess, http_ok, require

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _sub(pattern: str, repl: str, text: str) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if n != 1:
        raise ValueError(f"nginx.conf no longer matches {pattern!r}: the loopback rendering needs updating")
    return out


def render_nginx(conf: str, upstream_ports: list[int], listen_port: int, workdir: Path) -> str:
    """Compose's nginx.conf with Docker's DNS replaced by loopback replicas
    (Debian's nginx has no `resolve` upstream parameter) and its files in
    `workdir`. Everything else (balancing, retries, timeouts, limits, the
    request id) is kept as written."""
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=5s;\n" for p in upstream_ports)
    conf = _sub(r"^\s*resolver .*;\n", "", conf)
    conf = _sub(r"^\s*server router:8080 resolve( [^;]*)?;\n", servers, conf)
    conf = _sub(r"listen 80;", f"listen 127.0.0.1:{listen_port};", conf)
    conf = _sub(r"^pid .*;", f"pid {workdir}/nginx.pid;", conf)
    conf = _sub(r"^error_log .*;", f"error_log {workdir}/error.log warn;", conf)
    conf = _sub(r"access_log /dev/stdout json;", f"access_log {workdir}/access.log json;", conf)
    temp = "".join(f"    {kind}_temp_path {workdir}/{kind};\n" for kind in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return _sub(r"^http \{\n", "http {\n" + temp, conf)


def render_prometheus(text: str, triton_metrics: str, router_targets: list[str], interval: str) -> str:
    config = yaml.safe_load(text)
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["triton"]["static_configs"] = [{"targets": [triton_metrics]}]
    router = jobs["router"]
    router.pop("dns_sd_configs")
    router["static_configs"] = [{"targets": router_targets}]
    return yaml.safe_dump(config, sort_keys=False)


class Nginx(ChildProcess):
    name = "nginx"

    def __init__(self, workdir: Path, port: int, upstream_ports: list[int]) -> None:
        super().__init__(workdir)
        self.port = port
        self.upstream_ports = upstream_ports
        self.conf = workdir / "nginx.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_nginx(NGINX_CONF.read_text(), self.upstream_ports, self.port, self.workdir))
        return [require("nginx"), "-e", str(self.workdir / "error.log"), "-p", str(self.workdir),
                "-c", str(self.conf), "-g", "daemon off;"]

    def ready(self) -> bool:
        return http_ok(f"{self.url}/nginx-health")()


class Prometheus(ChildProcess):
    name = "prometheus"

    def __init__(self, workdir: Path, port: int, triton_metrics: str, router_targets: list[str],
                 interval: str = "15s") -> None:
        super().__init__(workdir)
        self.port = port
        self.config = workdir / "prometheus.yml"
        self.rendered = render_prometheus(PROMETHEUS_YML.read_text(), triton_metrics, router_targets, interval)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.rendered)
        return [require("prometheus"), f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")()


class Topology:
    """N routers behind nginx, scraped by Prometheus, all on loopback."""

    def __init__(self, workdir: Path, triton, redis_url: str, router_ports: list[int], nginx_port: int,
                 prometheus_port: int, router_env: dict[str, str] | None = None, scrape_interval: str = "15s",
                 cwd: Path | None = None) -> None:
        env = {"REDIS_URL": redis_url, **(router_env or {})}
        self.routers = [RouterProcess(workdir / "routers", triton, env, port=p, cwd=cwd) for p in router_ports]
        self.nginx = Nginx(workdir / "nginx", nginx_port, router_ports)
        metrics = triton.metrics_url.removeprefix("http://").removesuffix("/metrics")
        self.prometheus = Prometheus(workdir / "prometheus", prometheus_port, metrics,
                                     [f"127.0.0.1:{p}" for p in router_ports], scrape_interval)

    @property
    def children(self) -> list[ChildProcess]:
        return [*self.routers, self.nginx, self.prometheus]

    def start(self) -> "Topology":
        try:
            for child in self.children:
                child.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def __enter__(self) -> "Topology":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
