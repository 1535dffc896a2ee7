"""The one error type of the online server's request handling: an HTTP status and a message (rendered as ``{"error": ...}``)."""

from __future__ import annotations


class HTTPError(Exception):
    """A request that cannot be answered: ``status``, a message naming what to fix, extra JSON fields (e.g. ``problems``)."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra
