"""What hostile or merely large inputs cost in memory: the peak resident memory of
``robustops check-data`` on

- an honest compression bomb: a few MB of .npz whose headers truthfully declare 3.9 GB of pixels;
- a folder of 40 photos of 3000x3000 pixels, resized to 64x64 (``data.image_size``).

Each input is made in a temporary folder, then ``robustops check-data`` runs on it as a separate
process; the table gives its exit code, wall time and peak RSS (``getrusage`` of the child).

    .venv/bin/python benchmarks/input_memory.py [--robustops PATH] [--photos 40]

``--robustops`` points at another checkout's command to compare versions side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

CHUNK = 64 * 2**20


def honest_bomb(path: Path, n: int = 61_000_000) -> None:
    """x: (n, 8, 8) uint8 zeros and y: n int64 labels, deflated; headers state the true shapes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, shape, dtype in (("x.npy", (n, 8, 8), np.uint8), ("y.npy", (n,), np.int64)):
            with z.open(name, "w", force_zip64=True) as f:
                header = {
                    "descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape,
                }
                npy_format.write_array_header_2_0(f, header)
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                zeros = bytes(CHUNK)
                while left:
                    f.write(zeros[: min(left, CHUNK)])
                    left -= min(left, CHUNK)


def photos(root: Path, n: int) -> None:
    ramp = np.linspace(0, 255, 3000, dtype=np.float32)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n // 2):
            img = np.stack([np.add.outer(ramp, ramp * (i + 1) / n) % 256] * 3, axis=-1).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.jpg", quality=90)


# Each measurement in its own wrapper process: RUSAGE_CHILDREN's peak is the largest child so far.
WRAP = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stderr.write(p.stderr + p.stdout); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(p.returncode)"
)


def run(robustops: str, sets: list[str]) -> tuple[int, float, float, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAP, robustops, "check-data", *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - t
    peak_kib = float(proc.stdout.strip().splitlines()[-1])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return proc.returncode, took, peak_kib / 1024, (lines[-1] if lines else "")[:160]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--robustops", default=str(Path(sys.executable).parent / "robustops"))
    p.add_argument("--photos", type=int, default=40)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        honest_bomb(tmp / "bomb.npz")
        print(
            f"bomb.npz: {(tmp / 'bomb.npz').stat().st_size / 2**20:.1f} MB on disk, made in {time.perf_counter() - t:.0f} s"
        )
        photos(tmp / "photos", args.photos)
        rows = [
            ("honest .npz bomb (3.9 GB of pixels)", ["data.source=npz", f"data.path={tmp / 'bomb.npz'}"]),
            (f"{args.photos} photos 3000x3000 -> 64x64",
             ["data.source=folder", f"data.path={tmp / 'photos'}", "data.image_size=64"]),
        ]  # fmt: skip
        print("| input | exit | wall s | peak RSS MB | last line |\n|---|---:|---:|---:|---|")
        for name, sets in rows:
            code, took, peak, line = run(args.robustops, sets)
            print(f"| {name} | {code} | {took:.1f} | {peak:.0f} | {line} |")


if __name__ == "__main__":
    main()
