"""Evidently's HTML reports served by ``aiflow serve`` under links a browser can open from the Dagster UI.

A link is a capability, like an S3 presigned URL: ``/reports/<dataset>/<file>?sig=<hmac>``, where the signature is an
HMAC-SHA256 of the path under a key only Dagster and the server hold (``AIFLOW_REPORT_KEY``). A click opens the report
without a bearer token (a browser cannot send one from a link); the signature opens that one report only, and a
path the key did not sign, or any name outside ``monitoring/<dataset>/reports/``, is refused. Without a key the
server serves no report and the UI shows the report's location as a path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse

KEY_ENV = "AIFLOW_REPORT_KEY"
URL_ENV = "AIFLOW_REPORTS_URL"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.html$")
DATASET = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


def report_path(dataset: str, name: str) -> str:
    """The report's location relative to the lake root (where the monitoring writes it)."""
    if not DATASET.match(dataset) or not NAME.match(name):
        raise ValueError(f"not a report name: {dataset!r}/{name!r}")
    return f"monitoring/{dataset}/reports/{name}"


def signature(key: str, dataset: str, name: str) -> str:
    return hmac.new(key.encode(), f"/reports/{dataset}/{name}".encode(), hashlib.sha256).hexdigest()[:40]


def signed_url(base_url: str, key: str, report_uri: str) -> str:
    """The browser link of a report the monitoring wrote at ``report_uri`` (``…/monitoring/<dataset>/reports/<file>``)."""
    parts = report_uri.rstrip("/").split("/")
    dataset, name = parts[-3], parts[-1]
    report_path(dataset, name)  # refuses anything but a report
    query = urllib.parse.urlencode({"sig": signature(key, dataset, name)})
    return f"{base_url.rstrip('/')}/reports/{urllib.parse.quote(dataset)}/{urllib.parse.quote(name)}?{query}"


def verify(key: str | None, dataset: str, name: str, sig: str | None) -> bool:
    """Whether ``sig`` is the key's signature of this report (constant time); False without a key or a signature."""
    if not key or not sig:
        return False
    return hmac.compare_digest(signature(key, dataset, name), sig)
