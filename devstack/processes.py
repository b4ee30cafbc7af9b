"""redis-server, the router, nginx and Prometheus as child processes on
loopback ports: used by `make run`, `make stack` and the integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and never handed out before by this process:
    the kernel may offer a port again as soon as it is released, and servers
    given their ports side by side (Triton's three) would then share one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return check


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run `make setup` as root (it installs the Debian package)")
    return path


class ChildProcess:
    """One long-running child: started, waited for, and always stopped."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def cwd(self) -> Path:
        return self.workdir

    def start(self, timeout: float = 60) -> "ChildProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.cwd(), env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.record_stacks(f"did not stop within {timeout:.0f} s of SIGTERM")
                self.kill()
        return self.proc.returncode

    def record_stacks(self, why: str) -> None:
        """Appends the child's Python stacks (py-spy, when installed) to its log,
        so that a hang seen once can be read afterwards."""
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        with open(self.log, "a") as log:
            log.write(f"\n--- {self.name} {why} ---\n")
            if spy is None:
                log.write("(py-spy is not installed: no stacks)\n")
                return
            try:
                out = subprocess.run([spy, "dump", "--pid", str(self.proc.pid)], capture_output=True, text=True,
                                     timeout=30)
                log.write(out.stdout + out.stderr)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.write(f"(py-spy failed: {exc})\n")

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisServer(ChildProcess):
    """redis-server with its files in `workdir`. The append-only file is on
    (fsync every second, as the Compose services run it), so queued jobs and
    results survive a restart on the same directory; `persistent=False`
    keeps everything in memory only."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = True) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        return [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                *aof, "--dir", str(self.workdir)]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class RouterProcess(ChildProcess):
    """`python -m router` with the given settings. Its working directory
    decides which `.env` it reads: the tests use a folder that has none."""

    name = "router"

    def __init__(self, workdir: Path, triton, env: dict[str, str], port: int | None = None,
                 cwd: Path | None = None) -> None:
        self.port = port or free_port()
        self.name = f"router-{self.port}"
        super().__init__(workdir)
        self._cwd = cwd or workdir
        self.settings = {
            "HOST": "127.0.0.1", "PORT": str(self.port),
            "TRITON_GRPC_URL": triton.grpc_url, "TRITON_HTTP_URL": triton.http_url.removeprefix("http://"),
            **env,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "router"]

    def cwd(self) -> Path:
        return self._cwd

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CANARY_VERSION", "CANARY_PERCENT")}
        return {**env, **self.settings}

    def ready(self) -> bool:
        return http_ok(f"{self.url}/health")()


class WorkerProcess(RouterProcess):
    """`python -m router.jobs.worker`, with the same settings as a router."""

    def __init__(self, workdir: Path, triton, env: dict[str, str], concurrency: int = 8, name: str | None = None,
                 cwd: Path | None = None) -> None:
        super().__init__(workdir, triton, env, cwd=cwd)
        self.consumer = name or f"worker-{self.port}"
        self.name = self.consumer
        self.log = workdir / f"{self.consumer}.log"
        self.concurrency = concurrency

    def command(self) -> list[str]:
        return [sys.executable, "-m", "router.jobs.worker", "--concurrency", str(self.concurrency),
                "--name", self.consumer]

    def ready(self) -> bool:
        return self.log.exists() and "reading jobs" in self.log.read_text(errors="replace")
