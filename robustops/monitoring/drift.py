"""The one adapter around Evidently (0.7): drift of a batch's features against the reference.

Evidently computes the per-column tests (Kolmogorov-Smirnov for numeric columns, a two-sample
chi-square test of homogeneity for the predicted class) and the embedding drift (maximum mean
discrepancy). The dataset-level decision is ours, because Evidently's default (half the columns
drifted) is blind to a shift that moves one thing a lot, such as the class priors: drift when
any column's p-value falls below
``alpha / number of columns`` (Bonferroni: at most ``alpha`` false alarms per clean batch) or the
embedding MMD exceeds its threshold. ``benchmarks/drift_calibration.py`` measures the false-alarm
rate on clean batches and the detection rate on shifted ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustops.monitoring.features import CLASS_COLUMN

CLASS_TEST = "chi2_homogeneity"


def _homogeneity(reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float):
    """Pearson's chi-square test that two samples share one categorical distribution, on their
    2 x K table of counts (scipy). Evidently's ``chisquare`` takes the reference's shares as the
    truth: a class the reference never predicted expects zero, so one such prediction in a
    clean batch gives p = 0. Here both sides are samples, and a class seen once is weak
    evidence, as it should be."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(reference.dropna()) | set(current.dropna()))
    table = np.array([[int((side == k).sum()) for k in keys] for side in (reference, current)])
    p_value = float(chi2_contingency(table).pvalue) if len(keys) > 1 else 1.0
    return p_value, p_value < threshold


def _register_class_test() -> None:
    """Registers the test under :data:`CLASS_TEST` (again is harmless: the same name, the same
    function)."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(CLASS_TEST, "chi-square homogeneity p_value", [ColumnType.Categorical])
    register_stattest(test, default_impl=_homogeneity)


@dataclass
class DriftSettings:
    alpha: float = 0.01
    mmd_threshold: float = 0.015
    use_embeddings: bool = True
    # Evidently's MMD builds the full (n + m)^2 kernel matrix: 82 GB for a 100,000-image batch.
    # Above this many rows it runs on a seeded sample of each side; the column tests use every row.
    mmd_rows: int = 2000
    seed: int = 0


@dataclass
class DriftResult:
    drift: bool
    share: float  # share of columns whose own test (at Evidently's 0.05) says drift
    p_values: dict[str, float]
    embedding_mmd: float | None
    reasons: list[str] = field(default_factory=list)
    snapshot: Any = None
    embedding_snapshot: Any = None  # the MMD's own report when it ran on a sample

    def metrics(self) -> dict[str, float]:
        m = {"drift/detected": float(self.drift), "drift/share": self.share}
        m |= {f"drift/p_value/{c}": p for c, p in self.p_values.items()}
        if self.embedding_mmd is not None:
            m["drift/embedding_mmd"] = self.embedding_mmd
        m["drift/min_p_value"] = min(self.p_values.values()) if self.p_values else 1.0
        return m

    def save_html(self, path: str | Path, header: str = "") -> None:
        """The Evidently report at ``path``, with ``header`` (HTML) at the top of its body."""
        self.snapshot.save_html(str(path))
        if header:
            page = Path(path)
            text = page.read_text(encoding="utf-8")
            at = text.find(">", text.find("<body")) + 1 if "<body" in text else 0
            page.write_text(text[:at] + header + text[at:], encoding="utf-8")
        if self.embedding_snapshot is not None:
            path = Path(path)
            self.embedding_snapshot.save_html(str(path.with_name(f"{path.stem}_embeddings{path.suffix}")))


def detect(reference: pd.DataFrame, current: pd.DataFrame, settings: DriftSettings) -> DriftResult:
    """Tests every column of ``current`` against ``reference`` and decides on drift."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd
    from evidently.metrics.embeddings import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    emb = [c for c in reference.columns if c.startswith("emb_")]
    numeric = [c for c in reference.columns if c not in (CLASS_COLUMN, *emb)]
    columns = [*numeric, CLASS_COLUMN]
    definition = DataDefinition(
        numerical_columns=numeric + emb,
        categorical_columns=[CLASS_COLUMN],
        embeddings={"embedding": emb} if emb else None,
    )
    embed = emb and settings.use_embeddings
    sample = max(len(reference), len(current)) > settings.mmd_rows
    mmd_metric = EmbeddingsDrift(
        embeddings_name="embedding", drift_method=mmd(threshold=settings.mmd_threshold)
    )
    # Named tests: Evidently's default switches to distances (Wasserstein, Jensen-Shannon) once the
    # reference has more than 1,000 rows, and a distance read as a p-value never falls below
    # alpha, so a large reference would never drift.
    _register_class_test()
    metrics: list[Any] = [DataDriftPreset(columns=columns, num_method="ks", cat_method=CLASS_TEST)]
    if embed and not sample:
        metrics.append(mmd_metric)

    def run(ref_df: pd.DataFrame, cur_df: pd.DataFrame, what: list[Any]) -> Any:
        ref = Dataset.from_pandas(ref_df.astype({CLASS_COLUMN: str}), data_definition=definition)
        cur = Dataset.from_pandas(cur_df.astype({CLASS_COLUMN: str}), data_definition=definition)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Report(what).run(cur, ref)

    snapshot = run(reference, current, metrics)
    extra = None
    if embed and sample:
        n = settings.mmd_rows
        ref_s = reference.sample(min(n, len(reference)), random_state=settings.seed)
        cur_s = current.sample(min(n, len(current)), random_state=settings.seed)
        extra = run(ref_s, cur_s, [mmd_metric])
    p_values, share, mmd_score = {}, 0.0, None
    found = snapshot.dict()["metrics"] + (extra.dict()["metrics"] if extra is not None else [])
    for m in found:
        cfg = m["config"]
        kind = cfg.get("type", "")
        if kind.endswith("ValueDrift"):
            p_values[cfg["column"]] = float(m["value"])
        elif kind.endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
        elif kind.endswith("EmbeddingsDrift"):
            mmd_score = float(m["value"])
    limit = settings.alpha / max(1, len(p_values))
    reasons = [
        f"{c}: p = {p:.2e} < {limit:.1e}"
        for c, p in sorted(p_values.items(), key=lambda kv: kv[1])
        if p < limit
    ]
    if mmd_score is not None and mmd_score > settings.mmd_threshold:
        reasons.append(f"embedding MMD {mmd_score:.4f} > {settings.mmd_threshold:g}")
    return DriftResult(bool(reasons), share, p_values, mmd_score, reasons, snapshot, extra)
