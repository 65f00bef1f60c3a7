"""Orchestration overhead of the default pipeline (run by hand, never by tests).

    .venv/bin/python benchmarks/overhead.py [--set KEY=VALUE ...] [--json out.json]

Runs the ``robustness-pipeline`` flow once, in this process, on fresh stores (a new MLflow sqlite
store, a new Prefect result folder, a temporary Prefect server as ``robustops run`` uses), and
splits its wall time by timing the body of every task (``task.fn``) and the cache-key hashing:

- core: data stage, training, every scorecard part and its merge, the adversarial set;
- mlflow: opening and closing runs, logging metrics, plots, the HTML report and models,
  registration and the promotion gate (everything that writes the tracking store);
- cache keys: hashing task inputs for Prefect's result cache;
- prefect: the rest of the wall time (flow and task-run machinery, state changes, result
  persistence, the runner).

Target (issue 7): everything outside core at most 10 % of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from functools import wraps
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORE = {
    "tasks.data": ["load_data", "synthesize_data"],
    "tasks.training": ["train_model"],
    "tasks.evaluation": ["load_eval_sets", "score_part", "merge_scorecard"],
    "tasks.adversarial": ["generate_adversarial_set"],
}
MLFLOW = {
    "tasks.record": ["open_pipeline_run", "log_data_stage", "log_model_run", "register_model", "close_pipeline_run"],
    "tasks.gate": ["promote", "log_report"],
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="robustops-overhead-")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = f"{tmp}/prefect-results"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import importlib

    import adapters.caching as caching
    from flows.pipeline import robustness_pipeline
    from robustops.catalog import load_config

    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def timed(fn, key):
        @wraps(fn)
        def inner(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - start
                calls[key] += 1

        return inner

    for kind, table in (("core", CORE), ("mlflow", MLFLOW)):
        for mod, names in table.items():
            m = importlib.import_module(mod)
            for n in names:
                t = getattr(m, n)
                t.fn = timed(t.fn, f"{kind}:{n}")
    caching.fingerprint = timed(caching.fingerprint, "keys:fingerprint")

    cfg = load_config(
        ROOT / "configs/default.yaml",
        [
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"mlflow.artifact_root={tmp}/mlartifacts",
            *args.sets,
        ],
    )
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # as `robustops run` without a server
        start = time.perf_counter()
        robustness_pipeline(cfg)
        wall = time.perf_counter() - start
    groups = defaultdict(float)
    for k, v in spent.items():
        groups[k.split(":")[0]] += v
    groups["prefect"] = wall - groups["core"] - groups["mlflow"] - groups["keys"]
    out = {"wall_s": wall, **{f"{g}_s": v for g, v in groups.items()}}
    out |= {f"{g}_share": v / wall for g, v in groups.items()}
    out["overhead_share"] = 1 - groups["core"] / wall
    out["detail"] = {
        k: {"s": round(v, 2), "calls": calls[k]} for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
    }
    print(json.dumps(out, indent=2))
    print(f"\nwall {wall:.1f} s: core {groups['core']:.1f} s ({groups['core'] / wall:.1%}), "
          f"mlflow {groups['mlflow']:.1f} s ({groups['mlflow'] / wall:.1%}), cache keys {groups['keys']:.1f} s "
          f"({groups['keys'] / wall:.1%}), prefect {groups['prefect']:.1f} s ({groups['prefect'] / wall:.1%}); "
          f"outside core {out['overhead_share']:.1%} (target <= 10 %)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
