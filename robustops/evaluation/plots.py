"""Figures for the MLflow UI. Pure matplotlib (Agg backend): callers save or log them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_figure(cm: np.ndarray, classes: list[str], title: str = "confusion matrix") -> Figure:
    k = len(classes)
    size = min(2 + 0.5 * k, 12)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(k), classes if k <= 30 else [""] * k)
    ax.set_yticks(range(k), classes if k <= 30 else [""] * k)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="row share")
    fig.tight_layout()
    return fig


def accuracy_vs_eps_figure(curves: dict[str, dict[float, float]], clean_acc: float, title: str) -> Figure:
    """One line per attack: accuracy against eps, starting at the clean accuracy (eps = 0)."""
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for name, points in curves.items():
        eps = [0.0, *sorted(points)]
        acc = [clean_acc, *(points[e] for e in sorted(points))]
        ax.plot(eps, acc, marker="o", label=name)
    ax.set_xlabel("eps (L-inf, pixels in [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig
