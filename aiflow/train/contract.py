"""What the orchestrator sends the training entrypoint and what comes back (JSON through Pipes extras).

Only plain data crosses the boundary: table URIs and pinned Delta versions, the dataset spec,
hyperparameters, where artifacts go and the checkpoint key. Credentials never do: the process
reads them from its environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiflow.models.families import FAMILIES
from aiflow.models.metric_names import training_metrics

#: Key of the request inside the Pipes extras.
EXTRAS_KEY = "aiflow_train_request"
#: Custom Pipes message key of a failed training's fault (``aiflow.storage.faults.Fault`` as a dict).
FAULT_KEY = "aiflow_fault"


Family = Literal["pytorch", "sklearn"]


class TrainParams(BaseModel):
    """Hyperparameters of the run, of the PyTorch network and (``sklearn_*``) of the scikit-learn model."""

    model_config = ConfigDict(extra="forbid")

    families: list[str] = Field(
        default_factory=lambda: list(FAMILIES),
        min_length=1,
        description="Model families to train on the same split; the best on the primary validation metric is the candidate.",
    )
    epochs: int = Field(8, ge=1, description="Maximum epochs (early stopping may end sooner).")
    batch_size: int = Field(2048, ge=16, description="Rows per mini-batch.")
    learning_rate: float = Field(2e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay.")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="Sizes of the MLP's hidden layers.")
    embedding_dim: int = Field(16, ge=1, description="Largest embedding size per categorical column.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout between hidden layers.")
    patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    early_stopping: Literal["metric", "loss"] = Field(
        "metric",
        description="What 'improvement' means: the primary validation metric (ROC AUC, RMSE), or the validation loss.",
    )
    seed: int = Field(13, description="Seed for weights, shuffling and the scikit-learn model.")
    max_train_rows: int | None = Field(None, ge=1, description="Use at most this many training rows (None: all).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="The network's device. auto: CUDA when present, else CPU.")
    baseline_max_rows: int = Field(
        200_000, ge=100, description="Rows the scikit-learn model trains on (sampled; the name predates model families)."
    )
    sklearn_max_iter: int = Field(100, ge=1, description="scikit-learn HistGradientBoosting: boosting iterations.")
    sklearn_learning_rate: float = Field(0.1, gt=0, description="scikit-learn HistGradientBoosting: learning rate.")
    sklearn_max_leaf_nodes: int = Field(31, ge=2, description="scikit-learn HistGradientBoosting: leaves per tree.")
    sklearn_min_samples_leaf: int = Field(20, ge=1, description="scikit-learn HistGradientBoosting: rows per leaf at least.")
    sklearn_l2_regularization: float = Field(0.0, ge=0, description="scikit-learn HistGradientBoosting: L2 regularization.")

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown model famil{'y' if len(unknown) == 1 else 'ies'} {unknown}: choose from {list(FAMILIES)}")
        return list(dict.fromkeys(value))

    def sklearn_params(self) -> dict:
        """The scikit-learn model's hyperparameters, as HistGradientBoosting takes them."""
        prefix = "sklearn_"
        return {k.removeprefix(prefix): v for k, v in self.model_dump().items() if k.startswith(prefix)}


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="Name the model is registered under (the dataset's name by default).")
    features_uri: str = Field(description="Delta table URI of the features.")
    data_version: int = Field(ge=0, description="Pinned Delta version of the features table; rows added later are invisible.")
    state_uri: str = Field(description="Delta table URI of the fitted feature state (vocabularies, scaling).")
    state_version: int = Field(ge=0, description="Pinned version of the feature state table.")
    spec: dict = Field(description="The dataset spec (DatasetSpec.model_dump(mode='json')).")
    params: TrainParams = Field(default_factory=TrainParams)
    artifact_root: str = Field(description="Folder or s3:// prefix for model files and checkpoints.")
    checkpoint_key: str = Field(description="Same key, same checkpoint: a restarted run resumes from it.")
    code_version: str | None = Field(None, description="Git SHA of the code that launched the run, when known.")
    reason: str = Field("manual", description="Why the training ran (manual, schedule, drift, sweep...).")


def reported_metrics(result: TrainResult) -> dict[str, float]:
    """Metric names as every materialization shows them (see :mod:`aiflow.models.metric_names`)."""
    return training_metrics(result.metrics, result.naive_metrics, result.family_metrics)


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str
    artifact_uri: str = Field(description="Folder holding the model bundle (model file, preprocessing, spec, manifest).")
    artifact_sha256: str = Field(description="The bundle's digest (every file, manifest included); checked before every load.")
    family: Family = Field(description="The family of the candidate: the best on the primary validation metric.")
    metrics: dict[str, float] = Field(description="Validation metrics of the candidate (the network's add valid and train loss).")
    family_metrics: dict[str, dict[str, float]] = Field(description="Validation metrics of every family trained, for comparison.")
    naive_metrics: dict[str, float] = Field(description="The naive reference (base rate or mean) on the same validation rows.")
    bundle_files: dict[str, str] = Field(default_factory=dict, description="SHA-256 of each file of the bundle.")
    epochs_run: int = Field(description="Epochs the network ran (0 when it was not trained).")
    best_epoch: int
    resumed_from_epoch: int | None = Field(None, description="Last epoch found in the checkpoint, if the run resumed.")
    device: str
    rows_train: int
    rows_valid: int
    wall_time_s: float
    features_uri: str
    data_version: int
    params: TrainParams
