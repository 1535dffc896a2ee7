"""The models being served (one per dataset and variant) and their hot reload from the registry's alias log.

A background thread polls the Delta version of ``registry/alias_events`` every ``interval`` seconds. When
it moved, each dataset's alias is read again; a version that differs from the one served is loaded
*beside* it (:func:`load_bundle` verifies every file's SHA-256 against the registry first), warmed with one
prediction, and swapped in by replacing one dictionary entry (atomic under the GIL): a request holds the
:class:`Served` it started with, so none fails during a swap. A version that fails to load or verify
leaves the old one serving; the error is kept (``/v1/models``), counted (metrics) and logged. It is tried
again only after the alias log moves again (or the server restarts).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.bundle import LoadedModel
from aiflow.models.registry import Registry
from aiflow.serving.schema import Field, input_fields
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables

log = logging.getLogger("aiflow.serving")

CHAMPION, CANARY, CHALLENGER = "champion", "canary", "challenger"
#: The aliases served: the champion answers, the canary answers a share of traffic, the challenger scores in shadow.
VARIANTS = (CHAMPION, CANARY, CHALLENGER)


@dataclass(frozen=True)
class Served:
    """One loaded, verified, warmed model version."""

    dataset: str
    variant: str
    version: int
    model: LoadedModel
    fields: list[Field]
    loaded_at: dt.datetime

    @property
    def classification(self) -> bool:
        return self.model.problem_type == "classification"


@dataclass
class Slot:
    """What a dataset/variant serves now, and the last reload problem."""

    served: Served | None = None
    last_error: str | None = None
    failed_version: int | None = None


def warm(model: LoadedModel) -> None:
    """One prediction on zero inputs (the unknown category, the mean value): the first request pays no lazy set-up."""
    mi = model.model_inputs
    model.predict_arrays(np.zeros((1, len(mi.categorical)), np.int64), np.zeros((1, len(mi.numeric)), np.float32))


class ModelHolder:
    """Loaded models per dataset and variant (champion, canary, challenger), reloaded when the registry's aliases change.

    Args:
        lake: the lake holding the registry.
        datasets: the dataset (= registered model) names to serve.
        artifact_root: the artifact store's root (registry locations are relative to it).
        artifact_options: S3 options for the artifact store (None locally).
        on_load: called with (dataset, variant, version or None, error or None) after each load attempt.
        on_remove: called with (dataset, variant, version) when a canary or challenger alias removed stops being served.
    """

    def __init__(self, lake: Lake, datasets: list[str], artifact_root: str, artifact_options: dict | None = None,
                 on_load: Callable[[str, str, int | None, Exception | None], None] | None = None,
                 on_remove: Callable[[str, str, int], None] | None = None):  # fmt: skip
        self.lake, self.registry = lake, Registry(lake)
        self.datasets, self.artifact_root, self.artifact_options = list(datasets), artifact_root, artifact_options
        self.slots: dict[tuple[str, str], Slot] = {(d, v): Slot() for d in self.datasets for v in VARIANTS}
        self._on_load, self._on_remove = on_load, on_remove
        self._seen: int | None = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- serving side
    def get(self, dataset: str, variant: str = CHAMPION) -> Served | None:
        slot = self.slots.get((dataset, variant))
        return slot.served if slot else None

    def ready(self) -> bool:
        """Every dataset has a champion loaded."""
        return all(self.get(d) is not None for d in self.datasets)

    def describe(self) -> list[dict]:
        out = []
        for (dataset, variant), slot in sorted(self.slots.items()):
            s = slot.served
            if variant != CHAMPION and s is None and slot.last_error is None:
                continue  # an optional alias that is not set
            out.append({
                "name": dataset, "variant": variant, "version": s.version if s else None,
                "family": s.model.family if s else None, "artifact_sha256": s.model.digest if s else None,
                "loaded_at": s.loaded_at.isoformat() if s else None, "last_reload_error": slot.last_error,
            })  # fmt: skip
        return out

    # --------------------------------------------------------------- reload side
    def refresh(self) -> bool:
        """Reload what changed in the alias log since the last call; True when the log had moved."""
        version = self.lake.version(Tables.alias_events())
        if version == self._seen:
            return False
        self._seen = version
        for dataset in self.datasets:
            for variant in VARIANTS:
                self._sync(dataset, variant)
        return True

    def _sync(self, dataset: str, variant: str) -> None:
        slot = self.slots[(dataset, variant)]
        wanted = self.registry.alias(dataset, variant) if self._seen is not None else None
        if wanted is None:
            if variant == CHAMPION:  # the champion keeps serving; a removed canary or challenger stops
                if slot.served is None:
                    slot.last_error = f"no {variant!r} alias for {dataset!r} in the registry yet"
            else:
                old, slot.served, slot.last_error = slot.served, None, None
                if old is not None:
                    log.info("serving: %s %s v%s no longer served: the %r alias was removed from the registry", dataset, variant,
                             old.version, variant)  # fmt: skip
                    if self._on_remove:
                        self._on_remove(dataset, variant, old.version)
            return
        if slot.served is not None and slot.served.version == wanted:
            return
        try:
            mv = self.registry.get(dataset, wanted)
            model = load_model(ModelRef.of(mv, self.artifact_root), self.artifact_options)
            spec = parse_spec(model.spec, f"{model.uri}/spec.json")
            warm(model)
        except Exception as exc:  # the old version keeps serving; the failure is kept, counted and logged
            slot.last_error = f"v{wanted}: {type(exc).__name__}: {exc}"
            slot.failed_version = wanted
            log.error("serving: %s %s v%s failed to load, %s: %s", dataset, variant, wanted,
                      f"v{slot.served.version} keeps serving" if slot.served else "nothing is served", exc)  # fmt: skip
            if self._on_load:
                self._on_load(dataset, variant, wanted, exc)
            return
        old = slot.served
        slot.served = Served(dataset, variant, wanted, model, input_fields(spec), dt.datetime.now(dt.UTC))  # the atomic swap
        slot.last_error, slot.failed_version = None, None
        log.info("serving: %s %s now v%s (was %s)", dataset, variant, wanted, f"v{old.version}" if old else "nothing")
        if self._on_load:
            self._on_load(dataset, variant, wanted, None)

    def start(self, interval: float) -> None:
        """Poll the alias log every ``interval`` seconds in a background thread."""

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception as exc:  # the registry unreachable for a moment: keep serving, try at the next tick
                    log.error("serving: reading the registry's alias log failed (serving unchanged): %s", exc)

        self._thread = threading.Thread(target=run, name="model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
