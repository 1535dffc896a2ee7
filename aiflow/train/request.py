"""Build a training request pinned to a Delta version of the features, and find a candidate it would only repeat."""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass

from aiflow.data.split import Windows, pinned_windows, split_windows
from aiflow.models.candidates import Candidate, Handoffs
from aiflow.models.metric_names import validation_only
from aiflow.spec import DatasetSpec, Split
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams, TrainRequest, TrainResult

#: Candidate sources that are real training runs of the candidate asset (a sweep's or a drill's are not reused).
REUSABLE_SOURCES = ("training",)


def pinned_request(
    lake: Lake,
    spec: DatasetSpec,
    params: TrainParams,
    artifact_root: str,
    checkpoint_key: str,
    reason: str,
    *,
    version: int | None = None,
    code_version: str | None = None,
) -> TrainRequest:
    """A training request pinned to a version of the features table (default: the current one) and to
    the feature-state version that version was encoded with. The key gets the version appended, so a
    resumed run never mixes data versions.

    The spec's split policy is resolved into concrete windows for that version
    (:mod:`aiflow.data.split`) and the request carries them as a fixed split: the lineage says exactly
    which dates trained, validated and tested the model (see :func:`request_windows`).
    """
    features = Tables.features(spec.name)
    if not lake.exists(features):
        raise RuntimeError(f"no features table at {lake.uri(features)}: materialize {features} first")
    version = lake.version(features) if version is None else version
    states = [int(v) for commit, v in lake.commit_metadata(features, "state_version") if commit <= version]
    if not states:
        raise RuntimeError(f"{lake.uri(features)} records no feature-state version: rebuild it with refit=true")
    windows = pinned_windows(lake.uri(features), version, spec.split, lake.storage_options)
    spec_dict = spec.model_dump(mode="json")
    spec_dict["split"] = windows.as_split().model_dump(mode="json")
    return TrainRequest(
        model_name=spec.name,
        features_uri=lake.uri(features),
        data_version=version,
        state_uri=lake.uri(Tables.feature_state(spec.name)),
        state_version=states[-1],
        spec=spec_dict,
        params=params,
        artifact_root=artifact_root,
        checkpoint_key=f"{checkpoint_key}-v{version}",
        code_version=code_version,
        reason=reason,
    )


def request_windows(request: TrainRequest) -> Windows:
    """The concrete windows a pinned request trains and validates on."""
    return split_windows(Split.model_validate(request.spec["split"]), [])


@dataclass(frozen=True)
class Reuse:
    """Whether a request repeats an existing candidate: the candidate to hand on, or why training runs."""

    candidate: Candidate | None
    reason: str


def reusable_candidate(lake: Lake, request: TrainRequest, artifact_options: dict[str, str] | None = None) -> Reuse:
    """The newest candidate trained on the same pinned data (table, data and state version, windows), code
    version and hyperparameters as ``request``, whose bundle still exists; otherwise why training must run.

    A request without a code version (no git, no ``AIFLOW_CODE_VERSION``) or with uncommitted changes
    (``-dirty``) never matches: the same code cannot be proven.
    """
    if not request.code_version or request.code_version.endswith("-dirty"):
        return Reuse(None, f"code version {request.code_version or 'unknown'} cannot prove the code is unchanged")
    wanted = request.params.model_dump(mode="json")
    same_data = [
        c for c in Handoffs(lake).candidates(request.model_name)
        if c.source in REUSABLE_SOURCES and c.features_uri == request.features_uri and c.data_version == request.data_version
    ]  # fmt: skip
    if not same_data:
        return Reuse(None, f"no candidate was trained on {request.features_uri} at version {request.data_version}")
    same_params = [c for c in same_data if {k: c.params.get(k) for k in wanted} == wanted]
    if not same_params:
        return Reuse(None, f"hyperparameters differ from the {len(same_data)} candidate(s) trained on version {request.data_version}")
    for cand in sorted(same_params, key=lambda c: c.created_at, reverse=True):
        store = ArtifactStore(cand.artifact_uri, storage_options=artifact_options)
        try:
            manifest = json.loads(store.get_bytes("manifest.json"))
            spec_split = json.loads(store.get_bytes("spec.json")).get("split") if store.exists("spec.json") else None
        except (FileNotFoundError, OSError, ValueError):
            continue  # bundle removed (cleanup) or unreadable: not reusable
        lineage = manifest.get("lineage") or {}
        if lineage.get("code_version") != request.code_version or lineage.get("state_version") != request.state_version:
            continue
        if spec_split is not None and spec_split != request.spec["split"]:
            continue
        return Reuse(cand, f"candidate {cand.candidate_id} was trained on the same data version, code and hyperparameters")
    return Reuse(None, f"no candidate on version {request.data_version} with these hyperparameters has code version {request.code_version} and an intact bundle")


def hand_on(lake: Lake, candidate: Candidate, run_id: str) -> Candidate:
    """Record ``candidate`` again under ``run_id`` (same artifact, data, metrics; source ``reused:<id>``), so this
    run's evaluation and registration find it by their run as if it had just been trained."""
    handoffs = Handoffs(lake)
    accepted = inspect.signature(handoffs.record_candidate).parameters
    fields = {f.name: getattr(candidate, f.name) for f in dataclasses.fields(candidate)}
    carried = {k: v for k, v in fields.items() if k in accepted and k not in ("name", "run_id", "source")}
    return handoffs.record_candidate(candidate.name, run_id=run_id, source=f"reused:{candidate.candidate_id}", **carried)


def record_trained(lake: Lake, name: str, result: TrainResult, *, run_id: str, source: str) -> Candidate:
    """Record a finished training's winning family as a candidate of ``name`` (the candidate asset and the sweep)."""
    return Handoffs(lake).record_candidate(
        name,
        run_id=run_id,
        artifact_uri=result.artifact_uri,
        artifact_sha256=result.artifact_sha256,
        features_uri=result.features_uri,
        data_version=result.data_version,
        valid_metrics=validation_only(result.metrics),
        baseline_metrics=result.naive_metrics,
        params=result.params,
        source=source,
        family=result.family,
        family_metrics=result.family_metrics,
    )
