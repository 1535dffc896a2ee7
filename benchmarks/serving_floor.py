"""The floor for the online-serving benchmark: a bare ASGI app calling the same model's ``predict_records``.

No auth, no validation, no metrics, no inference log, no framework: what serving the champion costs at the least.
Run by ``benchmarks/serving_online.py`` as ``uvicorn benchmarks.serving_floor:app`` with ``AIFLOW_HOME`` and
``BENCH_DATASET`` set.
"""

from __future__ import annotations

import json
import os

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.storage.settings import Settings

_settings = Settings.from_env()
_registry = Registry(_settings.lake())
_dataset = os.environ["BENCH_DATASET"]
_model = load_model(ModelRef.of(_registry.get(_dataset, _registry.alias(_dataset, "champion")), _settings.artifact_uri))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, out = 200, b'{"live": true}'
    if scope["method"] == "POST":
        scores = _model.predict_records(json.loads(body)["records"])
        out = json.dumps({"predictions": [float(s) for s in scores]}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
