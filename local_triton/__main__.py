"""`python -m local_triton`: serve model_repository/ with the real Triton."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

from local_triton.server import Ports, TritonError, TritonServer, interrupt_on_signals


def _loaded(server: TritonServer) -> list[str]:
    req = urllib.request.Request(f"{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        index = json.load(resp)
    return sorted(f"{m['name']} v{m.get('version', '?')} {m.get('state', '')}" for m in index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_triton", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--log-file", type=Path, help="server log (default: a temporary file)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)

    server = TritonServer(args.model_repository, Ports(args.http_port, args.grpc_port, args.metrics_port),
                          host=args.host, log_path=args.log_file, log_verbose=args.log_verbose)

    interrupt_on_signals()
    try:
        server.start()
        print(f"starting tritonserver (log: {server.log_path})", flush=True)
        server.wait_ready(args.ready_timeout)
        print("Triton is ready:", flush=True)
        print(f"  HTTP     {server.http_url}", flush=True)
        print(f"  gRPC     {server.grpc_url}", flush=True)
        print(f"  metrics  {server.metrics_url}", flush=True)
        for line in _loaded(server):
            print(f"  model    {line}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        code = server.process.wait()
        print(f"tritonserver exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except TritonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tritonserver...", flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
