"""Randomized smoothing certified at scale: CERTIFY with up to 100,000 noise samples per image.

Trains the smoothing defence's base classifier (Gaussian noise at sigma) on the embedded digits,
as a run would, then certifies the test split (or --images of it) at each n and prints certified
accuracy over the radii, the largest radius each n can certify, abstentions and the time taken.

    .venv/bin/python benchmarks/certify_scale.py                    # n = 1,000, 10,000, 100,000
    .venv/bin/python benchmarks/certify_scale.py --n 100000 --images 100 --sigma 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from robustops.catalog import load_config
    from robustops.cpus import use_threads
    from robustops.data import load_split
    from robustops.defences import DEFENCES, Context, settings_from
    from robustops.defences.smoothing import certify_test
    from robustops.evaluation.scorecard import wilson

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--images", type=int, default=None, help="certify this many test images (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    args = p.parse_args()
    cfg = load_config(None, [])
    split = load_split(cfg.data, cfg.seed, cfg.limits)
    settings = settings_from({"name": "smoothing", "sigma": args.sigma})
    ctx = Context(
        cfg.model, cfg.train.model_copy(update={"progress": False}), cfg.augment, cfg.regularize, cfg.seed
    )
    with use_threads(args.threads):
        start = time.perf_counter()
        result = DEFENCES.get("smoothing").train(split.train, split.val, ctx, settings)
        trained = time.perf_counter() - start
        print(f"digits {split.test.shape}, sigma {args.sigma}: base classifier trained in {trained:.0f} s; "
              f"clean accuracy under noise (validation) {result.extras['train/val_noise_acc']:.3f}\n")  # fmt: skip
        header = "| n | images | " + " | ".join(f"r = {r:g}" for r in args.radii)
        print(header + " | abstain | largest certifiable r | seconds |")
        print("|---" * (len(args.radii) + 5) + "|")
        for n in args.n:
            smoothing = settings.model_copy(
                update={
                    "n": n,
                    "n0": args.n0,
                    "alpha": args.alpha,
                    "radii": args.radii,
                    "max_samples": args.images,
                }
            )
            start = time.perf_counter()
            c = certify_test(result.model, split.test, smoothing, cfg.seed)
            took = time.perf_counter() - start
            m, k = c.metrics(), len(c.y)
            cells = []
            for r in args.radii:
                acc = c.certified_accuracy(r)
                low, high = wilson(round(acc * k), k)
                cells.append(f"{acc:.3f} ({low:.3f}-{high:.3f})")
            print(f"| {n:,} | {k} | " + " | ".join(cells)
                  + f" | {m['certified/abstain']:.3f} | {m['certified/max_radius']:.3f} | {took:.1f} |")  # fmt: skip
    print(f"\nCERTIFY (Cohen et al., 2019): n0 = {args.n0}, alpha = {args.alpha}; abstentions count as errors; "
          "95 % Wilson intervals.")  # fmt: skip


if __name__ == "__main__":
    main()
