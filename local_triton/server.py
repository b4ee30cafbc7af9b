"""Start, wait for and stop a real `tritonserver` on this machine.

The nvidia-pytriton wheel ships the Triton 2.51 server binary (the release in
the NGC image `tritonserver:24.10-py3`), its libraries and the Python
backend, but no native ONNX Runtime backend. A backend folder is assembled
here with Triton's Python backend and our Python-based `onnxruntime` backend,
so the unchanged `model_repository/` is served by the real server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BACKEND_SOURCE = Path(__file__).resolve().parent / "backends"


class TritonError(RuntimeError):
    pass


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; a second signal must
    not interrupt the clean-up that the first one started."""

    def on_signal(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


@dataclass(frozen=True)
class Installation:
    binary: Path
    libs: Path
    python_backend: Path
    stub: Path


def find_installation() -> Installation:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed: run `make setup`")
    root = Path(list(spec.submodule_search_locations)[0])
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    inst = Installation(
        binary=root / "tritonserver" / "bin" / "tritonserver",
        libs=root.parent / "nvidia_pytriton.libs",
        python_backend=root / "tritonserver" / "backends" / "python",
        stub=root / "tritonserver" / "python_backend_stubs" / py / "triton_python_backend_stub",
    )
    for path in (inst.binary, inst.libs, inst.python_backend, inst.stub):
        if not path.exists():
            raise TritonError(f"incomplete nvidia-pytriton install: {path} is missing")
    return inst


def prepare_backends(dest: Path, inst: Installation) -> Path:
    """`dest/python/` (Triton's Python backend + stub), `dest/onnxruntime/model.py`."""
    python = dest / "python"
    python.mkdir(parents=True, exist_ok=True)
    # Copies, not links: Triton refuses a backend library that resolves to a
    # path outside the backend directory.
    for item in [*inst.python_backend.iterdir(), inst.stub]:
        if item.is_file():
            shutil.copy2(item, python / item.name)
    for backend in BACKEND_SOURCE.iterdir():
        if (backend / "model.py").is_file():
            shutil.copytree(backend, dest / backend.name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def server_env(inst: Installation) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(inst.libs), env.get("LD_LIBRARY_PATH")]))
    # The Python-backend stub embeds the system's libpython and takes its
    # prefix from the first `python3` on PATH: this environment's, so that
    # numpy and onnxruntime import from here.
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [sysconfig.get_paths()["purelib"], env.get("PYTHONPATH")]))
    return env


def server_command(inst: Installation, repository: Path, backends: Path, ports: Ports,
                   host: str = "127.0.0.1", models: list[str] | None = None,
                   log_verbose: int = 0, restricted: tuple[str, str] | None = None,
                   response_cache_bytes: int | None = None) -> list[str]:
    """`restricted` (header, key): the repository API (index, load, unload) over
    HTTP and gRPC answers only requests that carry that header and key.
    `response_cache_bytes`: Triton's own local response cache of that size (the
    wheel's `caches/local` library); it answers only models whose config says
    `response_cache { enable: true }`. Off unless given."""
    cmd = [
        str(inst.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        f"--http-address={host}", f"--http-port={ports.http}",
        f"--grpc-address={host}", f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}", f"--metrics-port={ports.metrics}",
        "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
        "--exit-timeout-secs=10",
        f"--log-verbose={log_verbose}",
    ]
    cmd += [f"--load-model={m}" for m in (models if models is not None else ["*"])]
    if restricted is not None:
        header, key = restricted
        cmd += [f"--http-restricted-api=model-repository:{header}={key}",
                f"--grpc-restricted-protocol=model-repository:{header}={key}"]
    if response_cache_bytes is not None:
        cmd += [f"--cache-directory={inst.binary.parent.parent / 'caches'}",
                f"--cache-config=local,size={response_cache_bytes}"]
    return cmd


class TritonServer:
    """One tritonserver process. Use as a context manager or start()/stop()."""

    def __init__(self, repository: Path, ports: Ports = Ports(), host: str = "127.0.0.1",
                 models: list[str] | None = None, log_path: Path | None = None,
                 log_verbose: int = 0, restricted: tuple[str, str] | None = None,
                 response_cache_bytes: int | None = None) -> None:
        self.repository = Path(repository).resolve()
        self.ports = ports
        self.host = host
        self.models = models
        self.log_path = log_path
        self.log_verbose = log_verbose
        self.restricted = restricted
        self.response_cache_bytes = response_cache_bytes
        self.process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._log = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def start(self) -> "TritonServer":
        if not self.repository.is_dir():
            raise TritonError(f"model repository {self.repository} does not exist")
        inst = find_installation()
        self._workdir = Path(tempfile.mkdtemp(prefix="triton-"))
        backends = prepare_backends(self._workdir / "backends", inst)
        log_path = self.log_path or self._workdir / "tritonserver.log"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        cmd = server_command(inst, self.repository, backends, self.ports, self.host,
                             self.models, self.log_verbose, self.restricted, self.response_cache_bytes)
        self.process = subprocess.Popen(cmd, env=server_env(inst), stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        return self

    def is_ready(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise TritonError(f"tritonserver exited during start-up:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TritonError(f"tritonserver was not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL the group."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            code = self.process.returncode
            try:  # Python-backend stubs share the group; none may outlive the server
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        return code

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
