"""Adaptive micro-batching: concurrent requests for one model are scored together in one call of the shared encoder.

Encoding raw records (:meth:`LoadedModel.predict_records`, a Polars pipeline) has a fixed cost per call that
dwarfs the per-record cost (measured: ~10 ms for 1 record, ~40 ms for 100), so scoring concurrent requests
one by one caps the request rate at the cost of a call. A :class:`MicroBatcher` runs one worker per served
model: it takes every request waiting at that moment (up to ``max_records`` records), scores them in one
call on a worker thread, and hands each request its slice. There is no timer: while a batch is being
scored, the next one gathers, so a lone request waits for nothing and a busy server batches by itself.
A batch that fails to encode (a value the encoder refuses) is scored again request by request, so only the
offending request gets the error.

A request that already holds many records (``inline_from`` or more) gains nothing from batching: when no batch
is waiting or being scored, it is scored right away on the event loop by ``inline`` (the encoder's pure-Python
fast path, which holds the GIL either way), skipping the two thread hops; ``inline`` answers None for a batch
it cannot score cheaply (the Polars path, which releases the GIL), and that request is queued as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

_STOP = object()


class MicroBatcher:
    """Scores the requests of one model in batches.

    Args:
        predict: records -> one value per record (e.g. ``LoadedModel.predict_records``); runs on a worker thread.
        max_records: the most records scored in one call (a request larger than this is scored alone).
        on_batch: called with (requests, records) of every scoring call (metrics).
        inline: records -> values, or None when it cannot score them cheaply; runs on the event loop (None: never inline).
        inline_from: the fewest records of a request scored inline (at most ``max_records``).
    """

    def __init__(self, predict: Callable[[list[dict]], Sequence[float]], max_records: int = 256,
                 on_batch: Callable[[int, int], None] | None = None,
                 inline: Callable[[list[dict]], Sequence[float] | None] | None = None, inline_from: int = 32):  # fmt: skip
        self.predict, self.max_records, self.on_batch = predict, max_records, on_batch
        self.inline, self.inline_from = inline, inline_from
        self._queue: asyncio.Queue = asyncio.Queue()
        self._scoring = False  # a batch is being scored on the worker thread
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self.batches = 0  # scoring calls made (for tests and the benchmark)
        self.inlined = 0  # of which scored inline on the event loop

    async def submit(self, records: list[dict]) -> np.ndarray:
        """The model's values for ``records``; raises what ``predict`` (or ``inline``) raised for them."""
        if self.inline is not None and self.inline_from <= len(records) <= self.max_records and not self._scoring and self._queue.empty():
            values = self.inline(records)  # nothing awaited before: no batch can start meanwhile
            if values is not None:
                self.batches += 1
                self.inlined += 1
                if self.on_batch:
                    self.on_batch(1, len(records))
                return np.asarray(values)
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((records, future))
        return await future

    def close(self) -> None:
        """Score what is queued, then stop the worker (a model swapped out)."""
        self._queue.put_nowait(_STOP)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            batch, size, stop = [item], len(item[0]), False
            while not self._queue.empty() and size < self.max_records:
                nxt = self._queue.get_nowait()
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._scoring = True
            try:
                await self._score(batch)
            finally:
                self._scoring = False
            if stop:
                return

    async def _score(self, batch: list[tuple[list[dict], asyncio.Future]]) -> None:
        records = [r for recs, _ in batch for r in recs]
        self.batches += 1
        if self.on_batch:
            self.on_batch(len(batch), len(records))
        try:
            values = np.asarray(await asyncio.to_thread(self.predict, records))
        except Exception as exc:  # handed to the waiting request (several: retried one by one to find the culprit)
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for one in batch:  # find the request(s) at fault; the others get their answers
                await self._score([one])
            return
        start = 0
        for recs, future in batch:
            if not future.done():
                future.set_result(values[start : start + len(recs)])
            start += len(recs)
