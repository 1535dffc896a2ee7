"""Scope: the webhook notifier against a real HTTP receiver on 127.0.0.1: the Slack-compatible JSON arrives; a
receiver answering 500, or none at all, gives False after the retries, never an exception, and the URL (a secret)
stays out of the log; no URL is a no-op."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aiflow.monitoring.notify import Notifier


@contextmanager
def receiver(status: int) -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver answering ``status``; yields its URL (with a secret-looking path) and the bodies it got."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append({"content_type": self.headers["Content-Type"], "path": self.path, "json": json.loads(body)})
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/s3cr3t", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_receiver_gets_the_event_as_slack_json():
    with receiver(200) as (url, got):
        fields = {"dataset": "trips", "window_end": dt.date(2024, 2, 5), "drift_share": 0.42}
        assert Notifier(url).send("retrain", "trips: retrain started (drift 0.42 > 0.30)", fields) is True
    assert len(got) == 1
    body = got[0]["json"]
    assert got[0]["content_type"] == "application/json" and got[0]["path"] == "/services/T000/B000/s3cr3t"
    assert body["text"] == "trips: retrain started (drift 0.42 > 0.30)" and body["event"] == "retrain"
    assert body["fields"] == {"dataset": "trips", "window_end": "2024-02-05", "drift_share": 0.42}
    assert body["blocks"][0]["text"]["text"] == body["text"]
    assert {"type": "mrkdwn", "text": "*drift_share*\n0.42"} in body["blocks"][1]["fields"]


def test_a_failing_receiver_gives_false_after_the_retries_without_leaking_the_url(caplog):
    with receiver(500) as (url, got), caplog.at_level(logging.WARNING, logger="aiflow.monitoring"):
        assert Notifier(url, retries=2, backoff=0.01).send("drift", "trips drifted", {}) is False
    assert len(got) == 3  # one attempt and two retries
    assert "not delivered after 3 attempt(s) (HTTP 500)" in caplog.text
    assert "s3cr3t" not in caplog.text and "127.0.0.1" not in caplog.text


def test_a_receiver_that_is_down_gives_false(caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/s3cr3t"
    with caplog.at_level(logging.WARNING, logger="aiflow.monitoring"):
        assert Notifier(url, retries=1, backoff=0.01, timeout=2).send("drift", "trips drifted", {"n": 1}) is False
    assert "not delivered after 2 attempt(s)" in caplog.text
    assert "s3cr3t" not in caplog.text and str(port) not in caplog.text


def test_no_url_is_a_no_op_and_the_repr_hides_the_url(caplog):
    with caplog.at_level(logging.WARNING, logger="aiflow.monitoring"):
        assert Notifier(None).send("drift", "x", {}) is False
        assert Notifier("").send("drift", "x", {}) is False
    assert caplog.text == ""
    assert "s3cr3t" not in repr(Notifier("http://127.0.0.1:1/s3cr3t"))


def test_a_malformed_url_is_a_configuration_error_that_does_not_echo_it():
    with pytest.raises(ValueError, match="must be an http:// or https:// URL") as info:
        Notifier("hooks.example/s3cr3t")
    assert "s3cr3t" not in str(info.value)
