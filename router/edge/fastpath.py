"""The hottest routes (POST /predict, /models/{model}/predict and the /v2
infer routes) served without FastAPI's routing and dependency layers: the
same endpoint functions, called with the same arguments the dependencies
would give them (the app's service and settings, the edge's request record,
the same key check and rate limit), and errors turned into the same bodies by
the same handlers. Every other request, and every other method on these
paths, goes through FastAPI, which also keeps documenting them all.
FAST_PATH=false turns it off (the benchmark compares both)."""

from __future__ import annotations

import inspect
import re

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from router import context
from router.edge import handlers
from router.edge.deps import authorize
from router.errors import RouterError


class FastPath:
    """Pure ASGI, just inside the edge middleware."""

    def __init__(self, app, api: FastAPI, routes: list, endpoints: dict) -> None:
        self.app = app
        self.api = api
        # (path regex, APIRoute, endpoint, the path parameters it takes, scope) for POST
        self.routes: list[tuple[re.Pattern, object, object, tuple[str, ...], str]] = []
        for route in routes:
            endpoint = getattr(route, "endpoint", None)
            if endpoint in endpoints and "POST" in getattr(route, "methods", ()):
                takes = tuple(p for p in inspect.signature(endpoint).parameters
                              if p in route.param_convertors)
                self.routes.append((route.path_regex, route, endpoint, takes, endpoints[endpoint]))

    def match(self, path: str):
        for regex, route, endpoint, takes, scope_name in self.routes:
            found = regex.match(path)
            if found is not None:
                return found.groupdict(), route, endpoint, takes, scope_name
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or (hit := self.match(scope["path"])) is None:
            return await self.app(scope, receive, send)
        params, route, endpoint, takes, needed = hit
        scope["route"], scope["path_params"], scope["endpoint"] = route, params, endpoint
        request = Request(scope, receive)
        state = self.api.state
        try:
            await authorize(request, needed)
            response = await endpoint(request=request, service=state.service, settings=state.settings,
                                      record=context.current(), **{k: params[k] for k in takes})
        except RouterError as exc:
            response = await handlers.router_error(request, exc)
        except StarletteHTTPException as exc:
            response = await handlers.http_error(request, exc)
        await response(scope, receive, send)
