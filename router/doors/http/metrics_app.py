"""`GET /metrics`: the daemon's Prometheus series (router/assembly/metrics.py), on their own address, for a
principal whose role grants the `metrics` action (an admin, or a monitoring system's service token)."""
from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.assembly.metrics import RouterMetrics
from router.core.auth import Credential, Guard
from router.domain.access import Action
from router.doors.http.app import typed_errors


def build_metrics_app(metrics: RouterMetrics, guard: Guard, logger: logging.Logger) -> Starlette:
    async def scrape(request: Request) -> Response:
        guard.authorize(Credential(authorization=request.headers.get("authorization")), Action.METRICS)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/metrics", typed_errors(logger, scrape), methods=["GET"])])
