"""The server's access log without credentials: every query-string value is replaced by ``…`` before a line is written.

A client that puts a token (or any secret) in a URL, e.g. ``?token=…``, must not find it in the logs, whatever the
answer was (the request is refused: the server reads tokens from the Authorization header only). Parameter names are
kept (``?token=…&sig=…``), so a line still says what was asked.
"""

from __future__ import annotations

import logging
import re

_VALUE = re.compile(r"=([^&#]*)")
_IN_LINE = re.compile(r"=([^&#\s\"]*)")


def redact_query(path: str, *, line: bool = False) -> str:
    """``/p?a=1&b=2`` → ``/p?a=…&b=…``; a path without a query string is unchanged. ``line``: the path sits in a longer
    log line, so a value also ends at whitespace or a quote."""
    head, sep, query = path.partition("?")
    return head + sep + (_IN_LINE if line else _VALUE).sub("=…", query) if sep else path


class RedactQueryStrings(logging.Filter):
    """A filter for ``uvicorn.access``: its records carry (client, method, path, http version, status) as args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        elif "?" in str(record.msg) and not args:
            record.msg = redact_query(str(record.msg), line=True)
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (call once uvicorn has configured logging: at startup)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
        logger.addFilter(RedactQueryStrings())
