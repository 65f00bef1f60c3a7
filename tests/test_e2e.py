"""End to end, with real servers: a Prefect server started by the test, `robustops serve` running
the deployments, a real sqlite MLflow store. A clean batch triggers nothing; a shifted batch
emits robustops.drift.detected, the retrain deployment runs, a challenger is evaluated and the
champion alias moves only as the gate decides."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from robustops.data import load_digits, split_dataset

BIN = Path(sys.executable).parent
TINY = """
train: {{epochs: {epochs}, progress: false}}
model: {{name: mlp, hidden: 64}}
evaluation:
  eps: [0.1]
  l2_eps: []
  pgd_steps: 3
  max_samples: 64
  autoattack: {{eps: [0.1], apgd_steps: 10, square_queries: 100}}
  masking: {{more_steps: 10}}
  corruptions: [fog]
  severities: [3]
  noise: {{gaussian: [0.1], uniform: [0.1], salt_pepper: [0.1]}}
adversarial_set: {{enabled: false}}
synthesis: {{generator: interpolate}}
defences: [{{name: pgd_at, steps: 2, select_steps: 2}}]
gate: {{primary: adv/autoattack/eps_0.1/acc, min: {{clean/acc: 0.5}}, max: {{}}, require_masking: false, spec_checks: []}}
mlflow: {{tracking_uri: "sqlite:///{root}/mlflow.db", artifact_root: {root}/mlartifacts, registered_model: e2e-digits}}
retrain: {{cron: null}}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    api = f"http://127.0.0.1:{_port()}/api"
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

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("the Prefect server", healthy, 120)
        for epochs in (1, 3):
            (root / f"e{epochs}.yaml").write_text(TINY.format(epochs=epochs, root=root))
        # A weak first champion (1 epoch); the served config retrains with 3 epochs and more data.
        subprocess.run([str(BIN / "robustops"), "run", "--config", str(root / "e1.yaml")], env=env, cwd=root,
                       check=True, stdout=log("run.log"), stderr=subprocess.STDOUT, timeout=300)  # fmt: skip
        serve = subprocess.Popen([str(BIN / "robustops"), "serve", "--config", str(root / "e3.yaml")], env=env,
                                 cwd=root, stdout=log("serve.log"), stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(serve)
        _wait(
            "the deployments",
            lambda: httpx.get(f"{api}/deployments/name/robustness-retrain/retrain").status_code == 200,
            120,
        )
        yield {"root": root, "api": api, "env": env, "logs": logs, "serve": serve}
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
        subprocess.run([str(BIN / "robustops"), "monitor", "--config", str(stack["root"] / "e3.yaml"), "--data",
                        str(batch)], env=stack["env"], cwd=stack["root"], check=True, timeout=300, stdout=out,
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
    _wait("the triggered retrain run", lambda: len(_retrain_runs(api)) == 1, 60)
    _wait(
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
