"""How well the expected-accuracy estimators track the true accuracy of production batches, and how
the accuracy alert compares with the distribution alert (run by hand, never by tests).

    .venv/bin/python benchmarks/estimate_calibration.py [--datasets digits mnist] [--threads 2]

Per dataset a plain CNN is trained (the digits: robustops' default model on the embedded digits;
MNIST: the same on ../shared/data, 2 epochs), its drift reference built as the pipeline builds it
(estimators fitted on the validation split, clean and under the default held-out corruptions
``evaluation.corruptions`` at severities 1-5), and then scored on batches drawn from the test split:

- 20 clean batches;
- every corruption of the library at every severity: the held-out ones the estimators were fitted
  on ("seen") and all the others ("unseen");
- 10 label-prior shifts (class shares drawn from a Dirichlet with concentration 0.5);
- 10 mixtures of clean and corrupted images (a random corruption and severity, 30-70 % of the batch).

Batch sizes are drawn from 200-1,000 images (the digits' test split has 360, so its batches hold
200-360 images, drawn without replacement). Per method: the mean absolute error of the estimate
against the batch's true accuracy (all batches, and per kind), the worst error, and how often the
95 % bootstrap interval holds the truth. Then the alerts: false alarms on the clean batches and
the share of batches whose true accuracy fell more than 10 points below the validation accuracy
that each alert catches: the accuracy alert (``monitor.max_expected_drop`` on the chosen
estimator) beside the distribution alert (the drift tests' per-column tests; the embedding MMD is
left out, as its Evidently metric fits a t-SNE of every batch).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _model(name: str, seed: int = 0):
    """(model, blueprint, val, test) for a dataset: a plain CNN, trained as the pipeline does."""
    from robustops.catalog import load_config
    from robustops.data import Dataset, load_npz
    from robustops.data.loaders import load_digits
    from robustops.data.split import split_dataset
    from robustops.training import train_baseline

    cfg = load_config(None, ["train.progress=false"])
    if name == "digits":
        split = split_dataset(load_digits(), cfg.data.val_fraction, cfg.data.test_fraction, seed)
        train, val, test = split.train, split.val, split.test
        train_cfg = cfg.train
    else:
        full, test = load_npz(DATA / "mnist_train.npz"), load_npz(DATA / "mnist_test.npz")
        idx = np.random.default_rng(seed).permutation(len(full.y))
        train = Dataset(full.x[idx[5000:]], full.y[idx[5000:]], full.classes, "mnist")
        val = Dataset(full.x[idx[:5000]], full.y[idx[:5000]], full.classes, "mnist")
        train_cfg = cfg.train.model_copy(update={"epochs": 2, "batch_size": 128})
    result = train_baseline(train, val, cfg.model, train_cfg, seed)
    return result.model.eval(), result.blueprint, val, test, cfg


def _batches(test, seed: int, name: str) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(kind, label, x, y) for every batch of the benchmark."""
    from robustops.config import EvalConfig
    from robustops.corruptions import CORRUPTIONS

    gen = np.random.default_rng(seed)
    n_max = min(1000, len(test.y))
    seen = set(EvalConfig().corruptions)

    def draw() -> np.ndarray:
        return gen.choice(len(test.y), int(gen.integers(200, n_max + 1)), replace=False)

    def corrupt(x: np.ndarray, c: str, s: int) -> np.ndarray:
        return CORRUPTIONS.get(c)(
            torch.from_numpy(np.ascontiguousarray(x)), s, int(gen.integers(1 << 30))
        ).numpy()

    out = []
    for i in range(20):
        idx = draw()
        out.append(("clean", f"clean {i}", test.x[idx], test.y[idx]))
    for c in CORRUPTIONS.names():
        for s in range(1, 6):
            idx = draw()
            kind = "seen" if c in seen else "unseen"
            out.append((kind, f"{c}/{s}", corrupt(test.x[idx], c, s), test.y[idx]))
    k = len(test.classes)
    for i in range(10):
        prior = gen.dirichlet(np.full(k, 0.5))
        n = int(gen.integers(200, n_max + 1))
        want = gen.choice(k, n, p=prior)
        idx = np.concatenate(
            [gen.choice(np.flatnonzero(test.y == c), (want == c).sum(), replace=True) for c in range(k)]
        )
        out.append(("prior", f"prior {i}", test.x[idx], test.y[idx]))
    names = CORRUPTIONS.names()
    for _ in range(10):
        idx = draw()
        c, s = names[int(gen.integers(len(names)))], int(gen.integers(1, 6))
        share = float(gen.uniform(0.3, 0.7))
        cut = int(share * len(idx))
        x = test.x[idx].copy()
        x[:cut] = corrupt(x[:cut], c, s)
        out.append(("mixture", f"mix {c}/{s} {share:.0%}", x, test.y[idx]))
    return out


def run(name: str, seed: int) -> tuple[pd.DataFrame, dict]:
    from robustops.monitoring.drift import DriftSettings
    from robustops.monitoring.features import batch_features
    from robustops.monitoring.monitor import PLAIN_COLUMN, Scored, drift, expect
    from robustops.monitoring.reference import build_reference

    start = time.perf_counter()
    model, blueprint, val, test, cfg = _model(name, seed)
    ref = build_reference(model, val, blueprint.classes, corruptions=cfg.evaluation.corruptions,
                          images=cfg.monitor.estimate_images, seed=seed)  # fmt: skip
    fit_s = time.perf_counter() - start
    m = cfg.monitor
    rows = []
    for kind, label, x, y in _batches(test, seed + 1, name):
        x = np.ascontiguousarray(x, dtype=np.float32)
        table, logits, _ = batch_features(model, x, blueprint.classes, ref.projection)
        pred = logits.argmax(1)
        predictions = pd.DataFrame(
            {"rejected": False, "abstain": False, "class_index": pred, PLAIN_COLUMN: pred}
        )
        e = expect(ref, Scored(predictions, table, logits), m, y, seed)
        # The per-column tests only: Evidently's embedding test draws a t-SNE of every batch for its
        # report, minutes per batch on 2 cores.
        d = drift(ref, table, DriftSettings(m.alpha, m.mmd_threshold, False), m.min_batch)
        row = {"kind": kind, "batch": label, "n": len(y), "truth": e.truth, "val_acc": ref.fitted.val_acc,
               "distribution_alert": d.drift}  # fmt: skip
        for k, est in e.estimates.items():
            row |= {k: est.value, f"{k}_low": est.low, f"{k}_high": est.high,
                    f"{k}_sampling_low": est.sampling[0], f"{k}_sampling_high": est.sampling[1]}  # fmt: skip
        rows.append(row)
    df = pd.DataFrame(rows)
    return df, {"val_acc": ref.fitted.val_acc, "fit_s": fit_s, "seconds": time.perf_counter() - start}


def _sampling(df: pd.DataFrame, k: str) -> tuple[pd.Series, pd.Series]:
    # Files written before the intervals took in the estimators' error under shift hold the
    # bootstrap interval alone, as low and high.
    if f"{k}_sampling_low" in df:
        return df[f"{k}_sampling_low"], df[f"{k}_sampling_high"]
    return df[f"{k}_low"], df[f"{k}_high"]


def summary(df: pd.DataFrame, val_acc: float, m) -> str:
    """The error table per method, then per method the accuracy alert of ``m``
    (``monitor.max_expected_drop`` and ``monitor.min_expected_acc``, decided as the monitor decides)
    beside the distribution alert."""
    from robustops.monitoring.estimate import ESTIMATORS, Estimate
    from robustops.monitoring.monitor import alerts

    methods = [k for k in ESTIMATORS.names() if k in df]  # files of earlier runs lack later methods

    lines = ["| method | MAE all | MAE seen corruptions | MAE unseen corruptions | MAE prior shift | "
             "MAE mixtures | MAE clean | worst | interval coverage | bootstrap alone |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for k in methods:
        err = (df[k] - df["truth"]).abs()
        cover = ((df[f"{k}_low"] <= df["truth"]) & (df["truth"] <= df[f"{k}_high"])).mean()
        lo, hi = _sampling(df, k)
        boot = ((lo <= df["truth"]) & (df["truth"] <= hi)).mean()
        by = {
            kind: 100 * err[df["kind"] == kind].mean()
            for kind in ("seen", "unseen", "prior", "mixture", "clean")
        }
        lines.append(f"| {k} | {100 * err.mean():.1f} | {by['seen']:.1f} | {by['unseen']:.1f} | {by['prior']:.1f} | "
                     f"{by['mixture']:.1f} | {by['clean']:.1f} | {100 * err.max():.1f} | {100 * cover:.0f} % | "
                     f"{100 * boot:.0f} % |")  # fmt: skip
    clean = df["kind"] == "clean"
    fell = df["truth"] < val_acc - 0.10
    lines += ["", f"alerts on {clean.sum()} clean batches (false alarms) and on the {fell.sum()} batches whose true "
              f"accuracy fell more than 10 points below the validation accuracy {val_acc:.3f} (caught); "
              f"accuracy alert: monitor.max_expected_drop {m.max_expected_drop}, "
              f"monitor.min_expected_acc {m.min_expected_acc}:", "",
              "| alert | false alarms | caught | alerts on all shifted batches |", "|---|---|---|---|"]  # fmt: skip
    for k in methods:
        lo, hi = _sampling(df, k)
        alert = pd.Series(
            [bool(alerts(Estimate(k, v, a, b, (sa, sb)), val_acc, m))
             for v, a, b, sa, sb in zip(df[k], df[f"{k}_low"], df[f"{k}_high"], lo, hi, strict=True)],
            index=df.index,
        )  # fmt: skip
        mark = " (monitor.estimator)" if k == m.estimator else ""
        lines.append(f"| accuracy, {k}{mark} | {int(alert[clean].sum())} | {int(alert[fell].sum())} of {int(fell.sum())} | "
                     f"{int(alert[~clean].sum())} of {int((~clean).sum())} |")  # fmt: skip
    d = df["distribution_alert"].astype(bool)
    lines.append(f"| distribution (drift tests) | {int(d[clean].sum())} | {int(d[fell].sum())} of {int(fell.sum())} | "
                 f"{int(d[~clean].sum())} of {int((~clean).sum())} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=["digits", "mnist"])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 2))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", type=Path, help="write every batch's row here (one file per dataset: NAME.csv)")
    p.add_argument(
        "--summarize", type=Path, help="only print the tables of the NAME.csv files in this folder"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from robustops.config import MonitorConfig

    m = MonitorConfig()
    if args.summarize:
        for name in args.datasets:
            df = pd.read_csv(args.summarize / f"{name}.csv")
            print(f"\n## {name}: {len(df)} batches\n")
            print(summary(df, float(df["val_acc"].iloc[0]), m))
        return
    for name in args.datasets:
        df, info = run(name, args.seed)
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.csv / f"{name}.csv", index=False)
        print(f"\n## {name}: {len(df)} batches, validation accuracy {info['val_acc']:.3f}, "
              f"fitted in {info['fit_s']:.0f} s, {info['seconds']:.0f} s in all\n")  # fmt: skip
        print(summary(df, info["val_acc"], m))


if __name__ == "__main__":
    main()
