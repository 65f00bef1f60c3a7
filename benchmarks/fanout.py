"""Speed-up of the evaluation fan-out on Dask: 2 workers against 1 (run by hand, never by tests).

    .venv/bin/python benchmarks/fanout.py [--set KEY=VALUE ...] [--repeats 2]

Trains the default config's models once (the baseline and every defence, outside the timing),
then scores every part of every model's scorecard (models x eps groups x corruptions x ...,
the pipeline's ``score-part`` tasks) in a Prefect flow on:

- Dask LocalCluster, 1 worker process with 1 torch thread;
- Dask LocalCluster, 2 worker processes with 1 torch thread each;
- the default runner (threads, one task at a time, torch's own thread count) for reference.

The result cache is off, so every part is computed on every runner. Reports wall seconds, the
speed-up of 2 workers over 1, and checks that the three runs give the same scores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # every part computed on every runner
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", tempfile.mkdtemp(prefix="robustops-fanout-"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from adapters.runner import task_runner
    from robustops.catalog import load_config, models_of
    from robustops.config import RunnerConfig
    from robustops.data import load_dataset, split_dataset
    from robustops.defences import Context, scorecard_parts, train_defence
    from robustops.evaluation.scorecard import plan
    from tasks.evaluation import score_part

    cfg = load_config(ROOT / "configs/default.yaml", args.sets)
    split = split_dataset(load_dataset(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    ctx = Context(cfg.model, cfg.train, cfg.augment, cfg.regularize, cfg.seed, "cpu")
    start = time.perf_counter()
    # In a thread of its own that then ends: this thread must not hold an OpenMP team of torch's
    # threads when the default runner's row runs (see adapters/runner.task_runner), or that row slows.
    with ThreadPoolExecutor(1) as pool:
        trained = pool.submit(
            lambda: {s.run_name: (s, train_defence(split.train, split.val, ctx, s)) for s in models_of(cfg)}
        ).result()
    print(f"trained {len(trained)} models in {time.perf_counter() - start:.0f} s (not timed below)")

    @flow(name="scorecard-fanout")
    def fanout(kind: str, workers: int) -> dict:
        with task_runner(RunnerConfig(kind=kind, workers=workers), split.train.values_per_image) as submit:
            futures = {}
            for name, (spec, result) in trained.items():
                for part in plan(cfg.evaluation, scorecard_parts(spec)):
                    futures[(name, part.label)] = submit(
                        score_part, result, split, cfg.evaluation, cfg.seed, "cpu", name, part, spec
                    )
            cards = {k: f.result() for k, f in futures.items()}
            return {k: (c.metrics, sum(c.seconds.values())) for k, c in cards.items()}

    runners = {
        "dask, 1 worker": ("dask", 1),
        "dask, 2 workers": ("dask", 2),
        "threads (default)": ("threads", 1),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    compute: dict[str, float] = {}  # summed compute seconds of the parts, measured in the task
    scores = {}
    with prefect_test_harness(server_startup_timeout=120):
        for _ in range(args.repeats):
            for label, r in runners.items():
                t = time.perf_counter()
                got = fanout(*r)
                times[label].append(time.perf_counter() - t)
                scores[label] = {k: m for k, (m, _) in got.items()}
                compute[label] = sum(s for _, s in got.values())
                longest = sorted(got.items(), key=lambda kv: -kv[1][1])[:6]
                print("  longest parts: " + ", ".join(f"{n}/{p} {s:.1f} s" for (n, p), (_, s) in longest))
                print(
                    f"{label}: {times[label][-1]:.1f} s wall, {compute[label]:.1f} s of compute in the parts "
                    f"({len(scores[label])} parts)",
                    flush=True,
                )

    def gap(a: dict, b: dict) -> float:
        return max(abs(v - b[part][k]) for part, m in a.items() for k, v in m.items() if v == v)

    ref = scores["dask, 1 worker"]
    # Both Dask runs use one torch thread per worker: the same sums, so the same scores. The
    # threads run uses torch's own thread count, whose sums may differ in the last bits.
    same = gap(scores["dask, 2 workers"], ref) < 1e-6
    threads_gap = gap(scores["threads (default)"], ref)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "parts": len(scores["dask, 1 worker"]),
        "median_s": med,
        "compute_s": compute,
        "speedup_2_vs_1": med["dask, 1 worker"] / med["dask, 2 workers"],
        "same_scores_dask_2_vs_1": same,
        "max_abs_score_gap_threads_vs_dask": threads_gap,
        "cores": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    print(
        f"\nspeed-up of 2 Dask workers over 1: {out['speedup_2_vs_1']:.2f}x on {out['cores']} cores; same scores on 1 and 2 workers: {same}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
