"""`python -m router`: serve the router with uvicorn, configured from settings."""

from __future__ import annotations

import sys

import uvicorn

from router.logs import startup_settings


def main() -> int:
    settings = startup_settings()
    if settings is None:
        return 2
    options = dict(host=settings.host, port=settings.port, log_config=None, access_log=False,
                   timeout_graceful_shutdown=10)
    if settings.workers > 1:  # each process builds its own app and clients
        uvicorn.run("router.edge.app:app_from_env", factory=True, workers=settings.workers, **options)
    else:
        from router.edge.app import create_app

        uvicorn.run(create_app(settings), **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
