"""``aiflow serve``: the online server (every dataset's champion over REST and the Open Inference Protocol)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiflow.spec import demo_spec_path, load_specs


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve`` on the ``aiflow`` CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve",
        help="Serve every dataset's champion over REST (/v1) and the Open Inference Protocol (/v2).",
        description="Datasets: --spec, else $AIFLOW_DATASETS (paths separated by the OS path separator), else $AIFLOW_DATASET, "
        "else the demo. Auth: bearer tokens from $AIFLOW_SERVE_TOKEN (comma-separated) and/or a tokens file. With "
        "$AIFLOW_REPORT_KEY, it also serves the monitoring's Evidently reports under the signed links the Dagster UI shows.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1, loopback only).")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--insecure-dev", action="store_true", help="Start WITHOUT authentication (development only).")
    serve.add_argument("--tokens-file", default=None, help="File of valid tokens, one per line, re-read on change ($AIFLOW_SERVE_TOKENS_FILE).")
    serve.add_argument("--reload-interval", type=float, default=5.0, help="Seconds between polls of the registry's alias log.")
    serve.add_argument("--log-interval", type=float, default=1.0, help="Seconds between inference-log flushes (the most a hard kill loses).")
    serve.add_argument("--log-batch-rows", type=int, default=10_000, help="Rows that trigger an inference-log flush early (a Delta commit costs ~10 ms).")
    serve.add_argument("--no-inference-log", action="store_true", help="Do not write the inference log (for measurements).")
    serve.add_argument("--max-batch-records", type=int, default=256, help="Most records of concurrent requests scored in one call.")
    serve.add_argument("--inline-records", type=int, default=32,
                       help="A request of this many records or more is scored at once on the event loop when no batch is in flight.")  # fmt: skip
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, help="Larger request bodies get 413.")
    serve.add_argument("--canary-fraction", type=float, default=0.1,
                       help="Share of requests the 'canary' alias answers when set (sticky per X-Request-Key header).")
    serve.add_argument("--keep-alive-timeout", type=float, default=5.0,
                       help="Seconds an idle kept-alive connection stays open after its last response (default 5).")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="Seconds a client has to send a request's headers, however slowly they trickle in (default 10).")
    serve.add_argument("--body-timeout", type=float, default=30.0,
                       help="Seconds a client has to send a request's body once its headers are in (default 30).")
    serve.add_argument("--limit-concurrency", type=int, default=1000,
                       help="Most open connections (or requests in progress); past it, requests get 503 (default 1000).")
    serve.add_argument("--tls-cert", default=None, help="TLS certificate file (with --tls-key): serve HTTPS.")
    serve.add_argument("--tls-key", default=None, help="TLS private key file.")
    serve.add_argument("--tls-reload-interval", type=float, default=10.0,
                       help="Seconds between looks at the certificate files: a renewed pair is used by new connections, no restart.")
    serve.set_defaults(func=cmd_serve)


def _locations(args) -> list[str]:
    if args.spec:
        return [args.spec]
    if os.environ.get("AIFLOW_DATASETS"):
        return [p for p in os.environ["AIFLOW_DATASETS"].split(os.pathsep) if p]
    return [os.environ.get("AIFLOW_DATASET") or str(demo_spec_path())]


def cmd_serve(args) -> int:
    from aiflow.serving.auth import NoTokenError, TokenSource

    try:
        tokens = TokenSource.from_env(tokens_file=args.tokens_file)
    except NoTokenError as exc:
        print(f"aiflow serve: error: {exc}", file=sys.stderr)
        return 2
    if args.insecure_dev:
        tokens = None
        print("aiflow serve: WARNING: --insecure-dev: NO AUTHENTICATION. Never expose this server.", file=sys.stderr)
    elif tokens.count() == 0:
        print(
            "aiflow serve: error: refusing to start without a token: set AIFLOW_SERVE_TOKEN (comma-separated for rotation) or "
            "--tokens-file, or pass --insecure-dev for a local development server without authentication",
            file=sys.stderr,
        )
        return 2
    if not 0.0 <= args.canary_fraction <= 1.0:
        print(f"aiflow serve: error: --canary-fraction must be between 0 and 1, got {args.canary_fraction}", file=sys.stderr)
        return 2
    for option in ("keep_alive_timeout", "inline_records", "header_timeout", "body_timeout", "limit_concurrency", "tls_reload_interval"):
        if getattr(args, option) <= 0:
            print(f"aiflow serve: error: --{option.replace('_', '-')} must be positive, got {getattr(args, option)}", file=sys.stderr)
            return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("aiflow serve: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2

    import uvicorn

    from aiflow.serving.online import ServeConfig, create_app
    from aiflow.serving.reports import KEY_ENV as REPORT_KEY_ENV
    from aiflow.serving.slow_clients import guarded_protocol
    from aiflow.serving.tls import CertificateReloader

    specs = load_specs(_locations(args))
    settings = args.settings
    config = ServeConfig(
        lake=settings.lake(), artifact_root=settings.artifact_uri, artifact_options=settings.storage_options(),
        datasets=[s.name for s in specs], tokens=tokens, reload_interval=args.reload_interval, max_body_bytes=args.max_body_bytes,
        log_interval=args.log_interval, log_batch_rows=args.log_batch_rows, canary_fraction=args.canary_fraction,
        inference_log=not args.no_inference_log, max_batch_records=args.max_batch_records, inline_records=args.inline_records,
        report_key=os.environ.get(REPORT_KEY_ENV) or None,  # a secret: from the environment at start, never logged
        tls=CertificateReloader(args.tls_cert, args.tls_key) if args.tls_cert else None, tls_reload_interval=args.tls_reload_interval,
    )  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"aiflow serve: serving {', '.join(config.datasets)} on {args.host}:{args.port}", file=sys.stderr)
    app = create_app(config)
    slow_clients = app.state.metrics.slow_clients
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="info", ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
        ssl_context_factory=(lambda _, default: config.tls.attach(default())) if config.tls else None,
        timeout_graceful_shutdown=max(10.0, 3 * args.log_interval), timeout_keep_alive=args.keep_alive_timeout,
        limit_concurrency=args.limit_concurrency,
        http=guarded_protocol(args.header_timeout, args.body_timeout, on_timeout=lambda phase: slow_clients.labels(phase).inc()),
    )  # fmt: skip
    return 0
