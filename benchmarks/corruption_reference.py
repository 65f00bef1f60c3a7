"""robustops' corruptions beside the imagecorruptions package (Michaelis et al., the ImageNet-C
code as a library) on the same CIFAR-10 images: output statistics per corruption and severity
(run by hand in the benchmark environment, never by tests; the images live in ../shared/data).

    .venv-bench/bin/python benchmarks/corruption_reference.py [--images 200] [--only NAME ...]

Both sides get the same parameter: imagecorruptions' own (ImageNet-C's) for each severity,
passed to our function directly, so the table compares the algorithms, not the severity
tables (robustops registers CIFAR-10-C's, which suit 32x32 images). At 32x32 robustops'
spatial parameters are in pixels, the unit of the reference, so both use the same sizes.
Only the corruptions whose parameters mean the same in both are compared.

Statistics, each averaged over the images: ``change``, the mean absolute difference from the
clean image; ``mean`` and ``std`` of the corrupted pixels; ``edges``, the mean squared
Laplacian of the corrupted image over the clean one's (blur lowers it, noise raises it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_test_jpeg.npz"

# ours -> (imagecorruptions' name, its parameter per severity as our function takes it)
IMAGENET_C = {
    "gaussian_noise": ("gaussian_noise", [0.08, 0.12, 0.18, 0.26, 0.38]),
    "shot_noise": ("shot_noise", [60, 25, 12, 5, 3]),
    "impulse_noise": ("impulse_noise", [0.03, 0.06, 0.09, 0.17, 0.27]),
    "contrast": ("contrast", [0.4, 0.3, 0.2, 0.1, 0.05]),
    "jpeg": ("jpeg_compression", [25, 18, 15, 10, 7]),
    "zoom_blur": ("zoom_blur", [1.11, 1.16, 1.21, 1.26, 1.31]),
    "glass_blur": ("glass_blur", [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
    "snow": ("snow", [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                      (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                      (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]),
    "frost": ("frost", [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]),
    "defocus_blur": ("defocus_blur", [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
    "motion_blur": ("motion_blur", [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]),
    "fog": ("fog", [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)]),
    "brightness": ("brightness", [0.1, 0.2, 0.3, 0.4, 0.5]),
}  # fmt: skip


def _edges(x: np.ndarray) -> np.ndarray:
    """Per image, the mean squared 4-neighbour Laplacian (N, C, H, W in [0, 1])."""
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return (lap**2).mean(axis=(1, 2, 3))


def stats(clean: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {
        "change": float(np.abs(out - clean).mean()),
        "mean": float(out.mean()),
        "std": float(out.std(axis=(1, 2, 3)).mean()),
        "edges": float((_edges(out) / np.maximum(_edges(clean), 1e-8)).mean()),
    }


def _modern_skimage() -> None:
    """imagecorruptions 1.1.2 calls ``skimage.filters.gaussian(..., multichannel=True)``, an
    argument scikit-image has since renamed to ``channel_axis``: translate it. Its fog also
    names ``np.float_``, which NumPy 2 removed: alias it to float64."""
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian

    if not hasattr(np, "float_"):
        np.float_ = np.float64

    def compat(image, *a, multichannel=None, **kw):
        if multichannel:
            kw.setdefault("channel_axis", -1)
        return gaussian(image, *a, **kw)

    ic.gaussian = compat


def main() -> None:
    from imagecorruptions import corrupt as reference

    _modern_skimage()

    from robustops.corruptions import CORRUPTIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--only", nargs="+", choices=sorted(IMAGENET_C), help="these corruptions alone")
    args = p.parse_args()
    x8 = np.load(args.data)["x"][: args.images]  # (N, 32, 32, 3) uint8
    clean = x8.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.random.seed(0)  # imagecorruptions draws from numpy's global stream
    print(f"{len(x8)} CIFAR-10 test images, 32x32; ImageNet-C parameters on both sides\n")
    print(
        "| corruption | severity | change ours / ref | mean ours / ref | std ours / ref | edges ours / ref |"
    )
    print("|---|---:|---|---|---|---|")
    worst: dict[str, float] = {}
    for name, (ref_name, params) in IMAGENET_C.items():
        if args.only and name not in args.only:
            continue
        fn = CORRUPTIONS.get(name).fn
        for severity, param in enumerate(params, start=1):
            gen = torch.Generator().manual_seed(severity)
            ours = fn(torch.from_numpy(clean), param, gen).clamp(0, 1).numpy()
            theirs = np.stack([reference(im, corruption_name=ref_name, severity=severity) for im in x8])
            theirs = theirs.astype(np.float32).transpose(0, 3, 1, 2) / 255
            a, b = stats(clean, ours), stats(clean, theirs)
            worst[name] = max(worst.get(name, 0.0), abs(a["change"] - b["change"]) / max(b["change"], 1e-6))
            print(f"| {name} | {severity} | " + " | ".join(f"{a[k]:.3f} / {b[k]:.3f}" for k in a) + " |")
    print("\nlargest relative difference in change, per corruption:")
    for name, w in worst.items():
        print(f"  {name}: {100 * w:.0f} %")


if __name__ == "__main__":
    main()
