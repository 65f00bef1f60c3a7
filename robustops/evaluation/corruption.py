"""Accuracy under the held-out corruptions, per corruption and severity, and on a corruption
benchmark read from files (``evaluation.corruption_benchmark``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.config import CorruptionBenchmarkConfig
from robustops.corruptions import CORRUPTIONS
from robustops.data.corruption_files import benchmark_batches


@torch.no_grad()
def corruption_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    severities: list[int],
    seed: int = 0,
    batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, dict[int, float]]:
    """``{corruption: {severity: accuracy}}`` on a fixed, seeded corruption of ``x``."""
    model.eval()
    out: dict[str, dict[int, float]] = {}
    for name in names:
        corruption = CORRUPTIONS.get(name)
        out[name] = {}
        for s in severities:
            gen = torch.Generator().manual_seed(seed * 1000 + s)  # same noise for every model compared
            correct = 0
            for i in range(0, len(y), batch_size):
                xb = corruption(torch.from_numpy(x[i : i + batch_size]), s, gen).to(device)
                correct += int((model(xb).argmax(1).cpu().numpy() == y[i : i + batch_size]).sum())
            out[name][s] = correct / len(y)
    return out


def corruption_metrics(acc: dict[str, dict[int, float]]) -> dict[str, float]:
    """Structured metric names: per severity, per corruption (mean over severities), overall mean."""
    m: dict[str, float] = {}
    for name, by_sev in acc.items():
        for s, a in by_sev.items():
            m[f"corruption/{name}/s{s}/acc"] = a
        m[f"corruption/{name}/acc"] = float(np.mean(list(by_sev.values())))
    if acc:
        m["corruption/mean_acc"] = float(np.mean([m[f"corruption/{n}/acc"] for n in acc]))
    return m


BENCHMARK = "corruption_benchmark"  # the metrics' prefix, as the config's key


@torch.no_grad()
def benchmark_accuracy(
    model: nn.Module,
    cfg: CorruptionBenchmarkConfig,
    corruption: str,
    shape: tuple[int, int, int],
    classes: list[str],
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, float]:
    """Accuracy on one corruption of a benchmark read from files, per severity:
    ``corruption_benchmark/<corruption>/s<severity>/acc`` and the images each one counts
    (``.../n``)."""
    model.eval()
    out: dict[str, float] = {}
    for s in cfg.levels:
        correct = n = 0
        for x, y in benchmark_batches(cfg, corruption, s, shape, classes, seed, batch_size):
            correct += int((model(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy() == y).sum())
            n += len(y)
        out[f"{BENCHMARK}/{corruption}/s{s}/acc"] = correct / n
        out[f"{BENCHMARK}/{corruption}/s{s}/n"] = float(n)
    return out


def benchmark_summary(metrics: dict[str, float], cfg: CorruptionBenchmarkConfig) -> dict[str, float]:
    """From the per-severity accuracies: each corruption's mean over severities, the mean over
    every corruption and severity (RobustBench's corruption accuracy), the fewest images any
    one counts (``corruption_benchmark/n``), and with ``cfg.reference_errors`` the mCE of
    Hendrycks & Dietterich (2019): the mean over corruptions of CE_c = sum_s E(c, s) /
    sum_s E_ref(c, s), or with one reference error per corruption, mean_s E(c, s) / E_ref(c)."""
    out: dict[str, float] = {}
    acc = {c: {s: metrics[f"{BENCHMARK}/{c}/s{s}/acc"] for s in cfg.levels} for c in cfg.names}
    for c, by_sev in acc.items():
        out[f"{BENCHMARK}/{c}/acc"] = float(np.mean(list(by_sev.values())))
    out[f"{BENCHMARK}/mean_acc"] = float(np.mean([a for by_sev in acc.values() for a in by_sev.values()]))
    out[f"{BENCHMARK}/n"] = min(metrics[f"{BENCHMARK}/{c}/s{s}/n"] for c in cfg.names for s in cfg.levels)
    if cfg.reference_errors:
        ces = []
        for c, by_sev in acc.items():
            ref = cfg.reference_errors[c]
            err = [1 - by_sev[s] for s in cfg.levels]
            if isinstance(ref, list):
                ces.append(sum(err) / sum(ref[s - 1] for s in cfg.levels))
            else:
                ces.append(float(np.mean(err)) / ref)
            out[f"{BENCHMARK}/{c}/ce"] = ces[-1]
        out[f"{BENCHMARK}/mce"] = float(np.mean(ces))
    return out


def benchmark_names(cfg: CorruptionBenchmarkConfig | None) -> set[str]:
    """Every metric a benchmark of ``cfg`` logs (None: none)."""
    if cfg is None:
        return set()
    names = {f"{BENCHMARK}/mean_acc", f"{BENCHMARK}/n"} | (
        {f"{BENCHMARK}/mce"} if cfg.reference_errors else set()
    )
    for c in cfg.names:
        names |= {f"{BENCHMARK}/{c}/acc"} | ({f"{BENCHMARK}/{c}/ce"} if cfg.reference_errors else set())
        names |= {f"{BENCHMARK}/{c}/s{s}/{k}" for s in cfg.levels for k in ("acc", "n")}
    return names
