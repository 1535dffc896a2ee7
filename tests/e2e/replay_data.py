"""Histories for ``aiflow replay`` that are not the demo: files on disk and a spec, as a user would bring them.

* ``rides``: classification (or regression), a side table (weather), daily files, Asia/Tokyo, weekly windows;
  some served weeks shifted (longer rides, another carrier mix, hotter weather, more delays).
* ``prices``: regression, no side table, one file per month, daily events, monthly windows, UTC; the level
  shifts in the served months.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from tests.aiflow.monitoring.world import REFERENCE_DAYS, ROWS_PER_DAY, START, rides, rides_spec, weather

#: Gates that let a retrain through on tiny synthetic data (the loop, not the gates, is under test here).
LENIENT_GATES = {"off": ["latency", "slices_vs_champion", "input_schema"], "champion_tolerance": 0.5, "absolute": {}}
FAST_RETRAIN = {"signals": ["drift"], "hysteresis": 1, "min_rows": 300, "min_labels": 50, "cooldown_days": 0, "max_age_days": None}


def rides_history(root: Path, problem_type: str, shifted: list[bool]) -> Path:
    """Write the rides spec and its history under ``root``: four reference weeks, then one served week per ``shifted``
    flag. Returns the spec's path; the data is in ``root / "data"``."""
    data = rides_spec(problem_type).model_dump(mode="json", exclude_none=True)  # the world's spec (columns, zone, side table)
    data["split"] = {"kind": "relative", "train_days": 14, "valid_days": 7, "test_days": 7}
    data["gates"] = LENIENT_GATES
    data["monitoring"] = {"window": "weekly", "start": START.isoformat(), "retrain": FAST_RETRAIN}
    folder = root / "data"
    (folder / "rides").mkdir(parents=True)
    (folder / "rides_weather").mkdir(parents=True)
    for d in range(REFERENCE_DAYS + 7 * len(shifted)):
        day = START + dt.timedelta(days=d)
        week = (d - REFERENCE_DAYS) // 7
        moved = d >= REFERENCE_DAYS and shifted[week]
        rides(day, ROWS_PER_DAY, seed=d, shifted=moved).write_csv(folder / "rides" / f"{day}.csv")
        weather(day - dt.timedelta(days=1) if d == 0 else day, 2 if d == 0 else 1, shifted=moved).write_csv(
            folder / "rides_weather" / f"weather-{day}.csv"
        )
    path = root / "rides.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def prices_history(root: Path, months: int, shift_from: int) -> Path:
    """A regression with no side table: one CSV per month of daily sales, prices shifting in level from month
    ``shift_from`` on. Returns the spec's path; the data is in ``root / "data"``."""
    spec = {
        "name": "prices",
        "landing": {"uri": "landing/prices"},
        "columns": {
            "sale_id": {"type": "int64"}, "region": {"type": "string"}, "size_m2": {"type": "float64"},
            "rooms": {"type": "int32"}, "price": {"type": "float64"}, "sold_at": {"type": "datetime"},
        },  # fmt: skip
        "key": ["sale_id"],
        "event_time": "sold_at",
        "timezone": "UTC",
        "problem_type": "regression",
        "target": {"name": "price_k", "source": "price", "kind": "identity", "when_null": "quarantine"},
        "known_after_event": ["price"],
        "features": {"categorical": ["region"], "numeric": ["size_m2", "rooms"], "calendar": ["month", "weekday"]},
        "split": {"kind": "relative", "train_days": 60, "valid_days": 15, "test_days": 15},
        "gates": LENIENT_GATES,
        "monitoring": {"window": "monthly", "start": "2021-01-01", "retrain": {**FAST_RETRAIN, "signals": ["realized"]}},
    }
    folder = root / "data" / "prices"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    sale = 0
    for m in range(months):
        first = dt.date(2021, 1 + m, 1)
        days = (dt.date(2021 + (m + 1) // 12, (m + 1) % 12 + 1, 1) - first).days
        n = 40 * days
        region = rng.choice(["north", "south", "east"], n)
        size = rng.gamma(6.0, 15.0, n).round(1)
        rooms = np.clip((size / 25).round().astype(int) + rng.integers(-1, 2, n), 1, 9)
        level = 1.6 if m >= shift_from else 1.0
        price = (level * (size * 3.0 + (region == "south") * 80 + rooms * 10) + rng.normal(0, 20, n)).round(1)
        when = [dt.datetime(first.year, first.month, 1 + int(i % days), 9 + int(i % 8), tzinfo=dt.UTC) for i in range(n)]
        pl.DataFrame(
            {"sale_id": np.arange(sale, sale + n), "region": region, "size_m2": size, "rooms": rooms, "price": price, "sold_at": when}
        ).sort("sold_at").write_csv(folder / f"sales-{first:%Y-%m}.csv")
        sale += n
    path = root / "prices.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
