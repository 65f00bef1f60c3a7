"""Resume after SIGKILL: a pipeline killed during the data stage, training, evaluation or
registration is rerun with the same config and finishes, reusing the finished stages from
Prefect's result cache; the killed runs' MLflow runs end KILLED (never left RUNNING) and none of
their model versions stays registered. Real processes, a real Prefect server, a sqlite store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.net import answers, free_port, wait_for
from tests.helpers.runs import BIN, server_run, tiny_args

# Kill when the line naming the stage's first finished task appears: the next stage is running.
STAGES = {
    "data": "open-pipeline-run",
    "training": "train-baseline",
    "evaluation": "score-baseline-adv",
    "registration": "register-baseline",
}


@contextlib.contextmanager
def _server(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = os.environ | {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("w")
    port = api.split(":")[2].split("/")[0]
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    try:
        wait_for("the Prefect server", lambda: answers(f"{api}/health"), 120)
        yield root, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _run(root, env, kill_after: str | None = None) -> tuple[int, str]:
    """``robustops run``; with ``kill_after``, SIGKILLed once a task of that name has finished."""
    args = [str(BIN / "robustops"), "run", *tiny_args(server_run(root, 2))]
    proc = subprocess.Popen(
        args, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    deadline = time.time() + 300
    for line in proc.stdout:
        lines.append(line)
        if kill_after and f"Task run '{kill_after}" in line and "Finished in state" in line:
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "the run took more than 5 minutes"
    proc.stdout.close()
    return proc.wait(timeout=60), "".join(lines)


@pytest.mark.slow  # 50 s of processes; the every-stage test below covers this stage too
def test_killed_in_training_resumes_from_the_cache(tmp_path_factory):
    with _server(tmp_path_factory) as (root, env):
        _kill_and_resume(root, env, ["training"])


@pytest.mark.slow
def test_killed_at_every_stage_resumes_and_leaves_nothing_running(tmp_path_factory):
    with _server(tmp_path_factory) as (root, env):
        _kill_and_resume(root, env, list(STAGES))


def _kill_and_resume(root, env, stages: list[str]) -> None:
    c = MlflowClient(f"sqlite:///{root}/mlflow.db")
    killed = []
    for stage in stages:
        marker = STAGES[stage]
        code, out = _run(root, env, kill_after=marker)
        assert code == -signal.SIGKILL, f"{stage}: the run ended before the kill ({code}):\n{out[-2000:]}"
        exp = c.get_experiment_by_name("robustops")
        running = c.search_runs(
            [exp.experiment_id], "attributes.status = 'RUNNING' and tags.`robustops.kind` = 'pipeline'"
        )
        fresh = [r.info.run_id for r in running if r.info.run_id not in killed]
        assert len(fresh) == 1, f"{stage}: the kill should leave its parent run RUNNING until swept"
        killed += fresh
        if stage == "registration":
            assert any(mv.run_id for mv in c.search_model_versions("name = 'e2e-digits'")), (
                "nothing registered yet"
            )

    code, out = _run(root, env)
    assert code == 0, out[-3000:]
    # Finished stages came from the cache: the baseline was trained and scored only once.
    assert "Task run 'train-baseline' - Finished in state Cached" in out
    assert "marked" in out and "KILLED" in out
    exp = c.get_experiment_by_name("robustops")
    runs = c.search_runs([exp.experiment_id], max_results=500)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    by_id = {r.info.run_id: r for r in runs}
    for parent in killed:
        assert by_id[parent].info.status == "KILLED"
    swept = set(killed) | {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") in killed}
    versions = c.search_model_versions("name = 'e2e-digits'")
    assert versions and not [v.version for v in versions if v.run_id in swept], (
        "a killed run's version stayed"
    )
    champion = c.get_model_version_by_alias("e2e-digits", "champion")
    assert champion.run_id not in swept
