"""The default pipeline on a quiet machine and beside other work, in one run (run by hand).

CI runners, Kubernetes nodes and laptops are busy machines. This runs ``robustops run`` (as
``benchmarks/default_pipeline.py`` does: a fresh folder, nothing cached) once on the quiet machine,
then again beside ``--loaders`` other processes that each run small torch ops on 2 threads, and
prints the wall time and each model's training and evaluation time in both, with the ratio.
Target: beside the loaders at most 3x the quiet wall time.

    .venv/bin/python benchmarks/busy_machine.py [--loaders 2] [--before DIR] [--set KEY=VALUE ...]

``--before DIR`` (another checkout, e.g. ``git worktree add /tmp/before <commit>``) first runs that
checkout's pipeline on the quiet machine too, so a change's quiet time is compared in the same run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_pipeline import SCORECARD, once, table  # noqa: E402

# What the other jobs run: small matrix products on 2 torch threads, with short pauses (a busy
# service or a test suite, not a pure spin loop: plain busy loops do not disturb OpenMP as much).
LOADER = """
import time, torch
torch.set_num_threads(2)
a = torch.randn(128, 128)
while True:
    for _ in range(100):
        a @ a
    time.sleep(0.001)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loaders", type=int, default=2)
    p.add_argument("--before", type=Path, help="another checkout to time on the quiet machine first")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override, as in the CLI")
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; overrides: {args.sets or 'none'}")
    if args.before:
        before_wall, _ = once(args.sets, args.before.resolve())
        print(f"quiet, {args.before}: {before_wall:.1f} s", flush=True)
    quiet_wall, quiet = once(args.sets)
    print(f"quiet: {quiet_wall:.1f} s", flush=True)
    # A SIGTERM (a timeout, kill) must still end the loaders below: run the finally block.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = os.environ | {"OMP_NUM_THREADS": "2"}
    loaders = [subprocess.Popen([sys.executable, "-c", LOADER], env=env) for _ in range(args.loaders)]
    try:
        time.sleep(3)
        busy_wall, busy = once(args.sets)
    finally:
        for proc in loaders:
            proc.kill()
            proc.wait()
    print(f"beside {args.loaders} loaders: {busy_wall:.1f} s\n")
    print("| model | train s quiet | train s busy | eval s quiet | eval s busy |\n|---|---:|---:|---:|---:|")
    for name, m in quiet.items():
        b = busy.get(name, {})
        cells = [m.get("train/seconds"), b.get("train/seconds"), m.get("eval/seconds"), b.get("eval/seconds")]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" if v is not None else "-" for v in cells) + " |")
    print(f"| **wall** | {quiet_wall:.1f} | {busy_wall:.1f} (x{busy_wall / quiet_wall:.2f}) | | |")
    if args.before:
        print(f"| **wall, {args.before}** | {before_wall:.1f} | | | |")
    print("\nscores of the quiet run:\n")
    print(table(quiet))
    print()
    print(table(quiet, SCORECARD))
    print(f"\ntarget: busy at most 3x quiet: {'met' if busy_wall <= 3 * quiet_wall else 'NOT met'}")
    if args.before:
        print(f"target: quiet no slower than {args.before}: x{quiet_wall / before_wall:.2f}")


if __name__ == "__main__":
    main()
