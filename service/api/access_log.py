"""Access log lines, through the configured log format (service/logs.py)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from service.keys import REQUEST_ID_KEY


class AccessLogger(AbstractAccessLogger):
    """One line per request, through the configured format: the message for people, the
    fields for JSON (the route is the template, as in the metrics)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            match_info = request.match_info  # type: ignore[attr-defined]
        except (AttributeError, AssertionError):
            # A request aiohttp could not parse never reached the router: it has no match
            # info, and its property asserts rather than answering None.
            match_info = None
        resource = match_info.route.resource if match_info is not None else None
        route = resource.canonical if resource is not None else "__unmatched__"
        fields = {
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "remote": request.remote,
            "request_id": request.get(REQUEST_ID_KEY),
        }
        self.logger.info(
            "%s %s %d %.1f ms",
            request.method,
            request.path,
            response.status,
            time * 1000,
            extra=fields,
        )
