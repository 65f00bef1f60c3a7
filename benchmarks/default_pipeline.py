"""Wall time and scores of the default pipeline, as a user runs it (run by hand, never by tests).

    .venv/bin/python benchmarks/default_pipeline.py [--repeats 3] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/default_pipeline.py --repeats 1 --set "defences=[]"   # baseline only

Each repeat runs ``robustops run --config configs/default.yaml`` in a fresh folder (new MLflow
store, new Prefect result cache, so nothing is reused) and reads every model's scores back from
MLflow: the baseline and each configured defence, with their training and evaluation times.
Targets: the whole default pipeline (baseline and all five defences) under 4 minutes on 2 cores;
on the digits at eps 0.1 with PGD-20, PGD-AT and TRADES >= 0.80 PGD accuracy with >= 0.96 clean,
FGSM-RS >= 0.75, the baseline below 0.65; smoothing certified accuracy at r = 0.25 >= 0.60.
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
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read back quietly
COLUMNS = {
    "clean/acc": "clean",
    "adv/fgsm/eps_0.1/acc": "FGSM 0.1",
    "adv/pgd_linf/eps_0.1/acc": "PGD-20 0.1",
    "adv/pgd_linf_cw/eps_0.1/acc": "PGD-20 CW 0.1",
    "adv/pgd_linf/eps_0.2/acc": "PGD-20 0.2",
    "adv/pgd_linf_cw/eps_0.2/acc": "PGD-20 CW 0.2",
    "corruption/mean_acc": "corruptions",
    "certified/r_0.25/acc": "cert r=0.25",
    "lipschitz/input_grad_l2": "grad norm",
    "train/seconds": "train s",
    "eval/seconds": "eval s",
}


def once(sets: list[str], root: Path = ROOT) -> tuple[float, dict[str, dict[str, float]]]:
    """One run of the pipeline of the checkout at ``root`` (another checkout: its code and its
    default config, with this environment's packages)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect-results"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env["PYTHONPATH"] = str(root)  # this checkout's code even where another is installed
        # The checkout's own command module: checkouts from before app/ held it in flows/.
        cli = "app.cli" if (root / "app" / "cli.py").exists() else "flows.cli"
        args = [
            sys.executable,
            "-m",
            cli,
            "run",
            "--config",
            str(root / "configs/default.yaml"),
        ]
        for s in sets:
            args += ["--set", s]
        start = time.perf_counter()
        subprocess.run(args, cwd=tmp, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        c = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = c.get_experiment_by_name("robustops")
        runs = c.search_runs(
            [exp.experiment_id], "tags.`robustops.kind` = 'model'", order_by=["attributes.start_time"]
        )
        return wall, {r.data.tags["robustops.model"]: _scores(c, r, tmp) for r in runs}


def _scores(c, run, tmp: str) -> dict[str, float]:
    """A model run's scalars and every point of its curves (its evaluation/scorecard.json)."""
    import json

    path = c.download_artifacts(run.info.run_id, "evaluation/scorecard.json", tmp)
    with open(path, encoding="utf-8") as f:
        return dict(run.data.metrics) | json.load(f)["metrics"]


SCORECARD = {
    "adv/autoattack/eps_0.1/acc": "AutoAttack 0.1",
    "adv/worst/eps_0.1/acc": "worst 0.1",
    "masking/pass": "masking ok",
    "noise/gaussian/mean_acc": "gaussian noise",
    "noise/flip_rate": "flip rate",
    "corruption/mce": "mCE",
    "selective/coverage": "coverage @1% risk",
    "calibration/ece": "ECE",
    "ood/uniform_noise/auroc_energy": "OOD AUROC",
    "spec/pass": "spec ok",
}


def table(models: dict[str, dict[str, float]], columns: dict[str, str] = COLUMNS) -> str:
    lines = ["| model | " + " | ".join(columns.values()) + " |", "|---|" + "---:|" * len(columns)]
    for name, m in models.items():
        cells = [
            f"{m[k]:.4f}" if k in m and "seconds" not in k else f"{m[k]:.1f}" if k in m else "-"
            for k in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override, as in the CLI")
    args = p.parse_args()
    walls = []
    for i in range(args.repeats):
        wall, models = once(args.sets)
        walls.append(wall)
        print(f"\nrun {i + 1}: {wall:.1f} s wall for {len(models)} models\n")
        print(table(models))
        print()
        print(table(models, SCORECARD))
    print(f"\nmedian wall {statistics.median(walls):.1f} s over {len(walls)} runs, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
