"""The engine's cleansing + feature pipeline on in-memory frames: ``refresh_silver`` + ``refresh_features``
(full refresh) with the Delta reads and writes taken out.

It calls the engine's pure functions exactly the way ``aiflow.data.refine`` does: ``cleanse`` per table,
its ``valid`` and ``rejected`` frames collected together (``pl.collect_all``, in-memory engine); the feature state fitted on
the training window of all silver rows joined with the side tables; then ``build_features``
collected with ``engine="in-memory"``. Engine functions are looked up on their modules at call time,
so the what-if variants of ``benchmarks.whatif`` apply.
"""

from __future__ import annotations

import time

import polars as pl

from aiflow.data import cleanse as C
from aiflow.data import features as F
from aiflow.spec import DatasetSpec


def _collect(cleansed: C.Cleansed, together: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    if together:  # what refresh_silver does: one plan, the shared de-duplication computed once
        valid, rejected = pl.collect_all([cleansed.valid, cleansed.rejected], engine="in-memory")
        return valid, rejected
    return cleansed.valid.collect(), cleansed.rejected.collect()  # the engine before 2026-11-23 19:14


def run(flights: pl.DataFrame, sides_bronze: dict[str, pl.DataFrame], spec: DatasetSpec, probe=None, collect_together: bool = True) -> dict:
    phases: dict[str, float] = {}
    probe = probe or (lambda name: None)
    t = time.perf_counter()
    silver, rejected = _collect(C.cleanse(flights.lazy(), spec), collect_together)
    phases["cleanse_main"] = time.perf_counter() - t
    probe("cleanse_main")

    t = time.perf_counter()
    sides, side_rejected = {}, {}
    for name, frame in sides_bronze.items():
        sides[name], side_rejected[name] = _collect(C.cleanse(frame.lazy(), spec.side(name)), collect_together)
    phases["cleanse_sides"] = time.perf_counter() - t
    probe("cleanse_sides")

    t = time.perf_counter()
    lazy_sides = {k: v.lazy() for k, v in sides.items()}
    state, _ = F.fit_on_training_window(silver.lazy(), lazy_sides, spec)
    phases["join_fit"] = time.perf_counter() - t
    probe("join_fit")

    t = time.perf_counter()
    features = F.build_features(silver.lazy(), lazy_sides, state, spec).collect(engine="in-memory")
    phases["build_features"] = time.perf_counter() - t
    probe("build_features")
    return {
        "features": features,
        "silver_rows": silver.height,
        "rejected_rows": rejected.height,
        "side_silver_rows": {k: v.height for k, v in sides.items()},
        "side_rejected_rows": {k: v.height for k, v in side_rejected.items()},
        "vocab_sizes": {k: len(v) for k, v in state.vocab.items()},
        "phases": phases,
    }
