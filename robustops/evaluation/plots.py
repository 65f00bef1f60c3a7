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


def models_vs_eps_figure(
    curves: dict[str, dict[float, float]],
    bands: dict[str, dict[float, tuple[float, float]]] | None = None,
    title: str = "accuracy vs eps, every model",
    dashed: frozenset[str] = frozenset(),
    ylabel: str = "accuracy",
) -> Figure:
    """One line per model: accuracy against eps (eps 0: its clean accuracy), each with its 95 %
    interval as a band where ``bands`` has it; the models in ``dashed`` (a failed masking check)
    are drawn dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, (name, points) in enumerate(curves.items()):
        eps = sorted(points)
        color = f"C{i % 10}"
        label = f"{name} (masking suspected)" if name in dashed else name
        ax.plot(eps, [points[e] for e in eps], marker="o", color=color, ls="--" if name in dashed else "-",
                label=label)  # fmt: skip
        band = (bands or {}).get(name, {})
        at = [e for e in eps if e in band]
        if at:
            low, high = [band[e][0] for e in at], [band[e][1] for e in at]
            ax.fill_between(at, low, high, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("eps (L-inf, pixels in [0, 1])")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def corruption_heatmap(acc: dict[str, dict[int, float]], title: str) -> Figure:
    """Accuracy per held-out corruption (rows) and severity (columns)."""
    names = list(acc)
    sev = sorted({s for v in acc.values() for s in v})
    grid = np.array([[acc[n].get(s, np.nan) for s in sev] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(sev), 0.9 + 0.38 * len(names)), dpi=100)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(names)):
        for j in range(len(sev)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(sev)), [f"s{s}" for s in sev])
    ax.set_yticks(range(len(names)), names)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="accuracy")
    fig.tight_layout()
    return fig


def image_grid(rows: dict[str, np.ndarray], title: str, per_row: int = 8) -> Figure:
    """One row of images per label; images are (N, C, H, W) in [0, 1]."""
    labels = list(rows)
    fig, axes = plt.subplots(
        len(labels), per_row, figsize=(0.9 * per_row + 1, 0.9 * len(labels) + 0.6), dpi=100, squeeze=False
    )
    for r, label in enumerate(labels):
        imgs = rows[label]
        for c in range(per_row):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                # Clipped here: matplotlib clips RGB floats outside [0, 1] itself, with a warning
                # per image (a scaled difference, a synthetic sample a hair above 1).
                im = np.clip(imgs[c], 0, 1)
                ax.imshow(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].text(-0.3, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def certified_figure(
    radius: np.ndarray, correct: np.ndarray, marks: list[float], sigma: float, title: str
) -> Figure:
    """Certified accuracy against the L2 radius: the share of images certified correct at a
    radius at least r (abstentions and wrong classes count as errors), dots at the reported radii."""
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    top = max([*marks, float(radius.max()) if len(radius) else 0.0]) * 1.05 or 1.0
    grid = np.linspace(0, top, 200)
    n = max(1, len(radius))
    acc = [float((correct & (radius >= r)).sum()) / n for r in grid]
    ax.plot(grid, acc, label=f"sigma = {sigma:g}")
    ax.scatter(marks, [float((correct & (radius >= r)).sum()) / n for r in marks], zorder=3)
    ax.set_xlabel("L2 radius (pixels in [0, 1])")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def noise_figure(curves: dict[str, dict[float, float]], clean_acc: float, title: str) -> Figure:
    """Accuracy against noise strength, one line per kind of noise (strength 0 = clean)."""
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for name, points in curves.items():
        s = sorted(points)
        ax.plot([0.0, *s], [clean_acc, *(points[v] for v in s)], marker="o", label=name)
    ax.set_xlabel("noise strength (std, half-width or share of pixels)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def risk_coverage_figure(
    coverage: np.ndarray, risk: np.ndarray, chosen: tuple[float, float], title: str
) -> Figure:
    """Error among accepted inputs against the share accepted; the chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    ax.plot(coverage, risk)
    ax.scatter(
        [chosen[0]],
        [chosen[1]],
        color="C3",
        zorder=3,
        label=f"threshold: coverage {chosen[0]:.3f}, risk {chosen[1]:.3f}",
    )
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("risk (error among answered)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, max(0.05, float(risk.max()) * 1.1) if len(risk) else 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reliability_figure(bins: list[dict[str, float]], ece: float, title: str) -> Figure:
    """Accuracy against mean confidence per confidence bin; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.2, 4), dpi=100)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    if bins:
        mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = bins[0]["hi"] - bins[0]["lo"]
        ax.bar(mids, [b["acc"] for b in bins], width=width * 0.9, alpha=0.7, label="accuracy")
        ax.plot(
            [b["conf"] for b in bins],
            [b["acc"] for b in bins],
            "o",
            color="C3",
            ms=3,
            label="mean confidence",
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{title} (ECE {ece:.3f})")
    fig.tight_layout()
    return fig


def scorecard_figures(card, name: str) -> dict[str, Figure]:
    """Every plot of one model's scorecard, keyed by its artifact path."""
    clean = card.metrics["clean/acc"]
    figs = {
        "plots/confusion_matrix.png": confusion_figure(card.confusion, card.classes, f"{name}: test split")
    }
    linf = {k: v for k, v in card.curves.items() if k != "pgd_l2"}
    if linf:
        figs["plots/accuracy_vs_eps.png"] = accuracy_vs_eps_figure(linf, clean, f"{name}: accuracy vs eps")
    if card.corruption:
        figs["plots/corruption_heatmap.png"] = corruption_heatmap(
            card.corruption, f"{name}: held-out corruptions"
        )
    if card.noise:
        figs["plots/noise_curves.png"] = noise_figure(card.noise, clean, f"{name}: random noise")
    if card.risk_coverage is not None:
        m = card.metrics
        figs["plots/risk_coverage.png"] = risk_coverage_figure(
            *card.risk_coverage,
            (m["selective/coverage"], m["selective/risk"]),
            f"{name}: selective prediction",
        )
    if card.calibration is not None:
        figs["plots/reliability.png"] = reliability_figure(card.calibration.bins, card.calibration.ece, name)
    c = card.certificates
    if c is not None:
        figs["plots/certified_accuracy.png"] = certified_figure(
            c.radius, c.pred == c.y, c.radii, c.settings["sigma"], f"{name}: smoothed classifier"
        )
    return figs
