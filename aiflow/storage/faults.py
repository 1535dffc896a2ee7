"""Failures sorted by cause: infrastructure (a store or network that did not answer, a killed process) or not.

An infrastructure fault is worth retrying as it is: the same request later may succeed. Anything else (a bad
spec, a failed gate, bad data, a bug) fails the same way every time, so it is never retried. The sorting looks
at the exception and every exception chained to it (``__cause__``, ``__context__``), by class and by the
words storage clients put in their messages (delta-rs and object_store report a refused S3 connection as an
``OSError`` whose text says ``Connection refused``). Messages are cleaned for people: terminal colour codes
removed, credentials in URIs masked.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

INFRASTRUCTURE = "infrastructure"
USER = "user"

#: Exception classes (by name: the engine does not import every client library) that mean "did not answer".
_UNREACHABLE_CLASSES = {
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError",
    "TimeoutError", "socket.timeout", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectTimeout", "ReadTimeout", "OperationalError", "InterfaceError", "DisconnectionError",
}  # fmt: skip
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.EPIPE, errno.ESTALE,
}  # fmt: skip
#: Words of storage and network clients for a store that did not answer (delta-rs / object_store, botocore,
#: libpq, requests). A refused SQL statement or a missing table is not among them.
_UNREACHABLE_TEXT = re.compile(
    r"connection refused|connection reset|connection aborted|connection closed|broken pipe|tcp connect error"
    r"|error sending request|timed out|timeout|dns error|name or service not known|temporary failure in name resolution"
    r"|could not connect to server|server closed the connection|connection to server .* failed|no route to host"
    r"|network is unreachable|service unavailable|slow ?down|503 |too many requests|throttl",
    re.IGNORECASE,
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SECRET_PARAM = re.compile(r"(pass(word)?|secret|token|key|signature|credential|sig)", re.IGNORECASE)
_URI = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


@dataclass(frozen=True)
class Fault:
    """What a failure was: ``kind`` (infrastructure or user), the store it concerns (if known) and a clean message."""

    kind: str
    message: str
    store: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind == INFRASTRUCTURE


def safe_uri(uri: str) -> str:
    """``uri`` without credentials: the password of ``user:password@`` and secret-looking query values masked."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or not parts.netloc:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "&".join(
        f"{k}=***" if _SECRET_PARAM.search(k) else f"{k}={v}" if sep else k
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def clean(text: str) -> str:
    """A client's message made readable and safe: colour codes removed, every URI's credentials masked."""
    return _URI.sub(lambda m: safe_uri(m.group(0)), _ANSI.sub("", text))


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception chained to it, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _unreachable(exc: BaseException) -> bool:
    if type(exc).__name__ in _UNREACHABLE_CLASSES or isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return True
    return isinstance(exc, OSError | RuntimeError) and bool(_UNREACHABLE_TEXT.search(str(exc)))


def _store_of(text: str, stores: Mapping[str, str]) -> str | None:
    """The first store (name -> URI) whose location the message mentions: its path, or its bucket and key prefix
    (an S3 client may print them apart, URL-encoded: ``GET http://host/bucket?prefix=lake%2Ffeatures``)."""
    text = unquote(text)
    for name, uri in stores.items():
        location = uri.split("://", 1)[-1].rstrip("/")
        if "://" in uri and "/" in location:
            bucket, key = location.split("/", 1)
            if bucket in text and key in text:
                return name
        elif location and location in text:
            return name
    return None


def classify(exc: BaseException, stores: Mapping[str, str] | None = None) -> Fault:
    """Sort ``exc``: infrastructure when it or an exception chained to it says a store or the network did not answer.

    Args:
        exc: the failure.
        stores: the stores the failing work used, name -> URI (e.g. ``{"lake": "s3://b/lake"}``); the message
            names the one the error mentions, or all of them when it mentions none.
    """
    stores = dict(stores or {})
    for link in chain(exc):
        if _unreachable(link):
            text = clean(str(link)).strip()
            store = _store_of(text, stores)
            named = stores if store is None else {store: stores[store]}
            where = " or ".join(f"{name} at {safe_uri(uri)}" for name, uri in named.items()) or "a store or service"
            first = " ".join(text.split())
            return Fault(INFRASTRUCTURE, f"storage or network unavailable ({where}): {type(link).__name__}: {first}", store)
    return Fault(USER, f"{type(exc).__name__}: {clean(str(exc)).strip()}")
