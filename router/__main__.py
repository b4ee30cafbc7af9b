"""`python -m router`: serve the router with uvicorn, configured from settings."""

from __future__ import annotations

import sys

import uvicorn

from router.logs import startup_settings


def main() -> int:
    settings = startup_settings()
    if settings is None:
        return 2
    from router.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
