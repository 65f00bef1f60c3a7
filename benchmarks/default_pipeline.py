"""Wall time and accuracy of the default pipeline, as a user runs it (run by hand, never by tests).

    .venv/bin/python benchmarks/default_pipeline.py [--repeats 3]

Each repeat runs ``robustops run --config configs/default.yaml`` in a fresh folder (new MLflow
store, new Prefect result cache, so nothing is reused) and reads the scores back from MLflow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once() -> tuple[float, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect-results"}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "robustops"),
                "run",
                "--config",
                str(ROOT / "configs/default.yaml"),
            ],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        c = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = c.get_experiment_by_name("robustops")
        run = c.search_runs([exp.experiment_id], "tags.`robustops.model` = 'baseline'")[0]
        return wall, run.data.metrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    walls = []
    for i in range(args.repeats):
        wall, m = once()
        walls.append(wall)
        print(
            f"run {i + 1}: {wall:.1f} s wall, clean/acc {m['clean/acc']:.4f}, "
            f"pgd eps 0.1 {m['adv/pgd_linf/eps_0.1/acc']:.4f}, train {m['train/seconds']:.1f} s"
        )
    print(
        f"median wall {statistics.median(walls):.1f} s over {len(walls)} runs (target < 90 s), {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
