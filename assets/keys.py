"""Asset keys of a dataset, in one place: ``<dataset>/<stage>`` (``<dataset>/<stage>_<table>`` per table).

The Dagster UI labels a graph node with the last component of its key, so the stage is the last
component ("bronze_weather", "features", "registered_model"), and the dataset is the first (the
catalog's folder; several datasets side by side in one code location).
"""

from dagster import AssetKey

from aiflow.spec import DatasetSpec, TableSpec


def bronze_key(spec: DatasetSpec, table: TableSpec) -> AssetKey:
    return AssetKey([spec.name, f"bronze_{table.name}"])


def silver_key(spec: DatasetSpec, table: TableSpec) -> AssetKey:
    return AssetKey([spec.name, f"silver_{table.name}"])


def features_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "features"])


def candidate_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "candidate"])


def evaluation_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "evaluation"])


def registered_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "registered_model"])


def champion_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "champion"])


def predictions_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "predictions"])


def inference_log_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "inference_log"])


def labels_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "labels"])


def canary_analysis_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "canary_analysis"])


def drift_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "drift"])


def live_performance_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "live_performance"])


def decisions_key(spec: DatasetSpec) -> AssetKey:
    return AssetKey([spec.name, "decisions"])


def retrain_job_name(spec: DatasetSpec) -> str:
    """The retrain job's name (``sensors/jobs.py`` defines the job; the decisions step checks whether one runs)."""
    return f"{spec.name}_retrain_job"


def op_name(key: AssetKey) -> str:
    """The op (node) name Dagster derives from an asset key: its components joined by ``__``."""
    return "__".join(key.path)
