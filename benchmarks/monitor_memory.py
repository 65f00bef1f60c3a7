"""Peak memory of ``robustops monitor`` on a batch of 100,000 MNIST-sized images (run by hand).

    .venv/bin/python benchmarks/monitor_memory.py [--n 100000] [--data ../shared/data]

1. Trains and registers a quick champion with configs/mnist.yaml (baseline only, 1 epoch, a
   light scorecard and an open gate: the benchmark is about the monitor, not the model).
2. Writes a batch of ``n`` 28x28 images (MNIST training and test images, cycled) as .npz.
3. Runs ``robustops monitor`` on it in a subprocess and samples the process's peak resident
   memory (VmHWM) while it runs; the temporary Prefect server is a separate process and is not
   counted. Target (issue 7): under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def peak_rss(args: list[str], cwd: str, env: dict) -> tuple[int, float, float]:
    """(exit code, peak RSS in MB, seconds) of a command, sampled from /proc every 50 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode:
        print(out[-3000:])
    return proc.returncode, peak / 1024, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="robustops-monitor-mem-")
    env = os.environ | {"PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect-results"}
    env.pop("MLFLOW_TRACKING_URI", None)
    sets = [
        f"data.path={args.data / 'mnist_train.npz'}",
        f"data.test_path={args.data / 'mnist_test.npz'}",
        "defences=[]",
        "train.epochs=1",
        "evaluation.autoattack.enabled=false",
        "evaluation.max_samples=200",
        "evaluation.eps=[0.3]",
        "evaluation.l2_eps=[]",
        "evaluation.corruptions=[fog]",
        "evaluation.severities=[3]",
        "adversarial_set.enabled=false",
        "gate={primary: clean/acc, min: {}, max: {}, require_masking: false, spec_checks: []}",
    ]
    cmd = [str(BIN / "robustops"), "run", "--config", str(ROOT / "configs/mnist.yaml")]
    for s in sets:
        cmd += ["--set", s]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
    print(f"champion trained and registered in {time.perf_counter() - t:.0f} s")

    train, test = np.load(args.data / "mnist_train.npz"), np.load(args.data / "mnist_test.npz")
    x = np.concatenate([train["x"], test["x"]])
    y = np.concatenate([train["y"], test["y"]])
    idx = np.arange(args.n) % len(y)
    batch = Path(tmp) / "batch.npz"
    np.savez(batch, x=x[idx], y=y[idx])
    print(f"batch: {args.n} images {x.shape[1:]} {x.dtype}, {batch.stat().st_size / 2**20:.0f} MB on disk")
    del x, y, train, test

    mon = [
        str(BIN / "robustops"),
        "monitor",
        "--config",
        str(ROOT / "configs/mnist.yaml"),
        "--data",
        str(batch),
    ]
    for s in sets[:2]:
        mon += ["--set", s]
    code, peak, secs = peak_rss(mon, tmp, env)
    out = {"n": args.n, "exit_code": code, "peak_rss_mb": round(peak), "seconds": round(secs, 1)}
    print(json.dumps(out))
    print(
        f"monitor on {args.n} images: peak RSS {peak:.0f} MB ({peak / 1024:.2f} GB, target < 2 GB), {secs:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
