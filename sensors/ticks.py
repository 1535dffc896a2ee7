"""How often the loop's sensors tick: their defaults, or ``AIFLOW_TICK_SECONDS`` for all of them (configuration, read
when the code location loads; the demo and the daemon tests shorten it to a few seconds)."""

import os

TICK_ENV = "AIFLOW_TICK_SECONDS"


def tick_seconds(default: int) -> int:
    """The sensor interval: ``AIFLOW_TICK_SECONDS`` when set (at least 1), else ``default``."""
    value = os.environ.get(TICK_ENV)
    if not value:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{TICK_ENV}={value!r} is not a whole number of seconds") from None
    if seconds < 1:
        raise ValueError(f"{TICK_ENV}={value!r} must be at least 1 second")
    return seconds
