"""False alarms and detections of the drift monitor on the digits (run by hand, never by tests).

    .venv/bin/python benchmarks/drift_calibration.py [--clean 20] [--shifted 5] [--size 200]

The default config's baseline CNN is trained; its validation split is the reference (held out from
training, so model outputs on it look like production's). Batches of ``--size`` images are drawn
(seeded) from the test split, which neither training nor the reference saw:

- clean: a random sample;
- contrast halved: (x - mean) * 0.5 + mean per image;
- gaussian blur, severity 3 (the corruption library's);
- rotation by 15 degrees (either way);
- class-prior shift: the batch drawn from three classes only.

Target: at most 1 false alarm in 20 clean batches; every shifted batch detected.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from robustops.catalog import load_config
from robustops.corruptions import CORRUPTIONS
from robustops.corruptions.library import warp
from robustops.data import load_dataset, split_dataset
from robustops.monitoring.drift import DriftSettings, detect
from robustops.monitoring.features import Projection, batch_features
from robustops.training import train_baseline
from robustops.training.augment import make_loss


def contrast(x: np.ndarray, rng) -> np.ndarray:
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return ((x - m) * 0.5 + m).astype(np.float32)


def blur(x: np.ndarray, rng) -> np.ndarray:
    return CORRUPTIONS.get("gaussian_blur")(torch.from_numpy(x), 3, int(rng.integers(1 << 30))).numpy()


def rotate(x: np.ndarray, rng) -> np.ndarray:
    n = len(x)
    a = math.radians(15) * torch.from_numpy(rng.choice([-1.0, 1.0], n)).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return warp(torch.from_numpy(x), theta).clamp(0, 1).numpy()


SHIFTS = {"contrast halved": contrast, "gaussian blur s3": blur, "rotation 15 deg": rotate}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clean", type=int, default=20)
    p.add_argument("--shifted", type=int, default=5)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--alpha", type=float, default=DriftSettings.alpha)
    p.add_argument("--mmd", type=float, default=DriftSettings.mmd_threshold)
    p.add_argument("--json")
    args = p.parse_args()
    cfg = load_config(None, ["train.progress=false"])
    split = split_dataset(load_dataset(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    model = train_baseline(
        split.train, split.val, cfg.model, cfg.train, cfg.seed, loss_fn=make_loss(cfg.augment, cfg.seed)
    ).model
    classes = split.train.classes
    _, _, emb = batch_features(model, split.val.x, classes)
    proj = Projection.fit(emb, 8)
    reference, _, _ = batch_features(model, split.val.x, classes, proj)
    settings = DriftSettings(alpha=args.alpha, mmd_threshold=args.mmd)
    rng = np.random.default_rng(0)
    test = split.test
    rows = []

    def run(kind: str, x: np.ndarray) -> None:
        start = time.perf_counter()
        current, _, _ = batch_features(model, x, classes, proj)
        r = detect(reference, current, settings)
        rows.append({"kind": kind, "drift": r.drift, "reasons": r.reasons[:3], "share": r.share,
                     "mmd": r.embedding_mmd, "seconds": time.perf_counter() - start})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    for _ in range(args.clean):
        run("clean", test.x[rng.choice(len(test.y), args.size, replace=False)])
    for name, fn in SHIFTS.items():
        for _ in range(args.shifted):
            run(name, fn(test.x[rng.choice(len(test.y), args.size, replace=False)], rng))
    for _ in range(args.shifted):
        keep = rng.choice(test.num_classes, 3, replace=False)
        idx = np.flatnonzero(np.isin(test.y, keep))
        run("class-prior shift", test.x[rng.choice(idx, args.size, replace=True)])
    print(f"\nreference: validation split ({len(split.val.y)} images); batches of {args.size} from the test split; "
          f"alpha {args.alpha} (Bonferroni over columns), MMD threshold {args.mmd}\n")  # fmt: skip
    print("| batches | n | drift raised | rate | typical reason |")
    print("|---|---:|---:|---:|---|")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        r = [x for x in rows if x["kind"] == kind]
        hit = sum(x["drift"] for x in r)
        reason = next((x["reasons"][0] for x in r if x["reasons"]), "-")
        print(f"| {kind} | {len(r)} | {hit} | {hit / len(r):.2f} | {reason} |")
    print(f"\nmean time per batch {np.mean([r['seconds'] for r in rows]):.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=str)


if __name__ == "__main__":
    main()
