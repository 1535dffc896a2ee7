"""The online server (ASGI, FastAPI): each dataset's ``champion`` behind ``/v1`` and the Open Inference Protocol ``/v2``.

Traffic: the ``canary`` alias answers ``canary_fraction`` of requests (sticky per ``X-Request-Key``), the
``challenger`` scores in shadow (:mod:`aiflow.serving.traffic`). Endpoints: ``POST /v1/predict``, ``POST /v1/feedback``, ``GET /v1/models``, ``GET /metrics``, and the OIP REST
API (``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{name}``, ``.../ready``, ``.../infer``,
also under ``/versions/{v}``), ``GET /openapi.json`` (:mod:`aiflow.serving.openapi`). Every endpoint but the health probes needs ``Authorization: Bearer <token>``
(:mod:`aiflow.serving.auth`). The model name is the dataset's name. Bodies over ``max_body_bytes`` get 413.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import orjson
import polars as pl
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from aiflow.serving import access_log, openapi, reports
from aiflow.serving.auth import TokenSource
from aiflow.serving.batcher import MicroBatcher
from aiflow.serving.errors import HTTPError
from aiflow.serving.feedback import parse_feedback, record_feedback
from aiflow.serving.holder import CANARY, CHALLENGER, CHAMPION, ModelHolder, Served
from aiflow.serving.inference_log import InferenceLog, LogBatch, log_table
from aiflow.serving.metrics import ServingMetrics
from aiflow.serving.oip import check_version, infer_response, model_metadata, oip_records, requested_outputs
from aiflow.serving.outcomes import SLOT, Outcomes, prediction_slot
from aiflow.serving.schema import RecordError, validate_records
from aiflow.serving.tls import CertificateReloader
from aiflow.serving.traffic import KEY_HEADER, ShadowGate, choose_variant
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake

log = logging.getLogger("aiflow.serving")
THRESHOLD = 0.5  # as batch scoring decides a class


@dataclass
class ServeConfig:
    """What the server serves and how (built by ``aiflow serve`` from the profile's settings)."""

    lake: Lake
    artifact_root: str
    datasets: list[str]
    tokens: TokenSource | None  # None: insecure development mode (no auth)
    artifact_options: dict | None = None
    reload_interval: float = 5.0
    max_body_bytes: int = 1_000_000
    log_interval: float = 1.0
    log_batch_rows: int = 10_000  # rows that trigger an early flush; each Delta commit costs ~10 ms, so 100-record requests need big ones
    canary_fraction: float = 0.1  # share of requests answered by the canary alias, when one is set
    shadow_max_pending: int = 4  # shadow scorings running or waiting at once; more requests are not shadowed
    inference_log: bool = True  # False: no inference log (measurements only; feedback then knows this process's ids only)
    max_batch_records: int = 256  # micro-batching: the most records of concurrent requests scored in one call
    inline_records: int = 32  # a request with this many records or more is scored at once on the event loop when no batch is in flight
    remember_ids: int = 1_000_000  # request ids kept in memory to flag feedback (the log table answers for older ones)
    report_key: str | None = None  # signs report links (aiflow.serving.reports); None: no report is served
    tls: CertificateReloader | None = None  # HTTPS: reloads a renewed certificate into the listening context (aiflow.serving.tls)
    tls_reload_interval: float = 10.0  # seconds between looks at the certificate files


class RecentIds:
    """The request ids this process served lately (bounded), to tell feedback ids known before the log flushes.

    Kept per request (a set for lookups, the requests' id lists in arrival order for eviction): adding a
    request's ids is one ``set.update``, and the oldest requests' ids go as a whole once over ``limit``.
    """

    def __init__(self, limit: int):
        self.limit, self._ids, self._order, self._count = limit, set(), deque(), 0

    def add(self, ids: list[str]) -> None:
        self._ids.update(ids)
        self._order.append(ids)
        self._count += len(ids)
        while self._count > self.limit:
            old = self._order.popleft()
            self._ids.difference_update(old)
            self._count -= len(old)

    def __contains__(self, rid: str) -> bool:
        return rid in self._ids

    def __len__(self) -> int:
        return self._count


class RequestIds:
    """Unique request ids, cheaply: a random 64-bit prefix per app and a counter, as 32 hex digits (uuid4's length)."""

    def __init__(self) -> None:
        self._prefix, self._next, self._lock = uuid.uuid4().hex[:16], 0, threading.Lock()

    def take(self, n: int) -> list[str]:
        """``n`` ids never handed out before by this app."""
        with self._lock:
            start, self._next = self._next, self._next + n
        prefix = self._prefix
        return [f"{prefix}{i:016x}" for i in range(start, start + n)]


async def read_json(request: Request, limit: int) -> object:
    """The request body as JSON; 413 past ``limit`` bytes (checked on the header and while reading), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit} bytes; send fewer records per request")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPError(413, f"request body is over the limit of {limit} bytes; send fewer records per request")
    except ClientDisconnect:  # the client went away, or was cut off for sending too slowly (aiflow.serving.slow_clients)
        raise HTTPError(408, "the connection closed before the request body was complete") from None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        # what orjson refuses but json accepts (NaN, integers past 64 bits) gets the same answer as before
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HTTPError(400, f"request body nests arrays or objects deeper than {MAX_DEPTH} levels") from None
    if _deeper_than(payload, MAX_DEPTH):
        raise HTTPError(400, f"request body nests arrays or objects deeper than {MAX_DEPTH} levels")
    return payload


#: No request needs more than a few levels; a record nested a thousand deep would stop every JSON encoder downstream.
MAX_DEPTH = 32


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists or dicts deeper than ``limit`` (iterative: no recursion; flat values cost one check)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_response(body: object, background: BackgroundTask | None = None) -> Response:
    """``body`` as compact UTF-8 JSON (orjson: no per-value Python encoder on the request path)."""
    return Response(orjson.dumps(body), media_type="application/json", background=background)


def create_app(config: ServeConfig) -> FastAPI:
    """The ASGI app; models load at startup, the reload and inference-log threads run for the app's lifetime."""
    metrics = ServingMetrics()

    def on_load(dataset: str, variant: str, version: int | None, error: Exception | None) -> None:
        (metrics.load_failures if error else metrics.loads).labels(dataset, variant).inc()
        if error is None and version is not None:
            metrics.loaded_version.labels(dataset, variant).set(version)

    def on_remove(dataset: str, variant: str, version: int) -> None:
        metrics.loaded_version.remove(dataset, variant)  # no gauge left saying a removed alias is served

    if config.tls is not None:
        config.tls.on_reload = lambda error: metrics.tls_reloads.labels("failed" if error else "reloaded").inc()

    def on_flush(rows: int, error: Exception | None) -> None:
        metrics.log_flushed.inc(rows)
        if error is not None:
            metrics.log_errors.inc()

    holder = ModelHolder(config.lake, config.datasets, config.artifact_root, config.artifact_options, on_load=on_load,
                         on_remove=on_remove)  # fmt: skip
    inference_log = InferenceLog(config.lake, interval=config.log_interval, batch_rows=config.log_batch_rows, on_flush=on_flush)
    metrics.log_queue.set_function(inference_log.pending)
    recent = RecentIds(config.remember_ids)
    request_ids = RequestIds()
    gate = ShadowGate(config.shadow_max_pending)
    shadow_failures: set[tuple[str, int, str]] = set()  # (dataset, version, error type) already logged

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        access_log.install()  # uvicorn has configured its loggers by now: no query-string value reaches the access log
        if config.tokens is None:
            log.warning("aiflow serve: INSECURE DEVELOPMENT MODE: no authentication, anyone who reaches this port can call the models")
        holder.refresh()
        holder.start(config.reload_interval)
        inference_log.start()
        tls_watch = asyncio.create_task(config.tls.watch(config.tls_reload_interval)) if config.tls else None
        try:
            yield
        finally:
            if tls_watch is not None:
                tls_watch.cancel()
            holder.stop()
            flushed = inference_log.close()
            log.info("aiflow serve: stopped; the last inference-log flush wrote %d rows", flushed)

    app = FastAPI(title="aiflow serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.holder, app.state.inference_log, app.state.metrics = holder, inference_log, metrics

    def on_server_error(slot: dict, status: int) -> None:
        """A routed request's records answered 5xx: error rows of the variant that failed them (no prediction)."""
        model, records = slot["model"], slot["records"]
        metrics.latency.labels(model.dataset, model.variant, slot["api"]).observe(time.perf_counter() - slot["started"])
        if config.inference_log:
            n = len(records)
            inference_log.add_batch(LogBatch(
                request_ids=request_ids.take(n), records=records, dataset=model.dataset, version=model.version, variant=model.variant,
                predictions=[None] * n, probabilities=[None] * n, latency_ms=(time.perf_counter() - slot["started"]) * 1000,
                time=dt.datetime.now(dt.UTC), status=f"error: HTTP {status}",
            ))  # fmt: skip

    # every response counted; an unhandled error logged once with an id, answered 500, its records logged as error rows
    app.add_middleware(Outcomes, metrics=metrics, on_server_error=on_server_error)

    @app.exception_handler(HTTPError)
    async def _error(request: Request, exc: HTTPError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status, headers=headers)

    def auth(request: Request) -> None:
        if config.tokens is not None and not config.tokens.valid(request.headers.get("authorization")):
            raise HTTPError(401, "missing or invalid bearer token (send 'Authorization: Bearer <token>')")

    def served(name: str) -> Served:
        if name not in config.datasets:
            raise HTTPError(404, f"unknown model {name!r}; this server serves {', '.join(config.datasets)}")
        model = holder.get(name)
        if model is None:
            raise HTTPError(503, f"model {name!r} is not loaded yet: {holder.slots[(name, CHAMPION)].last_error}")
        return model

    def route(name: str, request: Request, version: str | None = None) -> Served:
        """The champion, or the canary for its share of requests; with ``version``, whichever of them serves it."""
        champion, canary = served(name), holder.get(name, CANARY)
        if version is not None:
            for model in (champion, canary):
                if model is not None and version == str(model.version):
                    return model
            check_version(champion, version)
        if choose_variant(request.headers.get(KEY_HEADER), config.canary_fraction, canary is not None) == CANARY and canary is not None:
            return canary
        return champion

    def shadow_task(name: str, records: list[dict], ids: list[str], api: str) -> BackgroundTask | None:
        """The challenger's scoring of the same records, to run after the response (None: no challenger, or too busy)."""
        challenger = holder.get(name, CHALLENGER)
        if challenger is None:
            return None
        if not gate.try_enter():
            metrics.shadow_skipped.labels(name).inc()
            return None

        def run() -> None:
            started = time.perf_counter()
            try:
                preds, probs = score(challenger, validate_records(records, challenger.fields))
                batch = LogBatch(
                    request_ids=ids, records=records, dataset=name, version=challenger.version, variant="shadow",
                    predictions=preds.astype(np.float64).tolist(), probabilities=probs.tolist() if probs is not None else [None] * len(ids),
                    latency_ms=(time.perf_counter() - started) * 1000, time=dt.datetime.now(dt.UTC),
                )  # fmt: skip
                if config.inference_log:
                    inference_log.add_batch(batch)
                metrics.requests.labels(name, str(challenger.version), "shadow", api, "ok").inc()
            except Exception as exc:  # counted, and logged once per version and kind of error; the client already has its answer
                metrics.requests.labels(name, str(challenger.version), "shadow", api, "error").inc()
                kind = (name, challenger.version, type(exc).__name__)
                if kind not in shadow_failures:
                    shadow_failures.add(kind)
                    log.error("shadow: %s challenger v%s could not score %d records (%s; further ones are counted in "
                              "aiflow_requests_total{variant=\"shadow\",status=\"error\"}, not logged): %s", name, challenger.version,
                              len(records), type(exc).__name__, getattr(exc, "message", exc), exc_info=not isinstance(exc, HTTPError | RecordError))  # fmt: skip
            finally:
                gate.leave()

        return BackgroundTask(run)

    def decide(model: Served, values) -> tuple[np.ndarray, np.ndarray | None]:
        values = np.asarray(values, dtype=np.float64)
        if model.classification:
            return (values >= THRESHOLD).astype(np.int64), values
        return values, None

    def score(model: Served, records: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) by the shared encoder, on this thread (shadow scoring)."""
        try:
            return decide(model, scorer(model)(records))
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise HTTPError(422, f"records do not fit {model.dataset} v{model.version}: {exc}") from None

    batchers: dict[tuple[str, str], tuple[Served, MicroBatcher]] = {}

    def scorer(model: Served):
        """records -> the model's values by the shared encoder; only the Polars path needs the records cut to the model's inputs."""
        loaded, names = model.model, [f.name for f in model.fields]

        def predict(records: list[dict]) -> np.ndarray:
            arrays = loaded.encoder.fast_arrays(records)  # reads the input fields by name: extra fields cost nothing
            if arrays is None:  # extra fields stay in the log, not in the Polars frame
                arrays = loaded.encoder.arrays([{n: r.get(n) for n in names} for r in records])
            return loaded.predict_arrays(*arrays)

        return predict

    def fast_scorer(model: Served):
        """records -> the model's values when the encoder's fast path takes them, else None (micro-batcher's inline scoring)."""
        loaded = model.model

        def predict(records: list[dict]) -> np.ndarray | None:
            arrays = loaded.encoder.fast_arrays(records)
            return None if arrays is None else loaded.predict_arrays(*arrays)

        return predict

    def counted(dataset: str):
        def on_batch(requests: int, records: int) -> None:
            metrics.batches.labels(dataset).inc()
            metrics.batch_requests.labels(dataset).inc(requests)

        return on_batch

    async def score_batched(model: Served, records: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
        """As :func:`score`, micro-batched with the concurrent requests for the same model; 422 when a value does not encode."""
        key = (model.dataset, model.variant)
        current = batchers.get(key)
        if current is None or current[0] is not model:  # first use, or the model was swapped: a new batcher
            if current is not None:
                current[1].close()
            current = batchers[key] = (model, MicroBatcher(
                scorer(model), config.max_batch_records, on_batch=counted(model.dataset), inline=fast_scorer(model), inline_from=config.inline_records,
            ))  # fmt: skip
        try:
            return decide(model, await current[1].submit(records))
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise HTTPError(422, f"records do not fit {model.dataset} v{model.version}: {exc}") from None

    def account(model: Served, records: list[dict], ids: list[str], values: list[float], probs: list[float] | None, started: float,
                api: str) -> None:  # fmt: skip
        """The inference-log rows and the metrics of one answered request: called once its answer is built (a request that
        fails on the way is answered 500 and never logged as a success; :mod:`aiflow.serving.outcomes` counts it)."""
        latency = time.perf_counter() - started
        recent.add(ids)
        if config.inference_log:
            inference_log.add_batch(LogBatch(
                request_ids=ids, records=records, dataset=model.dataset, version=model.version, variant=model.variant,
                predictions=values, probabilities=probs if probs is not None else [None] * len(ids),
                latency_ms=latency * 1000, time=dt.datetime.now(dt.UTC),
            ))  # fmt: skip
        metrics.records.labels(model.dataset, str(model.version), model.variant).inc(len(ids))
        metrics.latency.labels(model.dataset, model.variant, api).observe(latency)

    # ------------------------------------------------------------------ open: probes
    @app.get("/v2/health/live")
    async def live() -> dict:
        """Liveness: the process answers."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        """Readiness: every dataset's champion is loaded and the inference log's writer runs."""
        logging_ok = not config.inference_log or inference_log.alive()
        ok = holder.ready() and logging_ok
        body = {"ready": ok} if logging_ok else {"ready": False, "reason": "the inference log's writer thread has stopped"}
        return JSONResponse(body, status_code=200 if ok else 503)

    # ------------------------------------------------------------------ signed links: Evidently's reports (aiflow.serving.reports)
    report_key = config.report_key or None

    @app.get("/reports/{dataset}/{name}")
    async def report(dataset: str, name: str, sig: str | None = None) -> Response:
        """One monitoring report, opened from a signed link (the Dagster UI's); no bearer token, no other file."""
        try:
            path = reports.report_path(dataset, name)
        except ValueError:
            return JSONResponse({"error": "not a report"}, status_code=404)
        if report_key is None:
            return JSONResponse({"error": f"this server serves no report: set {reports.KEY_ENV}"}, status_code=404)
        if not reports.verify(report_key, dataset, name, sig):
            return JSONResponse({"error": "the link's signature does not match this report"}, status_code=403)
        store = ArtifactStore(config.lake.root, storage_options=config.lake.storage_options or None)
        try:
            body = await asyncio.to_thread(store.get_bytes, path)
        except FileNotFoundError:
            return JSONResponse({"error": f"no report {dataset}/{name}"}, status_code=404)
        return Response(body, media_type="text/html", headers={"Cache-Control": "private, max-age=300"})

    # ------------------------------------------------------------------ authenticated: each handler calls auth() first
    # (directly, not as a FastAPI dependency: a sync dependency costs a thread-pool hop and dependency solving per request)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        """Score one or many raw records with a dataset's champion."""
        started = time.perf_counter()
        slot = prediction_slot(request.scope, "v1")
        auth(request)
        payload = await read_json(request, config.max_body_bytes)
        name = payload.get("dataset") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise HTTPError(422, "the body must be {\"dataset\": <name>, \"records\": [{...}, ...]}: 'dataset' is missing")
        slot["dataset"] = name if name in config.datasets else ""  # metric labels: the served names only
        model = slot["model"] = route(name, request)
        try:
            records = slot["records"] = validate_records(payload.get("records"), model.fields)
        except RecordError as exc:
            raise HTTPError(422, str(exc), problems=exc.details()) from None
        preds, probs = await score_batched(model, records)
        values, probabilities = preds.astype(np.float64).tolist(), probs.tolist() if probs is not None else None
        ids = request_ids.take(len(records))
        if probabilities is not None:
            out = [{"request_id": i, "label": p, "probability": q} for i, p, q in zip(ids, preds.tolist(), probabilities, strict=True)]
        else:
            out = [{"request_id": i, "prediction": p} for i, p in zip(ids, values, strict=True)]
        body = {"model": name, "version": model.version, "variant": model.variant, "predictions": out}
        response = json_response(body, background=shadow_task(name, records, ids, "v1"))
        account(model, records, ids, values, probabilities, started, "v1")
        return response

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        """Ground-truth labels for earlier request ids (idempotent; unknown ids kept and flagged)."""
        auth(request)
        payload = await read_json(request, config.max_body_bytes)
        name = payload.get("dataset") if isinstance(payload, dict) else None
        if name not in config.datasets:
            raise HTTPError(404 if isinstance(name, str) else 422, f"unknown dataset {name!r}; this server serves {', '.join(config.datasets)}")
        try:
            served = holder.get(name)
            pairs = parse_feedback(payload.get("labels"), served.model.problem_type if served is not None else None)
        except RecordError as exc:
            raise HTTPError(422, str(exc), problems=exc.details()) from None

        def known(ids: Iterable[str]) -> set[str]:
            ids = list(ids)
            found = {r for r in ids if r in recent}
            rest = [r for r in ids if r not in found]
            table = log_table(name)
            if rest and config.lake.exists(table):
                hits = config.lake.scan(table).filter(pl.col("request_id").is_in(rest)).select("request_id").collect()
                found |= set(hits["request_id"].to_list())
            return found

        # a Delta merge (and a scan of the log): off the event loop, so scoring goes on meanwhile
        return {"dataset": name, **await asyncio.to_thread(record_feedback, config.lake, name, pairs, known)}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        """What is loaded: name, version, variant, artifact hash, since when, last reload error."""
        auth(request)
        return {"models": holder.describe()}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics."""
        auth(request)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/openapi.json")
    async def openapi_document(request: Request) -> dict:
        """The OpenAPI document of what this server serves now (aiflow.serving.openapi)."""
        auth(request)
        loaded = {name: holder.get(name) for name in config.datasets}
        return openapi.document({name: m.fields if m is not None else None for name, m in loaded.items()})

    @app.get("/v2")
    async def server_metadata(request: Request) -> dict:
        """OIP server metadata."""
        auth(request)
        return {"name": "aiflow", "version": "0.1.0", "extensions": []}

    def oip(fn):
        """OIP errors are HTTP 400 with {"error": ...} (401 and 413 keep their codes)."""

        async def wrapped(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except HTTPError as exc:
                if exc.status in (401, 413):
                    raise
                return JSONResponse({"error": exc.message}, status_code=400)

        return wrapped

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(request: Request, name: str, version: str | None = None):
        """OIP model metadata: one input per feature column."""
        auth(request)
        return await oip(_metadata)(name, version)

    async def _metadata(name: str, version: str | None) -> dict:
        model = served(name)
        check_version(model, version)
        return model_metadata(model)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(request: Request, name: str, version: str | None = None):
        """OIP model readiness."""
        auth(request)
        model = holder.get(name) if name in config.datasets else None
        canary = holder.get(name, CANARY) if model is not None else None
        ok = model is not None and (version is None or version in {str(m.version) for m in (model, canary) if m is not None})
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        """OIP inference: one input tensor per feature column, 1-D, one element per record."""
        prediction_slot(request.scope, "v2")["dataset"] = name if name in config.datasets else ""
        auth(request)
        return await oip(_infer)(request, name, version)

    async def _infer(request: Request, name: str, version: str | None) -> dict:
        started = time.perf_counter()
        payload = await read_json(request, config.max_body_bytes)
        model = request.scope[SLOT]["model"] = route(name, request, version)
        try:
            requested_outputs(payload, model)
            records = request.scope[SLOT]["records"] = validate_records(oip_records(payload, model), model.fields)
        except RecordError as exc:
            raise HTTPError(400, str(exc)) from None
        preds, probs = await score_batched(model, records)
        ids = request_ids.take(len(records))
        response = JSONResponse(infer_response(payload, model, preds, probs, ids), background=shadow_task(name, records, ids, "v2"))
        account(model, records, ids, preds.astype(np.float64).tolist(), probs.tolist() if probs is not None else None, started, "v2")
        return response

    return app
