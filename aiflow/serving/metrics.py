"""Prometheus metrics of the online server (one registry per app, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """Requests, latency, inference-log and model-load metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aiflow_requests_total", "Prediction requests by dataset, model version, variant, API and status.",
            ["dataset", "version", "variant", "api", "status"], registry=r,
        )  # fmt: skip
        self.responses = Counter(
            "aiflow_http_responses_total", "Every response by endpoint (route template) and HTTP status, 5xx included.",
            ["endpoint", "status"], registry=r,
        )  # fmt: skip
        self.records = Counter("aiflow_scored_records_total", "Records scored.", ["dataset", "version", "variant"], registry=r)
        self.latency = Histogram(
            "aiflow_request_latency_seconds", "Latency of prediction requests (server side).",
            ["dataset", "variant", "api"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.log_queue = Gauge("aiflow_inference_log_queue_rows", "Rows waiting to be appended to the inference log.", registry=r)
        self.log_flushed = Counter("aiflow_inference_log_flushed_rows_total", "Rows appended to the inference log.", registry=r)
        self.log_errors = Counter("aiflow_inference_log_flush_errors_total", "Failed inference-log appends (rows kept, retried).", registry=r)
        self.loads = Counter("aiflow_model_loads_total", "Model versions loaded and swapped in.", ["dataset", "variant"], registry=r)
        self.load_failures = Counter(
            "aiflow_model_load_failures_total", "Model versions that failed to load or verify.", ["dataset", "variant"], registry=r
        )
        self.batches = Counter("aiflow_scoring_batches_total", "Scoring calls (micro-batches of concurrent requests).", ["dataset"], registry=r)
        self.batch_requests = Counter("aiflow_scoring_batched_requests_total", "Requests scored in those calls.", ["dataset"], registry=r)
        self.shadow_skipped = Counter(
            "aiflow_shadow_skipped_total", "Requests not shadowed because shadow scoring was at its limit.", ["dataset"], registry=r
        )
        self.slow_clients = Counter(
            "aiflow_slow_clients_closed_total", "Connections closed because a request's headers or body did not arrive in time.",
            ["phase"], registry=r,
        )  # fmt: skip
        self.tls_reloads = Counter(
            "aiflow_tls_certificate_reloads_total", "Changed TLS certificate files reloaded (or kept out: failed) without a restart.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.loaded_version = Gauge("aiflow_model_version", "The version being served.", ["dataset", "variant"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
