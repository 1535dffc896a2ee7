"""Typed hand-offs between the model-plane steps: candidates, their evaluations and registrations.

Three append-only Delta tables in the registry area, one row per record, each keyed by an id:

* ``registry/candidates`` — a trained candidate (artifact, bundle digest, pinned data, its family, its
  validation metrics, the naive reference's (``baseline_metrics``) and every trained family's
  (``family_metrics``, for comparison), params), written by the candidate asset and by the sweep's select step;
* ``registry/evaluations`` — one evaluation of one candidate (test metrics, the champion's on the
  same rows, gate results, slices, plot), keyed by ``evaluation_id`` and pointing at ``candidate_id``;
* ``registry/registrations`` — which model version a candidate's evaluation became.

Every row records the orchestrator run that wrote it, so each downstream step reads the row of its
own run (or of an explicit id), never "whatever was materialized last": two runs at once cannot mix
their candidates. Rows are only ever appended, and concurrent Delta appends all commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import polars as pl
from deltalake.exceptions import CommitFailedError

from aiflow.storage.lake import Lake

CANDIDATES = "registry/candidates"
EVALUATIONS = "registry/evaluations"
REGISTRATIONS = "registry/registrations"

_UTC = pl.Datetime("us", "UTC")


def new_id() -> str:
    """A fresh record id (16 hex characters)."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Candidate:
    """A trained model waiting for its evaluation (one row of ``registry/candidates``)."""

    TABLE: ClassVar[str] = CANDIDATES
    JSON: ClassVar[tuple[str, ...]] = ("valid_metrics", "baseline_metrics", "params", "family_metrics")
    SCHEMA: ClassVar[dict[str, pl.DataType]] = {
        "candidate_id": pl.String(), "name": pl.String(), "run_id": pl.String(), "created_at": _UTC,
        "artifact_uri": pl.String(), "artifact_sha256": pl.String(), "features_uri": pl.String(),
        "data_version": pl.Int64(), "valid_metrics": pl.String(), "baseline_metrics": pl.String(),
        "params": pl.String(), "source": pl.String(), "family": pl.String(), "family_metrics": pl.String(),
    }  # fmt: skip

    candidate_id: str
    name: str
    run_id: str
    created_at: dt.datetime
    artifact_uri: str
    artifact_sha256: str
    features_uri: str
    data_version: int
    valid_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    params: dict[str, Any]
    source: str
    family: str | None = None
    family_metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.candidate_id


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one candidate on its held-out rows (one row of ``registry/evaluations``)."""

    TABLE: ClassVar[str] = EVALUATIONS
    JSON: ClassVar[tuple[str, ...]] = ("test_metrics", "champion_metrics", "gate_results", "slices", "notes")
    SCHEMA: ClassVar[dict[str, pl.DataType]] = {
        "evaluation_id": pl.String(), "candidate_id": pl.String(), "name": pl.String(), "run_id": pl.String(),
        "created_at": _UTC, "artifact_sha256": pl.String(), "test_metrics": pl.String(),
        "champion_version": pl.Int64(), "champion_metrics": pl.String(), "rows": pl.Int64(),
        "latency_ms_per_1k": pl.Float64(), "gate_results": pl.String(), "gates_passed": pl.Boolean(),
        "slices": pl.String(), "plot_uri": pl.String(), "notes": pl.String(),
    }  # fmt: skip

    evaluation_id: str
    candidate_id: str
    name: str
    run_id: str
    created_at: dt.datetime
    artifact_sha256: str
    test_metrics: dict[str, float]
    champion_version: int | None
    champion_metrics: dict[str, float]
    rows: int
    latency_ms_per_1k: float
    gate_results: dict[str, dict[str, Any]]
    gates_passed: bool
    slices: list[dict[str, Any]]
    plot_uri: str | None
    notes: list[str]

    @property
    def key(self) -> str:
        return self.candidate_id


@dataclass(frozen=True)
class Registration:
    """The model version an evaluated candidate was registered as (one row of ``registry/registrations``)."""

    TABLE: ClassVar[str] = REGISTRATIONS
    JSON: ClassVar[tuple[str, ...]] = ()
    SCHEMA: ClassVar[dict[str, pl.DataType]] = {
        "candidate_id": pl.String(), "evaluation_id": pl.String(), "name": pl.String(), "run_id": pl.String(),
        "created_at": _UTC, "version": pl.Int64(), "gates_passed": pl.Boolean(),
    }  # fmt: skip

    candidate_id: str
    evaluation_id: str
    name: str
    run_id: str
    created_at: dt.datetime
    version: int
    gates_passed: bool

    @property
    def key(self) -> str:
        return self.candidate_id


R = TypeVar("R", Candidate, Evaluation, Registration)


@dataclass(frozen=True)
class Resolved(Generic[R]):
    """A record and how it was found (a sentence for the log)."""

    record: R
    how: str


class HandoffNotFoundError(LookupError):
    """No record matches: the message says what was looked for and how to name one explicitly."""


class Handoffs:
    """Read and append the hand-off records of every model in ``lake``."""

    def __init__(self, lake: Lake, *, max_attempts: int = 10):
        self.lake = lake
        self.max_attempts = max_attempts

    # ---------------------------------------------------------------- writing
    def record_candidate(
        self,
        name: str,
        *,
        run_id: str,
        artifact_uri: str,
        artifact_sha256: str,
        features_uri: str,
        data_version: int,
        valid_metrics: Mapping[str, float],
        baseline_metrics: Mapping[str, float],
        params: Mapping[str, Any],
        source: str,
        family: str | None = None,
        family_metrics: Mapping[str, Mapping[str, float]] | None = None,
    ) -> Candidate:
        """Append a candidate with a new id and return it (``baseline_metrics``: the naive reference's)."""
        if not run_id:
            raise ValueError("a candidate needs the run that trained it (run_id)")
        record = Candidate(
            candidate_id=new_id(), name=name, run_id=run_id, created_at=_now(), artifact_uri=artifact_uri,
            artifact_sha256=artifact_sha256.lower(), features_uri=features_uri, data_version=int(data_version),
            valid_metrics=_floats(valid_metrics), baseline_metrics=_floats(baseline_metrics), params=_plain(params), source=source,
            family=family, family_metrics={str(f): _floats(m) for f, m in (family_metrics or {}).items()},
        )  # fmt: skip
        return self._append(record)

    def record_evaluation(
        self,
        candidate: Candidate,
        *,
        run_id: str,
        test_metrics: Mapping[str, float],
        champion_version: int | None,
        champion_metrics: Mapping[str, float] | None,
        rows: int,
        latency_ms_per_1k: float,
        gate_results: Mapping[str, Mapping[str, Any]],
        slices: Sequence[Mapping[str, Any]],
        plot_uri: str | None,
        notes: Sequence[str],
    ) -> Evaluation:
        """Append the evaluation of ``candidate`` (gates_passed derived from the gate results) and return it."""
        gates = {str(k): _plain(v) for k, v in gate_results.items()}
        if any(not isinstance(g.get("passed"), bool) for g in gates.values()):
            raise ValueError("every gate result needs 'passed' true or false")
        record = Evaluation(
            evaluation_id=new_id(), candidate_id=candidate.candidate_id, name=candidate.name, run_id=run_id, created_at=_now(),
            artifact_sha256=candidate.artifact_sha256, test_metrics=_floats(test_metrics), champion_version=champion_version,
            champion_metrics=_floats(champion_metrics or {}), rows=int(rows), latency_ms_per_1k=float(latency_ms_per_1k),
            gate_results=gates, gates_passed=all(g["passed"] for g in gates.values()),
            slices=[_plain(s) for s in slices], plot_uri=plot_uri, notes=list(notes),
        )  # fmt: skip
        return self._append(record)

    def record_registration(self, evaluation: Evaluation, *, run_id: str, version: int) -> Registration:
        """Append which version ``evaluation``'s candidate was registered as."""
        record = Registration(
            candidate_id=evaluation.candidate_id, evaluation_id=evaluation.evaluation_id, name=evaluation.name,
            run_id=run_id, created_at=_now(), version=int(version), gates_passed=evaluation.gates_passed,
        )  # fmt: skip
        return self._append(record)

    # ---------------------------------------------------------------- reading
    def candidate(self, candidate_id: str) -> Candidate:
        return self._one(Candidate, pl.col("candidate_id") == candidate_id, f"no candidate {candidate_id!r}")

    def candidates(self, name: str) -> list[Candidate]:
        """Every candidate of ``name``, oldest first."""
        return self._rows(Candidate, pl.col("name") == name)

    def evaluations(self, name: str) -> list[Evaluation]:
        return self._rows(Evaluation, pl.col("name") == name)

    def registrations(self, name: str) -> list[Registration]:
        return self._rows(Registration, pl.col("name") == name)

    def resolve_candidate(self, name: str, *, run_ids: Sequence[str], candidate_id: str | None = None, latest: bool = False) -> Resolved[Candidate]:
        """The candidate to evaluate: ``candidate_id`` when given, else the one recorded by the first of
        ``run_ids`` that recorded one (this run, then its parent and root on a re-execution), else the
        newest recorded candidate of ``name`` if ``latest``.

        Raises:
            HandoffNotFoundError: nothing matches.
        """
        return self._resolve(Candidate, name, run_ids, candidate_id, latest)

    def resolve_evaluation(self, name: str, *, run_ids: Sequence[str], candidate_id: str | None = None, latest: bool = False) -> Resolved[Evaluation]:
        """The evaluation to register: the newest of ``candidate_id`` when given, else this run's (see :meth:`resolve_candidate`)."""
        return self._resolve(Evaluation, name, run_ids, candidate_id, latest)

    def resolve_registration(
        self, name: str, *, run_ids: Sequence[str], candidate_id: str | None = None, latest: bool = False
    ) -> Resolved[Registration]:
        """The registration to promote: the newest of ``candidate_id`` when given, else this run's (see :meth:`resolve_candidate`)."""
        return self._resolve(Registration, name, run_ids, candidate_id, latest)

    # ---------------------------------------------------------------- internals
    def _resolve(self, kind: type[R], name: str, run_ids: Sequence[str], candidate_id: str | None, latest: bool) -> Resolved[R]:
        what = kind.__name__.lower()
        if candidate_id:
            rows = self._rows(kind, (pl.col("name") == name) & (pl.col("candidate_id") == candidate_id))
            if not rows:
                raise HandoffNotFoundError(f"{name}: no {what} recorded for candidate_id {candidate_id!r} in {self.lake.uri(kind.TABLE)}")
            return Resolved(rows[-1], f"the {what} of candidate_id {candidate_id} given in the config")
        for run_id in dict.fromkeys(r for r in run_ids if r):
            rows = self._rows(kind, (pl.col("name") == name) & (pl.col("run_id") == run_id))
            if rows:
                return Resolved(rows[-1], f"the {what} recorded by run {run_id}")
        if latest:
            rows = self._rows(kind, pl.col("name") == name)
            if rows:
                rec = rows[-1]
                return Resolved(rec, f"FALLBACK: the latest recorded {what} (candidate_id {rec.candidate_id}, run {rec.run_id}), as the config asked")
        raise HandoffNotFoundError(
            f"{name}: run(s) {', '.join(run_ids) or '-'} recorded no {what}; run it together with the upstream step, "
            "or give candidate_id in the config (or set use_latest to take the latest recorded one)"
        )

    def _append(self, record: R) -> R:
        row = dataclasses.asdict(record)
        for key in record.JSON:
            row[key] = json.dumps(row[key], sort_keys=True, default=str)
        frame = pl.DataFrame([row], schema=record.SCHEMA)
        metadata = {"model": record.name, "candidate_id": record.candidate_id}
        if self.lake.exists(record.TABLE) and set(record.SCHEMA) - set(self.lake.scan(record.TABLE).collect_schema().names()):
            # a table written before its newest columns: add them once (later appends are plain again)
            self.lake.append(record.TABLE, frame, metadata=metadata, merge_schema=True)
            return record
        for attempt in range(self.max_attempts - 1):
            try:  # a plain append (fixed schema) commits next to concurrent appends; a lost race is retried whole
                self.lake.append(record.TABLE, frame, metadata=metadata, merge_schema=False)
                return record
            except CommitFailedError:
                time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 5)))
        self.lake.append(record.TABLE, frame, metadata=metadata, merge_schema=False)  # the last attempt raises
        return record

    def _rows(self, kind: type[R], predicate: pl.Expr) -> list[R]:
        frame = self.lake.scan_or_empty(kind.TABLE, kind.SCHEMA).filter(predicate).collect().sort("created_at")
        out = []
        for row in frame.iter_rows(named=True):
            for key in kind.JSON:
                row[key] = json.loads(row[key]) if row.get(key) else _empty(key)
            out.append(kind(**{f.name: row[f.name] for f in dataclasses.fields(kind) if f.name in row}))
        return out

    def _one(self, kind: type[R], predicate: pl.Expr, missing: str) -> R:
        rows = self._rows(kind, predicate)
        if not rows:
            raise HandoffNotFoundError(f"{missing} in {self.lake.uri(kind.TABLE)}")
        return rows[-1]


def _empty(key: str) -> Any:
    """An empty value of a JSON column's Python type (a list for slices and notes, else a dict)."""
    return [] if key in ("slices", "notes") else {}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _floats(metrics: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in metrics.items()}


def _plain(value: Any) -> Any:
    """JSON-able plain data from a dict or a pydantic model."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.loads(json.dumps(dict(value), sort_keys=True, default=str))
