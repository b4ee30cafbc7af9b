"""`python -m devstack` (`make run`, `make stack`): the local stack without
Docker. One router by default; `--replicas N` runs the Compose topology
instead: N routers behind nginx, scraped by Prometheus. Prints the URLs;
Ctrl-C or SIGTERM stops everything."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

from devstack.processes import ChildProcess, RedisServer, RouterProcess, WorkerProcess
from devstack.topology import Topology
from local_triton import Ports, TritonError, TritonServer
from local_triton.server import interrupt_on_signals
from router import keys

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--port", type=int, default=8080, help="the entry point: the router, or nginx")
    parser.add_argument("--replicas", type=int, default=1, help="routers; more than 1 adds nginx and Prometheus")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--triton-ports", type=int, nargs=3, default=(8000, 8001, 8002),
                        metavar=("HTTP", "GRPC", "METRICS"))
    parser.add_argument("--workdir", type=Path, default=ROOT / ".devstack", help="logs and data")
    args = parser.parse_args(argv)

    interrupt_on_signals()
    args.workdir.mkdir(parents=True, exist_ok=True)
    # An admin key for this session; predictions, jobs and metrics stay open. Triton's
    # repository API (index, load, unload) answers only the router and worker, which get triton_key.
    admin_key, triton_key = keys.new_key(), secrets.token_urlsafe(24)
    env = {"API_KEYS": json.dumps([keys.entry("session-admin", admin_key, ["admin", "metrics", "jobs", "predict"],
                                              None)]),
           "ANONYMOUS_SCOPES": "predict,jobs,metrics", "TRITON_ADMIN_KEY": triton_key}
    triton = TritonServer(args.model_repository, Ports(*args.triton_ports),
                          log_path=args.workdir / "tritonserver.log", restricted=("triton-admin-key", triton_key))
    redis = RedisServer(args.workdir / "redis", port=args.redis_port)
    if args.replicas > 1:
        front = Topology(args.workdir, triton, redis.url, [args.port + 1 + i for i in range(args.replicas)],
                         args.port, args.prometheus_port, cwd=ROOT, router_env=env)
        children: list[ChildProcess] = front.children
    else:
        front = RouterProcess(args.workdir, triton, {"REDIS_URL": redis.url, **env}, port=args.port, cwd=ROOT)
        children = [front]
    worker = WorkerProcess(args.workdir, triton, {"REDIS_URL": redis.url, **env}, name="worker-1", cwd=ROOT)
    children.append(worker)
    try:
        print("starting Triton, Redis, the router and a worker...", flush=True)
        triton.start()
        redis.start()
        triton.wait_ready()
        front.start()
        worker.start()
        lines = [f"  entry    http://127.0.0.1:{args.port}   try: curl 'localhost:{args.port}/predict?text=hello'",
                 f"  docs     http://127.0.0.1:{args.port}/docs",
                 f"  metrics  http://127.0.0.1:{args.port}/metrics (router)   {triton.metrics_url} (Triton)"]
        if args.replicas > 1:
            lines += [f"  routers  {', '.join(r.url for r in front.routers)} (behind nginx, least_conn)",
                      f"  prometheus {front.prometheus.url}"]
        lines += [f"  triton   {triton.http_url} (HTTP)   {triton.grpc_url} (gRPC)",
                  f"  redis    {redis.url}   worker: python -m router.jobs.worker ({worker.concurrency} tasks)",
                  "  admin key (this session only; predictions, jobs and metrics are open):",
                  f"           {admin_key}",
                  f"  logs     {args.workdir}/", "Ctrl-C to stop."]
        print("\n" + "\n".join(lines), flush=True)
        while True:
            for name, child in [("tritonserver", triton.process), ("redis-server", redis.proc),
                                *[(c.name, c.proc) for c in children]]:
                if child is None or child.poll() is not None:
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
        worker.stop()
        front.stop()
        redis.stop()
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
