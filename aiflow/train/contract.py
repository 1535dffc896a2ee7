"""What the orchestrator sends the training entrypoint and what comes back (JSON through Pipes extras).

Only plain data crosses the boundary: table URIs and pinned Delta versions, the dataset spec,
hyperparameters, where artifacts go and the checkpoint key. Credentials never do: the process
reads them from its environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aiflow.models.metric_names import training_metrics

#: Key of the request inside the Pipes extras.
EXTRAS_KEY = "aiflow_train_request"


class TrainParams(BaseModel):
    """Hyperparameters of the PyTorch tabular model and of the run."""

    model_config = ConfigDict(extra="forbid")

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
    seed: int = Field(13, description="Seed for weights, shuffling and the baseline.")
    max_train_rows: int | None = Field(None, ge=1, description="Use at most this many training rows (None: all).")
    baseline_max_rows: int = Field(200_000, ge=100, description="Rows the scikit-learn baseline trains on (sampled).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")


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


def reported_metrics(metrics: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Metric names as every materialization shows them (see :mod:`aiflow.models.metric_names`)."""
    return training_metrics(metrics, baseline)


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str
    artifact_uri: str = Field(description="Folder holding the model bundle (weights, preprocessing, spec, manifest).")
    artifact_sha256: str = Field(description="SHA-256 of the weights file; checked before every load.")
    metrics: dict[str, float] = Field(description="Validation metrics of the PyTorch model, plus train/valid loss.")
    baseline_metrics: dict[str, float] = Field(description="The scikit-learn baseline on the same validation rows.")
    epochs_run: int
    best_epoch: int
    resumed_from_epoch: int | None = Field(None, description="Last epoch found in the checkpoint, if the run resumed.")
    device: str
    rows_train: int
    rows_valid: int
    wall_time_s: float
    features_uri: str
    data_version: int
    params: TrainParams
