"""`python -m devstack` (`make run`): Triton, redis-server and the router on
this machine, without Docker. Prints the URLs; Ctrl-C or SIGTERM stops all."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from devstack.processes import RedisServer, RouterProcess
from local_triton import Ports, TritonError, TritonServer

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--router-port", type=int, default=8080)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--triton-ports", type=int, nargs=3, default=(8000, 8001, 8002),
                        metavar=("HTTP", "GRPC", "METRICS"))
    parser.add_argument("--workdir", type=Path, default=ROOT / ".devstack", help="logs and Redis data")
    args = parser.parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    args.workdir.mkdir(parents=True, exist_ok=True)
    triton = TritonServer(args.model_repository, Ports(*args.triton_ports),
                          log_path=args.workdir / "tritonserver.log")
    redis = RedisServer(args.workdir / "redis", port=args.redis_port)
    router = RouterProcess(args.workdir, triton, {"REDIS_URL": redis.url}, port=args.router_port, cwd=ROOT)
    try:
        print("starting Triton, Redis and the router...", flush=True)
        triton.start()
        redis.start()
        triton.wait_ready()
        router.start()
        print(f"""
  router   http://127.0.0.1:{router.port}            try: curl 'localhost:{router.port}/predict?text=hello'
  docs     http://127.0.0.1:{router.port}/docs
  metrics  http://127.0.0.1:{router.port}/metrics    (router)   {triton.metrics_url} (Triton)
  triton   {triton.http_url} (HTTP)   {triton.grpc_url} (gRPC)
  redis    {redis.url}
  logs     {args.workdir}/
Ctrl-C to stop.""", flush=True)
        while True:
            for name, proc in (("tritonserver", triton.process), ("redis-server", redis.proc), ("router", router.proc)):
                if proc is None or proc.poll() is not None:
                    print(f"error: {name} exited; stopping the stack (logs in {args.workdir})", file=sys.stderr)
                    return 1
            time.sleep(1)
    except (TritonError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        router.stop()
        redis.stop()
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
