"""Metric names as materializations, the registry and the model card show them: built and parsed here only.

A metric has a bare name (``roc_auc``, ``rmse``) and is reported per split with a prefix:
``valid_`` (the model on the validation rows), ``test_`` (the model on the held-out test rows),
``naive_`` (the naive reference on the validation rows: the base rate for classification, the training
mean for regression; every candidate must beat it) and ``champion_test_`` (the serving champion on the
same test rows). Training-only figures (``train_loss``) keep their own name. Each trained model family's
validation metrics are reported as ``<family>_valid_*`` (:func:`family_prefix`), the winner's included.

The registry stores a version's ``metrics`` prefixed (``valid_*`` and ``test_*``) and the naive
reference's as ``baseline_metrics``, bare (they are all validation metrics).
"""

from __future__ import annotations

from collections.abc import Mapping

VALID = "valid_"
TEST = "test_"
NAIVE = "naive_"
CHAMPION_TEST = "champion_test_"
#: Figures of the training loop itself, reported under their own name (never prefixed).
TRAINING_ONLY = "train_"
#: Every prefix, longest first (``champion_test_`` must be tried before ``test_``).
PREFIXES = (CHAMPION_TEST, NAIVE, VALID, TEST)
#: Human name of each prefix's split, as the model card shows it.
SPLITS = {VALID: "validation", TEST: "test"}


def prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"roc_auc": 0.7}`` -> ``{"<prefix>roc_auc": 0.7}`` (values as floats)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown metric prefix {prefix!r} (known: {', '.join(PREFIXES)})")
    return {f"{prefix}{name}": float(value) for name, value in metrics.items()}


def unprefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics of one prefix, with the prefix removed; other keys are left out.

    ``champion_test_x`` is never taken for ``test_`` (it is the champion's, not the model's).
    """
    if prefix not in PREFIXES:
        raise ValueError(f"unknown metric prefix {prefix!r} (known: {', '.join(PREFIXES)})")
    out = {}
    for key, value in metrics.items():
        if split_of(key) == prefix:
            out[key[len(prefix) :]] = float(value)
    return out


def split_of(key: str) -> str | None:
    """The prefix ``key`` carries (longest match), or None for a bare or training-only name."""
    return next((p for p in PREFIXES if key.startswith(p)), None)


def family_prefix(family: str) -> str:
    """``sklearn`` -> ``sklearn_valid_``: the prefix of one model family's validation metrics."""
    if not family.isidentifier():
        raise ValueError(f"a model family is a plain word, got {family!r}")
    return f"{family}_{VALID}"


def training_metrics(
    metrics: Mapping[str, float], naive: Mapping[str, float], families: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, float]:
    """What a training run reports: the candidate's validation metrics as ``valid_*`` (``train_*`` kept as is,
    the validation loss ``loss`` becomes ``valid_loss``), the naive reference's as ``naive_*`` and every
    trained family's as ``<family>_valid_*``."""
    out = {k if k.startswith(TRAINING_ONLY) else f"{VALID}{k}": float(v) for k, v in metrics.items()}
    out.update(prefixed(NAIVE, naive))
    for family, values in (families or {}).items():
        out.update({f"{family_prefix(family)}{k}": float(v) for k, v in validation_only(values).items()})
    return out


def validation_only(metrics: Mapping[str, float]) -> dict[str, float]:
    """A training result's bare validation metrics: training-only figures (``train_loss``) left out."""
    return {k: float(v) for k, v in metrics.items() if not k.startswith(TRAINING_ONLY)}


def registry_metrics(valid: Mapping[str, float], test: Mapping[str, float]) -> dict[str, float]:
    """The ``metrics`` of a registered version: validation and test metrics, prefixed."""
    return {**prefixed(VALID, valid), **prefixed(TEST, test)}
