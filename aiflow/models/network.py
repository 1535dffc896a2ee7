"""The PyTorch tabular model: one embedding per categorical column, concatenated with the numerics, an MLP.

The architecture is plain data (:class:`ModelConfig`, stored as ``model.json`` in the bundle), so a
model is rebuilt from JSON plus a ``state_dict``; no code is ever pickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (and to turn its output into predictions)."""

    problem_type: str  # "classification" (one logit) or "regression" (one standardised value)
    categorical: list[str]
    cardinalities: list[int]
    numeric: list[str]
    hidden: list[int]
    embedding_dim: int
    dropout: float
    target: str
    target_mean: float = 0.0  # regression: the model predicts (y - mean) / std
    target_std: float = 1.0
    embedding_dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.embedding_dims:
            self.embedding_dims = [min(self.embedding_dim, (card + 1) // 2 + 1) for card in self.cardinalities]
        if len(self.cardinalities) != len(self.categorical) or len(self.embedding_dims) != len(self.categorical):
            raise ValueError("model config: one cardinality and one embedding size per categorical column")
        if not self.categorical and not self.numeric:
            raise ValueError("model config: the model needs at least one input column")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**data)


class TabularModel(nn.Module):
    """Embeddings + numerics → [Linear → LayerNorm → ReLU → Dropout] x len(hidden) → one output."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, dim) for card, dim in zip(config.cardinalities, config.embedding_dims, strict=True)
        )
        width = sum(config.embedding_dims) + len(config.numeric)
        layers: list[nn.Module] = []
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [embedding(cat[:, i]) for i, embedding in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat([*parts, num], dim=1))).squeeze(-1)


def pick_device(choice: str) -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for ``cuda`` where there is none is an error, not a silent CPU run."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.device is 'cuda' but no CUDA device is available in this process")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (weight init, dropout); shuffling uses its own seeded generators."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def loss_function(problem_type: str) -> nn.Module:
    """Summed loss (divide by the row count): binary cross-entropy on the logit, or squared error."""
    return nn.BCEWithLogitsLoss(reduction="sum") if problem_type == "classification" else nn.MSELoss(reduction="sum")


def to_target(y: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """What the network is trained to output for the target ``y``."""
    return y if config.problem_type == "classification" else (y - config.target_mean) / config.target_std


def to_predictions(raw: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Network outputs → probabilities of the positive class, or values in the target's units."""
    raw = raw.astype(np.float64)
    if config.problem_type == "classification":
        return 1.0 / (1.0 + np.exp(-raw))
    return raw * config.target_std + config.target_mean


@torch.no_grad()
def predict_raw(model: TabularModel, cat: np.ndarray, num: np.ndarray, device: torch.device, batch_size: int = 65_536) -> np.ndarray:
    """Network outputs for in-memory arrays, in batches (eval mode)."""
    model.eval()
    out = [
        model(torch.from_numpy(cat[s : s + batch_size]).to(device), torch.from_numpy(num[s : s + batch_size]).to(device)).cpu().numpy()
        for s in range(0, len(cat), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
