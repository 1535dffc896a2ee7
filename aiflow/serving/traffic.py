"""Traffic policy of the online server: the canary split (sticky per request key) and shadow scoring by the challenger.

**Canary**: when a dataset has a ``canary`` alias loaded, a request goes to it with probability
``fraction``. A request that carries a key (header ``X-Request-Key``) is routed by a hash of the key, so the
same key always lands on the same variant while the fraction and the canary stay the same.

**Shadow**: when a ``challenger`` is loaded, it scores the same records after the response is sent (a
background task on a worker thread) and its answers go to the inference log with variant ``shadow`` and the
request ids of the answered records; they are never returned. At most ``max_pending`` shadow scorings run
or wait at once; past that a request is not shadowed (counted), so shadow work never queues up behind
traffic: the bound on what shadow adds to a response is the CPU it shares, never a wait.
"""

from __future__ import annotations

import hashlib
import random
import threading

from aiflow.serving.holder import CANARY, CHAMPION

KEY_HEADER = "x-request-key"


def canary_share(key: str) -> float:
    """A stable number in [0, 1) for ``key`` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def choose_variant(key: str | None, fraction: float, has_canary: bool, rng: random.Random | None = None) -> str:
    """``canary`` for a ``fraction`` of requests (by key when given, else at random), else ``champion``."""
    if not has_canary or fraction <= 0:
        return CHAMPION
    draw = canary_share(key) if key else (rng or random).random()
    return CANARY if draw < fraction else CHAMPION


class ShadowGate:
    """Admits at most ``max_pending`` shadow scorings at once (non-blocking)."""

    def __init__(self, max_pending: int = 4):
        self._slots = threading.BoundedSemaphore(max_pending)

    def try_enter(self) -> bool:
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()
