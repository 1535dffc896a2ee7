"""Certificate renewal without restart: the server's ``SSLContext`` re-reads its certificate chain when the files change.

cert-manager (or a renewed Kubernetes Secret mounted as a volume) replaces ``tls.crt`` and ``tls.key`` on disk; the
kubelet swaps them in with a symlink, which changes the files' inode. ``CertificateReloader.check`` compares each
file's (inode, mtime, size) with what it loaded last and, when they differ, calls ``load_cert_chain`` on the very
context the server listens with: every TLS handshake after that presents the new certificate, connections already
open keep theirs, and nothing restarts. A pair that does not load (the key not yet matching the new certificate, a
half-written file) is tried in a scratch context first and leaves the current certificate in place; it is tried again
when the files change again. (The kubelet swaps both files at once; only a non-atomic writer racing the check between
the scratch load and the live one could still fail a live load.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

log = logging.getLogger("aiflow.serving.tls")

Signature = tuple[tuple[int, int, int], ...]


class CertificateReloader:
    """Watches a certificate and key file pair and reloads them into the server's ``SSLContext`` when they change."""

    def __init__(self, certfile: str, keyfile: str, on_reload: Callable[[Exception | None], None] | None = None) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self.context: ssl.SSLContext | None = None
        self.on_reload = on_reload or (lambda error: None)
        self._seen: Signature | None = None

    def attach(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """Take the context the server built from these files (loaded now): later changes are reloaded into it."""
        self.context, self._seen = context, self._signature()
        return context

    def _signature(self) -> Signature | None:
        try:
            stats = [os.stat(path) for path in (self.certfile, self.keyfile)]  # follows the kubelet's symlinks
        except OSError:
            return None  # mid-swap or gone: keep what is loaded, look again later
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def check(self) -> bool:
        """Reload the pair if it changed since the last attempt; True when new handshakes now get the new certificate."""
        signature = self._signature()
        if self.context is None or signature is None or signature == self._seen:
            return False
        self._seen = signature  # one attempt (and one log line) per change of the files
        try:
            # First into a scratch context: a live context that fails half-way keeps the new certificate with the old
            # key and every handshake after that fails (measured). Only a pair that loads there reaches the live one.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.certfile, self.keyfile)
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError, ValueError) as error:
            log.warning("aiflow serve: kept the current TLS certificate; the changed %s did not load: %s", self.certfile, error)
            self.on_reload(error)
            return False
        log.info("aiflow serve: reloaded the TLS certificate from %s (new connections use it)", self.certfile)
        self.on_reload(None)
        return True

    async def watch(self, interval: float) -> None:
        """Check every ``interval`` seconds on the server's event loop (where handshakes happen), until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # never let one bad check stop the watching (DESIGN: no silent failure, no dying worker)
                log.exception("aiflow serve: TLS certificate check failed; will check again")
