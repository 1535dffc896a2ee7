"""Model registry: model versions and their aliases as two Delta tables under the lake root (no server).

``registry/model_versions`` holds one row per model version with its lineage: the training table and
the Delta version it was pinned to, code version, params, metrics, gate results, the model family, and the
bundle's digest (``artifact_sha256``: one SHA-256 over every file of the bundle, manifest included; each
file's SHA-256 in ``bundle_files``). ``artifact_uri`` is stored relative to the artifact root when the
bundle lies under it, and resolved against the current root on load (:meth:`ModelVersion.location`), so
a copied, moved or restored home keeps working; rows written with absolute locations keep loading.
``registry/alias_events`` is an append-only log of alias changes (champion, challenger, canary...);
the current alias is derived from the log (its latest event), so production history, "what was
champion at time T" and rollback need no other state.

Version numbers under concurrency: a registration commits its row as a Delta overwrite whose
predicate, ``name = N AND (version = V OR artifact_sha256 = H)``, matches no existing row, so nothing
is deleted; but Delta's conflict check rejects the commit when another writer committed a row with
the same number or the same hash since this writer's snapshot, and the registration re-reads and
retries with the next number. After committing, the row is checked to be unique at the committed
version; a clash that got through anyway raises instead of being left silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from aiflow.storage.lake import META, Lake, Tables, history_of

#: What an alias event records it did.
ACTIONS = ("set", "promote", "rollback", "remove")
#: Columns holding JSON text (decoded into dicts on ModelVersion).
JSON_FIELDS = ("params", "metrics", "baseline_metrics", "gate_results", "family_metrics", "bundle_files")

_UTC = pl.Datetime("us", "UTC")
VERSIONS_SCHEMA: dict[str, pl.DataType] = {
    "name": pl.String(), "version": pl.Int64(), "created_at": _UTC,
    "artifact_uri": pl.String(), "artifact_sha256": pl.String(),
    "training_table": pl.String(), "training_version": pl.Int64(), "state_version": pl.Int64(),
    "code_version": pl.String(), "params": pl.String(), "metrics": pl.String(), "baseline_metrics": pl.String(),
    "gate_results": pl.String(), "gates_passed": pl.Boolean(), "reason": pl.String(), "run_id": pl.String(),
    "model_card_uri": pl.String(), "family": pl.String(), "family_metrics": pl.String(), "bundle_files": pl.String(),
}  # fmt: skip
EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "name": pl.String(), "alias": pl.String(), "version": pl.Int64(), "previous_version": pl.Int64(),
    "set_at": _UTC, "set_by": pl.String(), "reason": pl.String(), "action": pl.String(),
    "recorded_at": _UTC,  # when the event was written (set_at may be given, e.g. when importing history)
}  # fmt: skip

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(Exception):
    """A registry operation was refused; the message says why and what to do."""


class UnknownVersionError(RegistryError, KeyError):
    """No such model, or no such version of it."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class GatesFailedError(RegistryError):
    """The version failed its gates and the alias change was not forced."""


class NothingToRollBackError(RegistryError):
    """The alias has no earlier version to go back to."""


@dataclass(frozen=True)
class ModelVersion:
    """One row of ``registry/model_versions`` (JSON columns decoded)."""

    name: str
    version: int
    created_at: dt.datetime
    artifact_uri: str
    artifact_sha256: str
    training_table: str
    training_version: int
    state_version: int | None
    code_version: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    gate_results: dict[str, dict[str, Any]]
    gates_passed: bool
    reason: str
    run_id: str | None
    model_card_uri: str | None
    family: str | None = None
    family_metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    bundle_files: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ModelVersion:
        values = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}
        for key in JSON_FIELDS:
            values[key] = json.loads(values[key]) if values[key] else {}
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        for key in JSON_FIELDS:
            row[key] = _dumps(row[key])
        return row

    def location(self, artifact_root: str | None) -> str:
        """Where the bundle is now: the stored location resolved against ``artifact_root`` (absolute rows as stored)."""
        return resolve_location(self.artifact_uri, artifact_root)

    @property
    def failed_gates(self) -> list[str]:
        return [gate for gate, result in self.gate_results.items() if not result.get("passed")]


@dataclass(frozen=True)
class AliasEvent:
    """One row of ``registry/alias_events``; ``version`` None means the alias was removed."""

    name: str
    alias: str
    version: int | None
    previous_version: int | None
    set_at: dt.datetime
    set_by: str
    reason: str
    action: str
    recorded_at: dt.datetime


class Registry:
    """Model versions and alias events of every model, stored in the lake.

    Args:
        lake: the lake whose root holds the ``registry/`` tables.
        max_attempts: registrations retried this many times when concurrent writers take their number.
    """

    def __init__(self, lake: Lake, *, max_attempts: int = 25):
        self.lake = lake
        self.max_attempts = max_attempts

    def __repr__(self) -> str:
        return f"Registry({self.lake.uri('registry')!r})"

    # ---------------------------------------------------------------- versions
    def register(
        self,
        name: str,
        *,
        artifact_uri: str,
        artifact_sha256: str,
        training_table: str,
        training_version: int,
        metrics: Mapping[str, float],
        baseline_metrics: Mapping[str, float],
        params: Mapping[str, Any] | Any,
        gate_results: Mapping[str, Any],
        gates_passed: bool,
        reason: str,
        code_version: str | None = None,
        run_id: str | None = None,
        state_version: int | None = None,
        model_card_uri: str | None = None,
        family: str | None = None,
        family_metrics: Mapping[str, Mapping[str, float]] | None = None,
        bundle_files: Mapping[str, str] | None = None,
        artifact_root: str | None = None,
    ) -> ModelVersion:
        """Record a new version of ``name`` (number = highest + 1) and return it.

        Idempotent: a bundle already registered under ``name`` (same digest, ``artifact_sha256``) returns
        the existing version unchanged, so a re-run of the same training does not create a second version
        (:meth:`find` tells beforehand). With ``artifact_root``, a location under it is stored relative to it.

        Raises:
            ValueError: malformed input (name, hash, versions, gate results inconsistent with ``gates_passed``).
            RegistryError: the number could not be claimed after ``max_attempts`` concurrent conflicts.
        """
        _check_name(name)
        sha = artifact_sha256.lower()
        if not _SHA256.match(sha):
            raise ValueError(f"artifact_sha256 must be 64 hex characters, got {artifact_sha256!r}")
        if training_version < 0 or (state_version is not None and state_version < 0):
            raise ValueError(f"Delta versions are >= 0 (training_version={training_version}, state_version={state_version})")
        if not reason:
            raise ValueError("reason is required (schedule, drift, manual, sweep...)")
        fields = dict(
            name=name,
            artifact_uri=relative_location(artifact_uri, artifact_root),
            artifact_sha256=sha,
            training_table=training_table,
            training_version=int(training_version),
            state_version=None if state_version is None else int(state_version),
            code_version=code_version,
            params=_plain(params),
            metrics={k: float(v) for k, v in metrics.items()},
            baseline_metrics={k: float(v) for k, v in baseline_metrics.items()},
            gate_results=_check_gates(gate_results, gates_passed),
            gates_passed=bool(gates_passed),
            reason=reason,
            run_id=run_id,
            model_card_uri=model_card_uri,
            family=family,
            family_metrics={str(f): {k: float(v) for k, v in m.items()} for f, m in (family_metrics or {}).items()},
            bundle_files={str(k): str(v) for k, v in (bundle_files or {}).items()},
        )
        table = Tables.model_versions()
        self._create_versions_table()  # empty: rows only ever go in through the claim below
        for attempt in range(self.max_attempts):
            snapshot = self.lake.version(table)
            rows = self._version_rows(name, snapshot)
            same = rows.filter(pl.col("artifact_sha256") == sha)
            if same.height:
                return ModelVersion.from_row(same.row(0, named=True))
            number = int(rows["version"].max() or 0) + 1
            candidate = ModelVersion(version=number, created_at=_now(), **fields)
            try:
                committed = self._commit_version(candidate, snapshot)
            except CommitFailedError:  # another writer took the number (or the hash): re-read, next number
                time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 5)))
                continue
            self._check_unique(candidate, committed)
            return candidate
        raise RegistryError(f"could not register a version of {name!r}: {self.max_attempts} attempts lost to concurrent registrations")

    def find(self, name: str, artifact_sha256: str) -> ModelVersion | None:
        """The version of ``name`` whose bundle has this digest, if one is registered."""
        rows = self._version_rows(name).filter(pl.col("artifact_sha256") == artifact_sha256.lower())
        return ModelVersion.from_row(rows.row(0, named=True)) if rows.height else None

    def versions(self, name: str | None = None) -> pl.DataFrame:
        """Every version of ``name`` (of every model when None), by name and version."""
        return self._version_rows(name).sort("name", "version")

    def get(self, name: str, version: int) -> ModelVersion:
        rows = self._version_rows(name).filter(pl.col("version") == version)
        if not rows.height:
            raise UnknownVersionError(self._unknown(name, version))
        return ModelVersion.from_row(rows.row(0, named=True))

    def latest(self, name: str) -> ModelVersion:
        rows = self._version_rows(name).sort("version")
        if not rows.height:
            raise UnknownVersionError(f"no model named {name!r} is registered")
        return ModelVersion.from_row(rows.row(-1, named=True))

    def lineage(self, name: str, version: int) -> dict[str, Any]:
        """Everything about where a version came from: the data (table URI + pinned Delta version, the
        feature state version, and that commit's details when the table is reachable), code, params,
        why it was trained, the run, and the artifact."""
        mv = self.get(name, version)
        out: dict[str, Any] = {
            "model": mv.name,
            "version": mv.version,
            "created_at": mv.created_at.isoformat(),
            "training_table": mv.training_table,
            "training_version": mv.training_version,
            "state_version": mv.state_version,
            "code_version": mv.code_version,
            "params": mv.params,
            "reason": mv.reason,
            "run_id": mv.run_id,
            "artifact_uri": mv.artifact_uri,
            "artifact_sha256": mv.artifact_sha256,
            "model_card_uri": mv.model_card_uri,
            "training_commit": None,
            "training_commit_error": None,
        }
        try:
            out["training_commit"] = self._commit_info(mv.training_table, mv.training_version)
        except (DeltaError, OSError) as exc:  # informational: the table may live elsewhere or be gone
            out["training_commit_error"] = f"{type(exc).__name__}: {exc}"
        return out

    # ---------------------------------------------------------------- aliases
    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        *,
        reason: str,
        actor: str,
        action: str = "set",
        force: bool = False,
        at: dt.datetime | None = None,
    ) -> AliasEvent | None:
        """Point ``alias`` of ``name`` at ``version`` (None removes it) with one appended event.

        ``at`` records the change as made at that (timezone-aware) time instead of now, for imports
        and tests. Returns the event, or None when the alias already pointed there (nothing recorded).

        Raises:
            UnknownVersionError: the version is not registered.
            GatesFailedError: the version failed its gates and ``force`` is False.
            ValueError: malformed alias, action, empty reason or actor, naive ``at``.
        """
        if not _ALIAS.match(alias):
            raise ValueError(f"alias must be a lowercase word (champion, challenger, canary...), got {alias!r}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if (version is None) != (action == "remove"):
            raise ValueError("remove an alias with version=None and action='remove' (and only then)")
        if not reason or not actor:
            raise ValueError("every alias change needs a reason and an actor (who or what made it)")
        when = _utc(at)
        if version is not None:
            mv = self.get(name, version)
            if not mv.gates_passed and not force:
                failed = ", ".join(mv.failed_gates) or "gates_passed is false"
                raise GatesFailedError(
                    f"{name} v{version} failed its gates ({failed}): refusing to make it {alias!r}; "
                    "pass force=True (aiflow models promote --force) to override"
                )
        else:
            _check_name(name)
        previous = self.alias(name, alias, at=when)
        if previous == version:
            return None
        event = AliasEvent(name, alias, version, previous, when, actor, reason, action, _now())
        frame = pl.DataFrame([dataclasses.asdict(event)], schema=EVENTS_SCHEMA)
        self.lake.append(Tables.alias_events(), frame, metadata={"model": name, "alias": alias, "action": action})
        return event

    def remove_alias(self, name: str, alias: str, *, reason: str, actor: str, at: dt.datetime | None = None) -> AliasEvent | None:
        return self.set_alias(name, alias, None, reason=reason, actor=actor, action="remove", at=at)

    def promote(
        self, name: str, version: int, *, reason: str, actor: str, alias: str = "champion", force: bool = False, at: dt.datetime | None = None
    ) -> AliasEvent | None:
        """Make ``version`` the ``alias`` (champion by default); refuses a version whose gates failed unless forced."""
        return self.set_alias(name, alias, version, reason=reason, actor=actor, action="promote", force=force, at=at)

    def rollback(self, name: str, *, reason: str, actor: str, alias: str = "champion", at: dt.datetime | None = None) -> int:
        """Move ``alias`` back to the version it pointed at before the current one and return it.

        Walks the alias's events newest first and takes the first version that is not the current
        one; a rollback right after a rollback therefore returns to the version just left (like
        ``kubectl rollout undo``). The target served before, so its gates are not re-checked.

        An alias that is not set (removed, e.g. a canary the analysis rolled back) is refused, never
        brought back: rolling back moves a serving alias, and a server would begin routing to it.

        Raises:
            NothingToRollBackError: the alias was never set, is not set now (removed), or never
                pointed at another version.
        """
        when = _utc(at)
        events = self._events(name, alias).filter(pl.col("set_at") <= when)
        if not events.height:
            raise NothingToRollBackError(f"{name}: alias {alias!r} was never set, so there is nothing to roll back")
        history = events["version"].to_list()
        current = history[-1]
        if current is None:
            last = events.row(-1, named=True)
            raise NothingToRollBackError(
                f"{name}: alias {alias!r} is not set (removed from v{last['previous_version']} by {last['set_by']} at "
                f"{last['set_at']:%Y-%m-%d %H:%M:%S} UTC: {last['reason']}), so there is nothing to roll back and nothing was changed; "
                f"to set it, run `aiflow models promote {name} VERSION --alias {alias} --reason WHY`"
            )
        earlier = [v for v in reversed(history) if v is not None and v != current]
        if not earlier:
            raise NothingToRollBackError(
                f"{name}: alias {alias!r} has only ever pointed at v{current}; there is no earlier version to roll back to"
            )
        self.set_alias(name, alias, earlier[0], reason=reason, actor=actor, action="rollback", force=True, at=when)
        return earlier[0]

    def alias(self, name: str, alias: str, *, at: dt.datetime | None = None) -> int | None:
        """The version ``alias`` points at now, or at time ``at`` (timezone-aware); None if unset or removed."""
        events = self._events(name, alias)
        if at is not None:
            events = events.filter(pl.col("set_at") <= _utc(at))
        return events["version"][-1] if events.height else None

    def aliases(self, name: str) -> dict[str, int]:
        """Current aliases of ``name``: alias -> version (removed aliases left out)."""
        current = self.current_aliases(name)
        return dict(zip(current["alias"].to_list(), current["version"].to_list(), strict=True))

    def current_aliases(self, name: str | None = None) -> pl.DataFrame:
        """name, alias, version of every alias in force (of every model when ``name`` is None)."""
        events = self._events(name)
        return (
            events.group_by("name", "alias", maintain_order=True)
            .last()
            .filter(pl.col("version").is_not_null())
            .select("name", "alias", "version")
            .sort("name", "alias")
        )

    def history(self, name: str, alias: str | None = None) -> pl.DataFrame:
        """Alias events of ``name`` (of one alias when given), newest first."""
        return self._events(name, alias).reverse()

    # ---------------------------------------------------------------- internals
    def _version_rows(self, name: str | None, version: int | None = None) -> pl.DataFrame:
        table = Tables.model_versions()
        if version is None and not self.lake.exists(table):
            return pl.DataFrame(schema=VERSIONS_SCHEMA)
        scan = self.lake.scan(table, version=version)
        if name is not None:
            scan = scan.filter(pl.col("name") == name)
        rows = scan.collect()
        missing = [pl.lit(None, dtype).alias(c) for c, dtype in VERSIONS_SCHEMA.items() if c not in rows.columns]
        return rows.with_columns(missing) if missing else rows  # a table written before these columns existed

    def _events(self, name: str | None, alias: str | None = None) -> pl.DataFrame:
        """Events oldest first; ties on set_at broken by when they were written, then by content."""
        events = self.lake.scan_or_empty(Tables.alias_events(), EVENTS_SCHEMA)
        if name is not None:
            events = events.filter(pl.col("name") == name)
        if alias is not None:
            events = events.filter(pl.col("alias") == alias)
        keys = ["set_at", "recorded_at", "name", "alias", "action", "version"]
        return events.select(list(EVENTS_SCHEMA)).collect().sort(keys, nulls_last=False)

    def _commit_version(self, mv: ModelVersion, snapshot: int) -> int:
        """Commit ``mv``'s row on top of ``snapshot`` and return the Delta version committed.

        Raises CommitFailedError if a commit since ``snapshot`` took the number or the hash.
        """
        table = Tables.model_versions()
        data = pl.DataFrame([mv.to_row()], schema=VERSIONS_SCHEMA).to_arrow()
        props = CommitProperties(custom_metadata={META + "model": mv.name, META + "model_version": str(mv.version)})
        handle = self.lake.table(table, version=snapshot)
        claim = f"name = {_quote(mv.name)} AND (version = {mv.version} OR artifact_sha256 = {_quote(mv.artifact_sha256)})"
        write_deltalake(handle, data, mode="overwrite", predicate=claim, schema_mode="merge", commit_properties=props)
        return handle.version()

    def _create_versions_table(self) -> None:
        """Create the empty table if missing; a concurrent creator winning is fine (both commits are empty)."""
        if self.lake.exists(Tables.model_versions()):
            return
        schema = pl.DataFrame(schema=VERSIONS_SCHEMA).to_arrow().schema
        try:
            DeltaTable.create(self.lake.uri(Tables.model_versions()), schema, mode="ignore", storage_options=self.lake.storage_options)
        except (CommitFailedError, DeltaError) as exc:
            if not self.lake.exists(Tables.model_versions()):
                raise exc

    def _check_unique(self, mv: ModelVersion, committed: int) -> None:
        rows = self._version_rows(mv.name, committed).filter(
            (pl.col("version") == mv.version) | (pl.col("artifact_sha256") == mv.artifact_sha256)
        )
        if rows.height != 1:
            raise RegistryError(
                f"registration clash on {mv.name} v{mv.version} at Delta version {committed} of "
                f"{self.lake.uri(Tables.model_versions())}: {rows.height} rows share its number or artifact hash"
            )

    def _unknown(self, name: str, version: int) -> str:
        known = self._version_rows(name)["version"].sort().to_list()
        if not known:
            return f"no model named {name!r} is registered"
        return f"model {name!r} has no version {version} (registered: {', '.join(map(str, known))})"

    def _commit_info(self, uri: str, version: int) -> dict[str, Any] | None:
        handle = DeltaTable(uri, storage_options=self.lake.storage_options)
        for commit in history_of(handle, since=version):  # a handle pinned at ``version`` mislabels its history
            if commit.get("version") == version:
                stamp = commit.get("timestamp")
                return {
                    "version": version,
                    "timestamp": dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat() if stamp else None,
                    "operation": commit.get("operation"),
                    "metadata": {k: v for k, v in commit.items() if k.startswith(META)},
                }
        return None


def _is_absolute(location: str) -> bool:
    return "://" in location or location.startswith("/") or (len(location) > 1 and location[1] == ":")


def relative_location(uri: str, artifact_root: str | None) -> str:
    """``uri`` relative to ``artifact_root`` when it lies under it (what the registry stores), else unchanged."""
    if not artifact_root:
        return uri
    root = artifact_root.rstrip("/")
    if not _is_absolute(root):
        return uri
    return uri[len(root) + 1 :].rstrip("/") if uri.startswith(root + "/") else uri


def resolve_location(location: str, artifact_root: str | None) -> str:
    """A stored location as a URI: relative ones under ``artifact_root``, absolute ones (older rows) as they are.

    Raises:
        ValueError: the location is relative and no artifact root is given.
    """
    if _is_absolute(location):
        return location
    if not artifact_root:
        raise ValueError(f"the bundle location {location!r} is relative to the artifact root, and no artifact root was given")
    return f"{artifact_root.rstrip('/')}/{location.lstrip('/')}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return _now()
    if at.tzinfo is None:
        raise ValueError(f"times must be timezone-aware (got naive {at.isoformat()}); use e.g. datetime(..., tzinfo=UTC)")
    return at.astimezone(dt.UTC)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name must be letters, digits, '_', '.', '-' (got {name!r})")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> dict[str, Any]:
    """A dict of JSON-able values from a dict or a pydantic model (TrainParams)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.loads(_dumps(dict(value)))


def _check_gates(gate_results: Mapping[str, Any], gates_passed: bool) -> dict[str, dict[str, Any]]:
    """Gate name -> {"passed": bool, "value": ..., "threshold": ..., ...}; a bare bool is accepted as passed."""
    out: dict[str, dict[str, Any]] = {}
    for gate, result in gate_results.items():
        if hasattr(result, "model_dump"):
            result = result.model_dump(mode="json")
        entry = {"passed": result} if isinstance(result, bool) else dict(result)
        if not isinstance(entry.get("passed"), bool):
            raise ValueError(f"gate {gate!r}: needs 'passed' true or false, got {result!r}")
        out[str(gate)] = json.loads(_dumps(entry))
    failed = [gate for gate, entry in out.items() if not entry["passed"]]
    if gates_passed and failed:
        raise ValueError(f"gates_passed=True but these gates failed: {', '.join(failed)}")
    return out
