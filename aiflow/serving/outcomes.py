"""Every request's outcome counted, 5xx included: an ASGI middleware around the app's routes.

It counts each response in ``aiflow_http_responses_total`` by endpoint (the route's template, never the raw path) and
status, and each prediction request in ``aiflow_requests_total`` by the dataset, version and variant it was routed to
(a handler names them in ``scope[SLOT]`` as soon as it knows them), so 401, 404, 413 and 500 are counted beside the
successes. An error no handler turned into an answer is logged once, with its traceback and an error id, and answered
``500 {"error": ..., "request_id": <id>}``; it is not re-raised (the server would log a second, anonymous traceback).
Handlers write the inference log only once their answer is built, so a request answered 500 never reaches it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from aiflow.serving.metrics import ServingMetrics

log = logging.getLogger("aiflow.serving")

#: ``scope[SLOT]``: what a prediction handler knows of its request — ``api``, then ``dataset`` and ``model`` once routed.
SLOT = "aiflow.prediction"


def prediction_slot(scope: dict, api: str) -> dict[str, Any]:
    """Mark ``scope`` as a prediction request of ``api``; the handler fills in ``dataset`` / ``model`` as it learns them."""
    slot = scope[SLOT] = {"api": api, "dataset": "", "model": None}
    return slot


class Outcomes:
    """Pure ASGI middleware (no per-request thread hop or body buffering)."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            error_id = uuid.uuid4().hex
            log.exception("internal error %s on %s %s (answered %s)", error_id, scope["method"], endpoint(scope),
                          "500" if not status else f"{status} before it happened")  # fmt: skip
            if not status:  # nothing sent yet: the client gets the id to quote
                status = 500
                body = orjson.dumps({"error": f"internal error; the server logged it as {error_id}", "request_id": error_id})
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
        finally:
            self.count(scope, status or 500)

    def count(self, scope, status: int) -> None:
        self.metrics.responses.labels(endpoint(scope), str(status)).inc()
        slot = scope.get(SLOT)
        if slot is not None:
            model = slot["model"]
            label = "ok" if 200 <= status < 300 else str(status)
            dataset = model.dataset if model is not None else slot["dataset"]
            version, variant = (str(model.version), model.variant) if model is not None else ("", "")
            self.metrics.requests.labels(dataset, version, variant, slot["api"], label).inc()


def endpoint(scope) -> str:
    """The matched route's path template (``/v2/models/{name}/infer``), or ``unmatched``: bounded label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
