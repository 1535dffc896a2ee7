"""Step failures sorted by cause for Dagster: infrastructure faults retried with backoff, everything else failed at once.

An infrastructure fault (a store or the network did not answer, a killed process: :mod:`aiflow.storage.faults`)
raises ``RetryRequested``: Dagster re-runs the step in the same run after ``wait_s * 2**attempt`` seconds, up to
``retries`` times, then fails it naming the cause. Anything else (bad spec, failed gate, bad data, a bug) raises
``Failure(allow_retries=False)``: retrying cannot help, so no retry policy or retry request applies.
A run whose worker itself died is retried by the instance's run retries (``run_retries`` in dagster.yaml).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

from dagster import Failure, RetryRequested

from aiflow.storage.faults import Fault, classify


def raise_for(context, fault: Fault, *, retries: int, wait_s: float, what: str, metadata: Mapping | None = None) -> NoReturn:
    """Raise ``RetryRequested`` for an infrastructure fault with retries left, ``Failure(allow_retries=False)`` otherwise."""
    attempt = context.retry_number  # 0 on the first attempt
    meta = {"fault": fault.kind, "attempt": attempt + 1, **({"store": fault.store} if fault.store else {}), **(metadata or {})}
    if fault.retryable and attempt < retries:
        wait = wait_s * 2**attempt
        context.log.warning(f"{what} failed on infrastructure, retry {attempt + 1} of {retries} in {wait:g} s: {fault.message}")
        raise RetryRequested(max_retries=retries, seconds_to_wait=wait)
    if fault.retryable:
        raise Failure(f"{what} failed on infrastructure {attempt + 1} times, giving up: {fault.message}", metadata=meta, allow_retries=False)
    raise Failure(f"{what} failed: {fault.message}", metadata=meta, allow_retries=False)


@contextmanager
def classified(context, stores: Mapping[str, str], *, retries: int, wait_s: float, what: str) -> Iterator[None]:
    """Run a step's body; an exception that is not already a Dagster decision is sorted and re-raised by :func:`raise_for`."""
    try:
        yield
    except (Failure, RetryRequested):
        raise
    except Exception as exc:
        raise_for(context, classify(exc, stores), retries=retries, wait_s=wait_s, what=what)
