"""`python -m router`: serve the router with uvicorn, configured from settings."""

from __future__ import annotations

import sys

import uvicorn

from router.logs import startup_settings


def main() -> int:
    settings = startup_settings()
    if settings is None:
        return 2
    from router.edge import server

    options = dict(host=settings.host, port=settings.port, log_config=None, access_log=False,
                   timeout_graceful_shutdown=10, server_header=False, ws="none")
    if settings.workers > 1:  # each process builds its own app (and configures the protocol) in app_from_env
        uvicorn.run("router.edge.app:app_from_env", factory=True, workers=settings.workers, http=server.PROTOCOL,
                    **options)
    else:
        from router.edge.app import create_app

        uvicorn.run(create_app(settings), http=server.configure(settings), **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
