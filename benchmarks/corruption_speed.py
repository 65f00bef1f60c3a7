"""Speed of our batched torch corruptions against the ``imagecorruptions`` package (run by hand, never by tests).

    make bench-corruptions                       # sets up .venv and .venv-bench, then runs this
    make bench-corruptions ARGS='--n 200 --severities 1 3 5 --threads 1 --json bench.json'

or, once ``.venv-bench`` exists:

    .venv-bench/bin/python benchmarks/corruption_speed.py [--n 1000] [--severities 1 2 3 4 5]
        [--threads T] [--json PATH]

``.venv-bench`` is a separate virtual environment that sees the main ``.venv`` through a ``.pth``
file and adds ``imagecorruptions==1.1.2`` (with OpenCV and scikit-image) in its own site-packages,
so the main environment never gets imagecorruptions. The Makefile target creates it on first use.

One fixed batch of ``--n`` smooth, natural-ish 32x32 RGB images (seeded) is built once, as uint8
(N, 32, 32, 3) for imagecorruptions and as the very same values / 255 in float32 (N, 3, 32, 32) for
ours. For every corruption both suites have and every severity, ours is timed on the whole batch in
one call (after one untimed warm-up call), theirs as a Python loop of ``corrupt`` over the images
(after one untimed warm-up call on one image, which pays for lazy imports). Times are
``time.perf_counter`` wall seconds, summed over the severities. A corruption of theirs that raises
is reported with its error and left out of the overall ratio; one that would take longer than
120 s for the whole batch at one severity is timed on the first 200 images and scaled.
The project's target is at least 10x faster overall (sum theirs / sum ours).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from robustops.corruptions import CORRUPTIONS

SIZE = 32
SEED = 0
TARGET = 10.0
SLOW_LIMIT_S = 120.0  # theirs at one severity on the whole batch; beyond it, a subset is scaled
SUBSET = 200
# Our name -> imagecorruptions' name, for the corruptions both have.
PAIRS = {
    "brightness": "brightness",
    "contrast": "contrast",
    "defocus_blur": "defocus_blur",
    "elastic": "elastic_transform",
    "fog": "fog",
    "gaussian_blur": "gaussian_blur",
    "gaussian_noise": "gaussian_noise",
    "impulse_noise": "impulse_noise",
    "jpeg": "jpeg_compression",
    "motion_blur": "motion_blur",
    "pixelate": "pixelate",
    "shot_noise": "shot_noise",
    "speckle_noise": "speckle_noise",
    "zoom_blur": "zoom_blur",
}
THEIRS_ONLY = ("glass_blur", "snow", "frost", "spatter", "saturate")


def make_images(n: int, seed: int = SEED) -> np.ndarray:
    """``n`` uint8 (n, 32, 32, 3) images: smooth colour fields at two scales, a few hard edges, grain."""
    rng = np.random.default_rng(seed)
    t = torch.from_numpy
    coarse = t(rng.random((n, 3, 4, 4), dtype=np.float32))
    mid = t(rng.random((n, 3, 8, 8), dtype=np.float32))
    img = 0.7 * torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic")
    img += 0.3 * torch.nn.functional.interpolate(mid, size=(SIZE, SIZE), mode="bilinear")
    img = img.numpy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for i in range(n):
        # One straight edge (a half-plane shifted in colour) and one rectangle: sharp structure for
        # blur, pixelate and JPEG to act on.
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-8, 8)
        half = (np.cos(angle) * (xx - SIZE / 2) + np.sin(angle) * (yy - SIZE / 2)) > offset
        img[i] += half * rng.uniform(-0.4, 0.4, size=(3, 1, 1)).astype(np.float32)
        y0, x0 = rng.integers(0, SIZE - 8, size=2)
        h, w = rng.integers(4, 14, size=2)
        img[i, :, y0 : y0 + h, x0 : x0 + w] = rng.random((3, 1, 1), dtype=np.float32)
    img += rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


def time_ours(name: str, x: torch.Tensor, severities: list[int]) -> dict[int, float]:
    fn = CORRUPTIONS.get(name)
    fn(x, severities[0], SEED)  # warm-up: first-call allocations, kernel selection
    out = {}
    for s in severities:
        start = time.perf_counter()
        fn(x, s, SEED + s)
        out[s] = time.perf_counter() - start
    return out


def shim_theirs() -> list[str]:
    """Lets imagecorruptions 1.1.2 run on NumPy 2 and current scikit-image, so every pair is timed.

    It uses ``np.float_`` (removed in NumPy 2; fog) and ``gaussian(..., multichannel=True)``
    (removed from scikit-image; gaussian and glass blur): both renamed, not changed, upstream.
    Returns what was patched, for the report.
    """
    import imagecorruptions.corruptions as ic

    patched = []
    if not hasattr(np, "float_"):
        np.float_ = np.float64
        patched.append("np.float_ = np.float64")
    original = ic.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return original(image, *args, **kwargs)

    ic.gaussian = gaussian
    patched.append("skimage gaussian(multichannel=True) -> channel_axis=-1")
    return patched


def time_theirs(name: str, images: np.ndarray, severities: list[int]) -> tuple[dict[int, float], list[int]]:
    """Seconds per severity for the whole batch, and the severities that were timed on a subset."""
    from imagecorruptions import corrupt

    n = len(images)
    out, scaled = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corrupt(images[0], corruption_name=name, severity=severities[0])  # warm-up: lazy imports
        for s in severities:
            np.random.seed(SEED + s)  # imagecorruptions draws from numpy's global generator
            head = min(n, SUBSET)
            start = time.perf_counter()
            for img in images[:head]:
                corrupt(img, corruption_name=name, severity=s)
            elapsed = time.perf_counter() - start
            if head < n and elapsed * n / head > SLOW_LIMIT_S:
                out[s] = elapsed * n / head
                scaled.append(s)
                continue
            start = time.perf_counter()
            for img in images[head:]:
                corrupt(img, corruption_name=name, severity=s)
            out[s] = elapsed + time.perf_counter() - start
    return out, scaled


def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, object]:
    import cv2

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": cores,
        "load_avg_1_5_15": [round(v, 2) for v in load] if load else None,
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "imagecorruptions": pkg_version("imagecorruptions"),
        "opencv": cv2.__version__,
        "scikit-image": pkg_version("scikit-image"),
        "scipy": pkg_version("scipy"),
        "pillow": pkg_version("pillow"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="images in the batch (default 1000)")
    p.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6))
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own default)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        import imagecorruptions  # noqa: F401
    except ImportError:
        sys.exit(
            "imagecorruptions is not importable: run this with .venv-bench/bin/python (make bench-corruptions)"
        )
    missing = sorted((set(PAIRS) | {"gamma", "cutout", "affine"}) - set(CORRUPTIONS.names()))
    if missing:
        sys.exit(f"corruptions missing from our registry: {missing}")
    unpaired = [name for name in CORRUPTIONS.names() if name not in PAIRS]

    env = environment() | {"imagecorruptions_shims": shim_theirs()}
    print("# Corruption speed: robustops (torch, batched) vs imagecorruptions (numpy/OpenCV, per image)\n")
    for key, value in env.items():
        print(f"- {key}: {value}")
    print(f"- batch: {args.n} images, 3x{SIZE}x{SIZE}, seed {SEED}; severities {args.severities}\n")

    uint8 = make_images(args.n)
    x = torch.from_numpy(uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0).contiguous()

    rows = []
    for ours_name, theirs_name in PAIRS.items():
        print(f"  timing {ours_name} ...", file=sys.stderr, flush=True)
        ours = time_ours(ours_name, x, args.severities)
        row = {"ours": ours_name, "theirs": theirs_name, "ours_s": ours, "theirs_s": None}
        row |= {"scaled_severities": [], "error": None}
        try:
            theirs, scaled = time_theirs(theirs_name, uint8, args.severities)
            row |= {"theirs_s": theirs, "scaled_severities": scaled}
        except Exception as exc:  # noqa: BLE001 - any failure of theirs is a result, not a crash
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        rows.append(row)
    unpaired_rows = [{"ours": name, "ours_s": time_ours(name, x, args.severities)} for name in unpaired]

    print("| corruption (ours / theirs) | ours s | theirs s | theirs / ours | note |")
    print("|---|---:|---:|---:|---|")
    sum_ours = sum_theirs = 0.0
    failed, scaled_any = [], False
    for r in rows:
        o = sum(r["ours_s"].values())
        label = r["ours"] if r["ours"] == r["theirs"] else f"{r['ours']} / {r['theirs']}"
        if r["error"]:
            failed.append(r["theirs"])
            print(f"| {label} | {o:.3f} | - | - | theirs fails: {r['error']} |")
            continue
        t = sum(r["theirs_s"].values())
        sum_ours, sum_theirs = sum_ours + o, sum_theirs + t
        note = ""
        if r["scaled_severities"]:
            scaled_any = True
            note = f"severities {r['scaled_severities']} timed on the first {SUBSET} images and scaled"
        print(f"| {label} | {o:.3f} | {t:.3f} | {t / o:.1f}x | {note} |")
    overall = sum_theirs / sum_ours if sum_ours > 0 else float("nan")
    done = len(rows) - len(failed)
    print(
        f"| **overall ({done} completed by both)** | **{sum_ours:.3f}** | **{sum_theirs:.3f}** "
        f"| **{overall:.1f}x** | |"
    )

    print("\nOurs without a counterpart in imagecorruptions:\n")
    print("| corruption | ours s |")
    print("|---|---:|")
    for r in unpaired_rows:
        print(f"| {r['ours']} | {sum(r['ours_s'].values()):.3f} |")
    print(f"\nTheirs without a counterpart in ours (not timed): {', '.join(THEIRS_ONLY)}.")
    print(f"\nTimes are wall seconds summed over severities {args.severities} for all {args.n} images.")
    if failed:
        print(
            f"Left out of the overall ratio because imagecorruptions raised on these {SIZE}x{SIZE} "
            f"images: {', '.join(failed)} (the error is in the note column)."
        )
    if scaled_any:
        print(f"Some of theirs took over {SLOW_LIMIT_S:.0f} s at one severity: timed on a subset and scaled.")
    met = overall >= TARGET
    print(f"\nTarget: at least {TARGET:.0f}x faster overall -> {overall:.1f}x: {'MET' if met else 'NOT MET'}")

    if args.json:
        result = {
            "environment": env,
            "n": args.n,
            "severities": args.severities,
            "seed": SEED,
            "paired": rows,
            "unpaired_ours": unpaired_rows,
            "overall": {"ours_s": sum_ours, "theirs_s": sum_theirs, "ratio": overall, "completed": done},
            "left_out": failed,
            "target": TARGET,
            "target_met": met,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {args.json}")


if __name__ == "__main__":
    main()
