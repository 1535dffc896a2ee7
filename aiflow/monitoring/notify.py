"""Webhook notifications (Slack-compatible JSON) for monitoring events: drift, retrain decisions, promotions.

Delivery is best effort: a failed delivery is retried, then logged as a warning and reported as ``False``; it
never raises into the caller (a monitoring run must not fail because a chat service is down). The webhook URL is
a secret: it is never logged.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

log = logging.getLogger("aiflow.monitoring")


def payload(event: str, text: str, fields: Mapping[str, object]) -> dict:
    """The JSON body: Slack's ``text`` and ``blocks`` (a section with the fields), plus ``event`` and ``fields``."""
    shown = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list(fields.items())[:10]]  # Slack takes 10 fields
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if shown:
        blocks.append({"type": "section", "fields": shown})
    return {"text": text, "event": event, "fields": dict(fields), "blocks": blocks}


class Notifier:
    """Posts monitoring events to a webhook (e.g. a Slack incoming webhook); no URL → every send is a no-op.

    Args:
        url: the webhook URL (a secret: from the environment, never logged), or None.
        timeout: seconds per attempt.
        retries: further attempts after a failed one.
        backoff: seconds before the first retry (doubled for each next one).

    Raises:
        ValueError: the URL is not an http(s) URL (a configuration error, raised at once; the value is not shown).
    """

    def __init__(self, url: str | None, *, timeout: float = 5, retries: int = 2, backoff: float = 0.5):
        self._url = url or None
        if self._url is not None:
            parts = urllib.parse.urlsplit(self._url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("the webhook URL must be an http:// or https:// URL with a host (value not shown: it is a secret)")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    @property
    def enabled(self) -> bool:
        return self._url is not None

    def __repr__(self) -> str:  # the URL is a secret
        return f"Notifier(enabled={self.enabled}, timeout={self.timeout}, retries={self.retries})"

    def send(self, event: str, text: str, fields: Mapping[str, object] | None = None) -> bool:
        """POST the event; whether it was delivered (a 2xx answer). Never raises on a failed delivery."""
        if self._url is None:
            return False
        body = json.dumps(payload(event, text, fields or {}), default=str).encode()
        request = urllib.request.Request(self._url, data=body, method="POST", headers={"Content-Type": "application/json"})
        problem = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    answer.read()
                    if 200 <= answer.status < 300:
                        return True
                    problem = f"HTTP {answer.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:  # refused, timed out, DNS
                reason = getattr(exc, "reason", exc)
                problem = f"{type(reason).__name__}: {reason}".replace(self._url, "<webhook>")
        log.warning("webhook: event %r not delivered after %d attempt(s) (%s)", event, self.retries + 1, problem)
        return False
