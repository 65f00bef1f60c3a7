"""Accuracy under the held-out corruptions, per corruption and severity."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.corruptions import CORRUPTIONS


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
