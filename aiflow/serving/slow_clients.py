"""Slow clients are cut off: a request's headers and its body each have a deadline, counted from when they start.

Hand-written because the installed uvicorn (0.54) has no read timeout: its keep-alive timer is armed only after a
response, so a connection that never finishes its headers (slowloris) or its body holds a socket and a parser forever,
and ``h11_max_incomplete_event_size`` bounds bytes, not time. This is uvicorn's own httptools protocol (httptools is
pinned in the lock, and is what uvicorn's ``http="auto"`` picks) with one timer per connection:

- headers: from the connection (or the first byte of the next request on a kept-alive connection) to the end of the
  headers, at most ``header_timeout`` seconds, however slowly the bytes trickle in;
- body: from the end of the headers to the end of the body, at most ``body_timeout`` seconds.

Past a deadline the connection is closed (the app, if it was reading the body, sees a disconnect) and ``on_timeout``
hears the phase (the server counts it in ``aiflow_slow_clients_closed_total``). Idle kept-alive connections are closed by
uvicorn's ``timeout_keep_alive``; the number of connections by its ``limit_concurrency`` (503 past it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER, BODY = "header", "body"


def guarded_protocol(header_timeout: float, body_timeout: float, on_timeout: Callable[[str], None] | None = None) -> type:
    """A uvicorn HTTP protocol class (pass as ``uvicorn.run(..., http=...)``) enforcing the two read deadlines."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _read_timer: asyncio.TimerHandle | None = None

        def _arm(self, phase: str) -> None:
            self._disarm()
            timeout = header_timeout if phase == HEADER else body_timeout
            self._read_timer = self.loop.call_later(timeout, self._read_timed_out, phase)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self, phase: str) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()
                if on_timeout is not None:
                    on_timeout(phase)

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(HEADER)

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._read_timer is None:  # the first bytes of the next request on a kept-alive connection
                self._arm(HEADER)
            super().data_received(data)

        def on_message_begin(self) -> None:
            if self._read_timer is None:  # a pipelined request begins in the same bytes as the previous one's end
                self._arm(HEADER)
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._arm(BODY)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol
