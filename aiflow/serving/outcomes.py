"""Every request's outcome counted, 5xx included: an ASGI middleware around the app's routes.

It counts each response in ``aiflow_http_responses_total`` by endpoint (the route's template, never the raw path) and
status, and each prediction request in ``aiflow_requests_total`` by the dataset, version and variant it was routed to
(a handler names them in ``scope[SLOT]`` as soon as it knows them), so 401, 404, 413 and 500 are counted beside the
successes. An error no handler turned into an answer is logged once, with its traceback and an error id, and answered
``500 {"error": ..., "request_id": <id>}``; it is not re-raised (the server would log a second, anonymous traceback).
Handlers write the inference log only once their answer is built, so a request answered 500 never reaches it as a
success; ``on_server_error`` hears each 5xx of a routed request (the server logs its records as error rows of the
variant that failed them: the canary analysis reads its error rate there).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from aiflow.serving.metrics import ServingMetrics

log = logging.getLogger("aiflow.serving")

#: ``scope[SLOT]``: what a prediction handler knows of its request — ``api`` and ``started``, then ``dataset``, ``model``
#: once routed and ``records`` once validated.
SLOT = "aiflow.prediction"


def prediction_slot(scope: dict, api: str) -> dict[str, Any]:
    """Mark ``scope`` as a prediction request of ``api``; the handler fills in the rest as it learns it."""
    slot = scope[SLOT] = {"api": api, "started": time.perf_counter(), "dataset": "", "model": None, "records": None}
    return slot


class Outcomes:
    """Pure ASGI middleware (no per-request thread hop or body buffering)."""

    def __init__(self, app, metrics: ServingMetrics, on_server_error: Callable[[dict, int], None] | None = None):
        self.app, self.metrics, self.on_server_error = app, metrics, on_server_error

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
            if status:  # 0: cancelled before any answer (server shutdown): nothing to count
                self.count(scope, status)

    def count(self, scope, status: int) -> None:
        self.metrics.responses.labels(endpoint(scope), str(status)).inc()
        slot = scope.get(SLOT)
        if slot is not None:
            model = slot["model"]
            label = "ok" if 200 <= status < 300 else str(status)
            dataset = model.dataset if model is not None else slot["dataset"]
            version, variant = (str(model.version), model.variant) if model is not None else ("", "")
            self.metrics.requests.labels(dataset, version, variant, slot["api"], label).inc()
            if status >= 500 and model is not None and slot["records"] and self.on_server_error is not None:
                try:
                    self.on_server_error(slot, status)
                except Exception:  # counting must not fail the request path
                    log.exception("could not record the failed request's rows")


def endpoint(scope) -> str:
    """The matched route's path template (``/v2/models/{name}/infer``), or ``unmatched``: bounded label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
