"""Bearer-token auth of the online server: tokens from ``AIFLOW_SERVE_TOKEN`` and/or a tokens file.

``AIFLOW_SERVE_TOKEN`` holds one token or several separated by commas; the tokens file
(``AIFLOW_SERVE_TOKENS_FILE`` or ``--tokens-file``) holds one per line (``#`` comments allowed) and is
re-read when its modification time or size changes, so a token is rotated without downtime: add the new
one, move the clients, remove the old one. Every valid token is compared in constant time; tokens are never
logged or stored.
"""

from __future__ import annotations

import hmac
import os
import threading
from pathlib import Path

TOKEN_ENV = "AIFLOW_SERVE_TOKEN"
TOKENS_FILE_ENV = "AIFLOW_SERVE_TOKENS_FILE"


class NoTokenError(RuntimeError):
    """The server would start without any token (and not in insecure development mode)."""


def _split(text: str, sep: str) -> list[str]:
    return [t.strip() for t in text.split(sep) if t.strip() and not t.strip().startswith("#")]


class TokenSource:
    """The set of valid tokens: fixed ones plus a file's, re-read when the file changes.

    Args:
        tokens: tokens given directly (e.g. from ``AIFLOW_SERVE_TOKEN``).
        tokens_file: a file with one token per line, or None.
    """

    def __init__(self, tokens: list[str] | None = None, tokens_file: str | os.PathLike | None = None):
        blank = [i for i, t in enumerate(tokens or []) if not t.strip()]
        if blank:  # "Bearer " would then pass: a blank token is a caller's mistake, never a credential
            raise NoTokenError(f"token {blank[0] + 1} of {len(tokens or [])} given is blank: a blank token would let 'Bearer ' in")
        self._fixed = [t.strip().encode() for t in tokens or []]
        self._file = Path(tokens_file) if tokens_file else None
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[bytes] = []
        self._lock = threading.Lock()
        if self._file is not None and not self._file.exists():
            raise NoTokenError(f"the tokens file {self._file} does not exist")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, tokens_file: str | os.PathLike | None = None) -> TokenSource:
        env = os.environ if environ is None else environ
        return cls(_split(env.get(TOKEN_ENV, ""), ","), tokens_file or env.get(TOKENS_FILE_ENV) or None)

    def _current(self) -> list[bytes]:
        if self._file is None:
            return self._fixed
        try:
            st = self._file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:  # removed mid-rotation: its tokens are no longer valid
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._from_file = [t.encode() for t in _split(self._file.read_text(), "\n")] if stamp else []
                self._stamp = stamp
            return self._fixed + self._from_file

    def count(self) -> int:
        return len(self._current())

    def valid(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <a valid token>`` (every token compared, in constant time)."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            return False
        given = authorization[7:].strip().encode()
        ok = False
        for token in self._current():
            ok |= hmac.compare_digest(given, token)
        return ok
