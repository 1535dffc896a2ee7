"""Model families: the PyTorch network and the scikit-learn gradient-boosted trees, behind one prediction shape.

Both families take their inputs from the one encoder (:func:`aiflow.data.encoding.to_arrays`): the
network as ``(cat, num)`` tensors, the trees as one float matrix :func:`sklearn_matrix` ``[cat | num]``
with the small-vocabulary code columns declared categorical (:func:`categorical_mask`).

A scikit-learn model is stored with ``skops`` (no pickle): loading refuses any type outside
:data:`TRUSTED_TYPES` before anything is constructed. Measured against ONNX (``skl2onnx`` +
``onnxruntime``): skl2onnx 1.20 converts a HistGradientBoosting model with categorical splits into a
graph whose probabilities differ by up to 0.94 from scikit-learn's, so ONNX is not used for this
family (see ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PYTORCH, SKLEARN = "pytorch", "sklearn"
#: Every family a training run can train, in the order ties are broken (the first wins).
FAMILIES = (PYTORCH, SKLEARN)
#: The naive reference every candidate must beat (majority class / base rate, or the mean).
NAIVE = "naive"

#: HistGradientBoosting takes categorical codes below its bin count; larger vocabularies go in as ordinal
#: codes (the vocabulary is ordered by frequency, so the code is a frequency rank).
MAX_CATEGORIES = 255
#: Vocabulary code columns (not calendar codes) may be declared categorical.
CATEGORICAL_PREFIX = "cat_"

#: The only types a stored scikit-learn model may contain beyond skops' own defaults (numpy, builtins,
#: scikit-learn estimators).
#: Anything else in a file is refused before it is constructed.
TRUSTED_TYPES = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",  # the classifier's input validator (a function reference, not a call)
    "functools.partial",  # wraps check_array in the classifier's state
)


class UntrustedModelError(RuntimeError):
    """A stored scikit-learn model holds a type outside the trusted list; nothing was constructed."""


def categorical_mask(categorical: Sequence[str], cardinalities: Sequence[int], numeric: Sequence[str]) -> np.ndarray:
    """Which columns of :func:`sklearn_matrix` the trees treat as categorical."""
    cats = [n.startswith(CATEGORICAL_PREFIX) and c <= MAX_CATEGORIES for n, c in zip(categorical, cardinalities, strict=True)]
    return np.array(cats + [False] * len(numeric), dtype=bool)


def sklearn_matrix(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    """The encoder's ``(cat, num)`` arrays as the trees' float32 input matrix ``[cat | num]``."""
    if not cat.size and not num.size:
        return np.zeros((max(len(cat), len(num)), 0), np.float32)
    return np.hstack([cat.astype(np.float32), num.astype(np.float32, copy=False)])


def sklearn_predict(model: Any, cat: np.ndarray, num: np.ndarray, problem_type: str) -> np.ndarray:
    """Probabilities of the positive class (classification) or values (regression)."""
    x = sklearn_matrix(cat, num)
    if problem_type == "classification":
        return model.predict_proba(x)[:, 1].astype(np.float64)
    return model.predict(x).astype(np.float64)


def dump_sklearn(model: Any) -> bytes:
    """The model as skops bytes (a zip of JSON and numpy arrays; no pickle). Not byte-stable across
    dumps (skops names entries by object id): a re-export of the same model changes the bundle digest."""
    import skops.io as sio

    return sio.dumps(model)


def load_sklearn(data: bytes, where: str) -> Any:
    """Load skops bytes, refusing any type outside :data:`TRUSTED_TYPES` (``where`` names the file in errors).

    Raises:
        UntrustedModelError: the file holds a type that is not trusted.
    """
    import skops.io as sio

    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise UntrustedModelError(f"{where} holds types outside the trusted list: {untrusted}; refusing to load it")
    return sio.loads(data, trusted=list(TRUSTED_TYPES))
