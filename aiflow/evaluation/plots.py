"""Plots for the UI: candidate vs champion, as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the headless Agg backend, imported on first use (it costs ~1 s at load)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def comparison_plot(y: np.ndarray, curves: dict[str, np.ndarray], problem_type: str, title: str) -> bytes:
    """ROC curves (classification) or residual histograms (regression) of each named model's scores."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if problem_type == "classification":
        for name, scores in curves.items():
            fpr, tpr, _ = roc_curve(y, scores)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    else:
        for name, scores in curves.items():
            ax.hist(np.asarray(scores) - np.asarray(y), bins=50, alpha=0.5, label=name)
        ax.set_xlabel("prediction - actual")
        ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend(loc="lower right" if problem_type == "classification" else "upper right")
    return _png(fig)
