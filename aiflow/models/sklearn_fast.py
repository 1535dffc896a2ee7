"""Small-batch prediction for the scikit-learn family: the same values as ``predict_proba`` / ``predict``, without
their fixed cost per call.

Online serving scores a handful of records per call (up to a few hundred when micro-batches grow under load). On the demo's HistGradientBoosting champion (100 trees,
3 categorical columns) one record cost ~2.6 ms in ``predict_proba``, about three quarters of it in the input
preprocessing that scikit-learn rebuilds per call (a ``ColumnTransformer`` with an ``OrdinalEncoder`` for the
categorical columns, run through joblib, with its input checks), and most of the rest in rebuilding the known
categories' bitsets and a ``functools.partial`` per tree (see ``benchmarks/README.md``). :class:`SklearnPredictor`
compiles these once at load: the ordinal codes as dicts, the bitsets, the trees. A call then encodes the
categorical columns by dict lookup (unknown values and NaN become NaN, as the fitted ``OrdinalEncoder``'s
``unknown_value`` and ``encoded_missing_value`` say), and sums the trees' outputs by scikit-learn's own tree
predictors, in scikit-learn's order (baseline, then tree by tree), before the loss's own inverse link: the
values are bit for bit those of the estimator (``tests/aiflow/models/test_sklearn_fast.py`` compares them).

Only the estimator shapes this was checked on take the compiled path (HistGradientBoosting, one tree per
iteration, the preprocessor scikit-learn 1.9 builds); anything else, and batches over :data:`SMALL_BATCH` rows,
go through the estimator's own ``predict_proba`` / ``predict``. It reads private attributes of the fitted
estimator (``_preprocessor``, ``_predictors``, ``_bin_mapper``, ``_baseline_prediction``, ``_loss``): a
scikit-learn release that changes them sends every call to the estimator's own path, or is caught by the tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The most rows scored by the compiled path: it covers the server's micro-batches (256 records by default) and requests
#: of up to this many records. Measured on the demo's champion (benchmarks/README.md, issue 22), the compiled path is
#: faster at every size up to 10,000 rows on one thread (256 rows: 1.9 vs 3.5 ms); larger batches (batch scoring) keep
#: the estimator's own path, whose trees can use every core. At 64, a server behind at 1,000 requests/s scored its
#: micro-batches of 65-256 records by the estimator's path: 4.7 ms of CPU a call, vs 2.2 ms compiled.
SMALL_BATCH = 1024


class SklearnPredictor:
    """``(cat, num) ->`` probabilities of the positive class (classification) or values (regression).

    Args:
        model: a fitted scikit-learn estimator (any: only HistGradientBoosting is compiled).
        problem_type: ``"classification"`` or ``"regression"``.
        full: the estimator's own path, ``(model, cat, num, problem_type) -> values`` (the large-batch path).
    """

    def __init__(self, model: Any, problem_type: str, full) -> None:
        self.model, self.problem_type, self.full = model, problem_type, full
        try:
            self.compiled = self._compile()
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):  # a shape this module does not know
            self.compiled = False

    def __call__(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        n = max(len(cat), len(num))
        if not self.compiled or n == 0 or n > SMALL_BATCH:
            return self.full(self.model, cat, num, self.problem_type)
        from aiflow.models.families import sklearn_matrix

        x = sklearn_matrix(cat, num)
        if x.shape[1] != self.n_features:
            return self.full(self.model, cat, num, self.problem_type)  # let the estimator raise its own error
        raw = np.zeros((n, 1), dtype=self.baseline.dtype, order="F")
        raw += self.baseline
        column = raw[:, 0]
        data = self._preprocessed(x)
        for predictor in self.trees:
            column += predictor.predict(data, self.known_bitsets, self.f_idx_map, 1)
        if self.problem_type == "classification":
            return self.model._loss.predict_proba(raw)[:, 1].astype(np.float64)
        return self.model._loss.link.inverse(raw.ravel()).astype(np.float64)

    def _compile(self) -> bool:
        m = self.model
        name = type(m).__name__
        if name not in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor") or m.n_trees_per_iteration_ != 1:
            return False
        if (self.problem_type == "classification") != (name == "HistGradientBoostingClassifier"):
            return False
        if name == "HistGradientBoostingClassifier" and len(m.classes_) != 2:
            return False
        self.n_features = int(m.n_features_in_)
        self.baseline = m._baseline_prediction
        self.trees = [predictors[0] for predictors in m._predictors]
        self.known_bitsets, self.f_idx_map = m._bin_mapper.make_known_categories_bitsets()
        pre = m._preprocessor
        if pre is None:  # no categorical column: scikit-learn only checks and casts to float64
            self.categorical, self.codes, self.numeric = np.array([], dtype=np.intp), [], np.arange(self.n_features)
            return True
        fitted = {name: (transformer, columns) for name, transformer, columns in pre.transformers_ if name != "remainder"}
        remainder = [t for t in pre.transformers_ if t[0] == "remainder"]
        if set(fitted) != {"encoder", "numerical"} or any(t[1] != "drop" or np.any(t[2]) for t in remainder):
            return False
        encoder, cats = fitted["encoder"]
        numerical, nums = fitted["numerical"]
        if type(encoder).__name__ != "OrdinalEncoder" or type(numerical).__name__ != "FunctionTransformer":
            return False
        if encoder.handle_unknown != "use_encoded_value" or not _isnan(encoder.unknown_value) or not _isnan(encoder.encoded_missing_value):
            return False
        self.categorical, self.numeric = _indices(cats, self.n_features), _indices(nums, self.n_features)
        if sorted([*self.categorical, *self.numeric]) != list(range(self.n_features)):
            return False
        # the fitted encoder's categories, in its order: a value maps to its index; anything else (unknown, NaN) to NaN
        self.codes = [{float(v): float(i) for i, v in enumerate(values) if not _isnan(v)} for values in encoder.categories_]
        return len(self.codes) == len(self.categorical)

    def _preprocessed(self, x: np.ndarray) -> np.ndarray:
        """What the fitted ``ColumnTransformer`` gives: the ordinal codes of the categorical columns, then the others."""
        out = np.empty((len(x), self.n_features), dtype=np.float64)
        k = len(self.categorical)
        for j, (col, codes) in enumerate(zip(self.categorical, self.codes, strict=True)):
            out[:, j] = [codes.get(v, math.nan) for v in x[:, col].tolist()]
        out[:, k:] = x[:, self.numeric]
        return out


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _indices(columns: Any, n: int) -> np.ndarray:
    """Column indices from what a ``ColumnTransformer`` was given (a boolean mask or indices)."""
    arr = np.asarray(columns)
    if arr.dtype == bool:
        if len(arr) != n:
            raise ValueError("mask length")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError("column names")
    return arr.astype(np.intp)
