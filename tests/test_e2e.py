"""End to end, with real servers: a Prefect server started by the test, `robustops serve` running
the deployments, a real sqlite MLflow store. A clean batch triggers nothing; a shifted batch
emits robustops.drift.detected, the retrain deployment runs, a challenger is evaluated and the
champion alias moves only as the gate decides."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from robustops.data import load_digits, split_dataset
from tests.helpers.net import answers, free_port, wait_for
from tests.helpers.runs import BIN, server_run, tiny_args


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = os.environ | {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    port = api.split(":")[2].split("/")[0]
    logs = root / "logs"
    logs.mkdir()
    files = contextlib.ExitStack()

    def log(name: str):
        return files.enter_context((logs / name).open("w"))

    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                              env=env, stdout=log("server.log"), stderr=subprocess.STDOUT)  # fmt: skip
    procs = [server]
    # A weak first champion (1 epoch); the served config retrains with 3 epochs and more data.
    weak, served = tiny_args(server_run(root, 1)), tiny_args(server_run(root, 3))

    try:
        wait_for("the Prefect server", lambda: answers(f"{api}/health"), 120)
        subprocess.run([str(BIN / "robustops"), "run", *weak], env=env, cwd=root, check=True,
                       stdout=log("run.log"), stderr=subprocess.STDOUT, timeout=300)  # fmt: skip
        serve = subprocess.Popen([str(BIN / "robustops"), "serve", *served], env=env, cwd=root,
                                 stdout=log("serve.log"), stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(serve)
        wait_for(
            "the deployments",
            lambda: httpx.get(f"{api}/deployments/name/robustness-retrain/retrain").status_code == 200,
            120,
        )
        yield {"root": root, "api": api, "env": env, "logs": logs, "serve": serve, "config": served}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        files.close()


def _retrain_runs(api: str) -> list[dict]:
    dep = httpx.get(f"{api}/deployments/name/robustness-retrain/retrain").json()
    body = {"deployments": {"id": {"any_": [dep["id"]]}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body).json()


def _monitor(stack, batch: Path) -> None:
    with (stack["logs"] / f"monitor-{batch.stem}.log").open("w") as out:
        subprocess.run([str(BIN / "robustops"), "monitor", *stack["config"], "--data", str(batch)],
                       env=stack["env"], cwd=stack["root"], check=True, timeout=300, stdout=out,
                       stderr=subprocess.STDOUT)  # fmt: skip


def test_drift_triggers_retraining_and_the_gate_decides(stack):
    root, api = stack["root"], stack["api"]
    c = MlflowClient(f"sqlite:///{root}/mlflow.db")
    before = c.get_model_version_by_alias("e2e-digits", "champion")
    test = split_dataset(load_digits(), 0.15, 0.2, 0).test
    rng = np.random.default_rng(0)
    idx = rng.choice(len(test.y), 200, replace=False)
    np.savez(root / "clean.npz", x=test.x[idx])
    m = test.x[idx].mean(axis=(1, 2, 3), keepdims=True)
    np.savez(root / "dim.npz", x=((test.x[idx] - m) * 0.5 + m).astype(np.float32), y=test.y[idx])

    _monitor(stack, root / "clean.npz")
    time.sleep(5)
    assert _retrain_runs(api) == []  # a clean batch triggers nothing

    _monitor(stack, root / "dim.npz")
    wait_for("the triggered retrain run", lambda: len(_retrain_runs(api)) == 1, 60)
    wait_for(
        "the retrain run to finish",
        lambda: _retrain_runs(api)[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED"),
        300,
    )
    run = _retrain_runs(api)[0]
    assert run["state_type"] == "COMPLETED", (stack["logs"] / "serve.log").read_text()[-3000:]
    assert run["parameters"]["batch"] == str((root / "dim.npz").resolve())  # the event's batch

    exp = c.get_experiment_by_name("robustops")
    parents = c.search_runs(
        [exp.experiment_id], "tags.`robustops.kind` = 'pipeline'", order_by=["attributes.start_time DESC"]
    )
    assert (
        len(parents) == 2
        and parents[0].data.tags["prefect.flow_run_id"] != parents[1].data.tags["prefect.flow_run_id"]
    )
    retrain = parents[0]
    assert "/dim.npz" in retrain.data.params["data.extra_train"]  # the drifted batch joined the training data
    decision = json.loads(
        Path(c.download_artifacts(retrain.info.run_id, "gate/decision.json", str(root))).read_text()
    )
    after = c.get_model_version_by_alias("e2e-digits", "champion")
    if decision["promote"]:
        assert after.version != before.version and c.get_model_version(
            "e2e-digits", after.version
        ).run_id in {
            r.info.run_id
            for r in c.search_runs(
                [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{retrain.info.run_id}'"
            )
        }
    else:
        assert after.version == before.version
    # This setup was chosen so the challenger wins: a 1-epoch champion against 3 epochs and more data.
    assert decision["promote"], decision["summary"]
