"""redis-server and the router as child processes on loopback ports: used
by `make run` and by the integration tests alike."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def _wait(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {timeout}s:\n{log.read_text()[-3000:]}")


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=2)
            return out.stdout.strip() == "PONG"
        except subprocess.SubprocessError:
            return False

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make setup` (as root)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        log.touch()
        _wait(self._ping, 15, "redis-server", self.proc, log)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RouterProcess:
    """`python -m router` with the given settings. `cwd` decides which `.env`
    it reads: the tests run it in a folder that has none."""

    def __init__(self, workdir: Path, triton, env: dict[str, str], port: int | None = None,
                 cwd: Path | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.cwd = cwd or workdir
        self.env = {
            "HOST": "127.0.0.1", "PORT": str(self.port),
            "TRITON_GRPC_URL": triton.grpc_url, "TRITON_HTTP_URL": triton.http_url.removeprefix("http://"),
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"router-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> "RouterProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CANARY_VERSION", "CANARY_PERCENT")}
        env.update(self.env)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "router"], cwd=self.cwd, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait(self._healthy, 60, "router", self.proc, self.log)
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "RouterProcess":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
