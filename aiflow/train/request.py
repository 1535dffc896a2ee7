"""Build a training request pinned to a Delta version of the features."""

from __future__ import annotations

from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams, TrainRequest


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
    resumed run never mixes data versions."""
    features = Tables.features(spec.name)
    if not lake.exists(features):
        raise RuntimeError(f"no features table at {lake.uri(features)}: materialize {features} first")
    version = lake.version(features) if version is None else version
    states = [int(v) for commit, v in lake.commit_metadata(features, "state_version") if commit <= version]
    if not states:
        raise RuntimeError(f"{lake.uri(features)} records no feature-state version: rebuild it with refit=true")
    return TrainRequest(
        model_name=spec.name,
        features_uri=lake.uri(features),
        data_version=version,
        state_uri=lake.uri(Tables.feature_state(spec.name)),
        state_version=states[-1],
        spec=spec.model_dump(mode="json"),
        params=params,
        artifact_root=artifact_root,
        checkpoint_key=f"{checkpoint_key}-v{version}",
        code_version=code_version,
        reason=reason,
    )
