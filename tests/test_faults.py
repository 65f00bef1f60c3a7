"""Faults (issue 8, item 2): the MLflow tracking server goes away mid-run, the Prefect server is down,
the artifact folder cannot be written, a registered model's files are corrupt. Each ends in one
clear robustops error (exit 2 from the CLI) and leaves the champion alias where it was.

Real parts only: a real ``mlflow server`` on loopback (stopped and restarted on the same store),
real sqlite stores, the CLI as a subprocess, Prefect's test harness for the full pipeline run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from robustops.catalog import load_config
from robustops.config import EvalConfig
from robustops.defences.standard import StandardConfig
from robustops.errors import ArtifactStoreError, TrackingUnavailable
from tests.helpers.net import free_port
from tests.helpers.runs import BIN, REPO, TINY_CONFIG, tiny_args

MODEL = "faults-digits"
GATE = "gate={primary: clean/acc, min: {}, max: {}, require_masking: false, spec_checks: []}"
# On top of tests/tiny.yaml, a pipeline run of a few seconds: the baseline only (every class
# whole, no defences), a smaller model and a tiny scorecard without AutoAttack.
BASELINE_RUN = [
    "train.epochs=2",
    "model.hidden=32",
    "data.train_class_fraction={}",
    "evaluation.eps=[0.1]",
    "evaluation.l2_eps=[0.5]",
    "evaluation.pgd_steps=2",
    "evaluation.max_samples=32",
    "evaluation.autoattack={enabled: false}",
    "evaluation.masking.more_steps=4",
    "adversarial_set.max_samples=16",
    "defences=[]",
    GATE,
    f"mlflow.registered_model={MODEL}",
]
QUICK_EVAL = {
    "eps": [0.1],
    "l2_eps": [0.5],
    "pgd_steps": 3,
    "max_samples": 64,
    "autoattack": {"enabled": False},
    "masking": {"more_steps": 5},
}


def _env(**extra: str) -> dict[str, str]:
    env = (
        os.environ
        | {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner processes beside the server
            "PYTHONPATH": str(REPO),
        }
        | extra
    )
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        env.pop(key, None)
    return env


class MlflowServer:
    """``mlflow server`` on a loopback port, its store and artifacts under ``root``: started,
    stopped (the fault) and started again on the same store and port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
               "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]  # fmt: skip
        log = (self.root / "server.log").open("a")
        # Its own process group: stop() ends the server and the uvicorn worker it starts, no more.
        self.proc = subprocess.Popen(
            cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        end = time.monotonic() + 120
        while time.monotonic() < end:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("mlflow server did not start within 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture()
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path).start()
    yield server
    server.stop()


def _fake_champion(m, metric: float = 0.9) -> str:
    """A registered version holding the champion alias (the gate reads its run's metrics)."""
    from adapters import tracking

    run_id = tracking.start_run(m, "earlier champion")
    tracking.log_metrics(m, run_id, {"clean/acc": metric})
    tracking.end_run(m, run_id, True)
    source = f"{tracking.run_info(m, run_id).info.artifact_uri}/guarded_model"
    version = str(tracking.register(m, source, run_id, {"gate": "passed"}))
    tracking.set_alias(m, "champion", version, None)
    return version


def _champion(c: MlflowClient) -> str:
    return str(c.get_model_version_by_alias(MODEL, "champion").version)


def _versions(c: MlflowClient) -> list[str]:
    return sorted(str(mv.version) for mv in c.search_model_versions(f"name='{MODEL}'"))


# ---- (a) the MLflow tracking server goes away -------------------------------------------------


def test_a_closed_port_is_a_clear_error_and_never_reads_as_no_champion(monkeypatch):
    """Fast: no server at all. The adapter names the URI and the fix, and the gate's read of the
    champion fails instead of taking "no answer" for "no champion" (which would promote)."""
    from adapters import tracking
    from tasks.gate import promote

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the bound is checked with a server below
    url = f"http://127.0.0.1:{free_port()}"
    cfg = load_config(None, [f"mlflow.tracking_uri={url}", f"mlflow.registered_model={MODEL}", GATE])
    with pytest.raises(
        TrackingUnavailable, match=f"tracking server at {url} did not answer .connection refused"
    ):
        tracking.alias_version(cfg.mlflow, "champion")
    with pytest.raises(
        TrackingUnavailable, match="point mlflow.tracking_uri / MLFLOW_TRACKING_URI at a running"
    ):
        tracking.resolve_model(cfg.mlflow, f"models:/{MODEL}@champion")
    from robustops.evaluation.scorecard import Scorecard

    card = Scorecard({"clean/acc": 0.99}, np.zeros((1, 1)), ["x"])
    with pytest.raises(TrackingUnavailable):
        promote.fn(cfg, "no-run", {"m": card}, {"m": "1"})
    from tasks.record import close_pipeline_run

    t = time.monotonic()
    close_pipeline_run.fn(cfg.mlflow, "no-run", False)  # marks FAILED if it can; never raises
    assert time.monotonic() - t < 5  # one /health probe, not the retries again


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Retrying" in record.getMessage():
            self.seen.append(record)


@pytest.mark.slow
def test_tracking_server_stops_mid_run_bounded_retries_then_clear_error(mlflow_server, monkeypatch):
    """The record tasks against a real server that is stopped after the run opened: MLflow's HTTP
    layer retries 4 times with backoff (0 + 2 + 4 + 8 s, plus jitter), then one robustops error
    names the URI and the fix; the champion is where it was when the server comes back."""
    from adapters import tracking
    from robustops.evaluation.scorecard import Scorecard
    from tasks.gate import promote
    from tasks.record import close_pipeline_run, open_pipeline_run

    cfg = load_config(
        TINY_CONFIG, [f"mlflow.tracking_uri={mlflow_server.url}", "mlflow.experiment=faults", *BASELINE_RUN]
    )
    m = cfg.mlflow
    champion = _fake_champion(m)
    parent = open_pipeline_run.fn(cfg, None)
    tracking.log_metrics(m, parent, {"data/n_train": 1000.0})
    mlflow_server.stop()  # the fault

    retries = _Retries()  # urllib3 logs each retry; Prefect's logging setup stops its propagation
    pool = logging.getLogger("urllib3.connectionpool")
    pool.addHandler(retries)
    t = time.monotonic()
    try:
        with pytest.raises(TrackingUnavailable) as err:
            tracking.log_metrics(m, parent, {"clean/acc": 0.9})
    finally:
        pool.removeHandler(retries)
    took = time.monotonic() - t
    assert len(retries.seen) == 4  # bounded: MLFLOW_HTTP_REQUEST_MAX_RETRIES=4
    assert 14 <= took <= 40, took  # with backoff, and not MLflow's default of minutes
    assert str(err.value).startswith(f"the MLflow tracking server at {mlflow_server.url} did not answer")
    assert "connection refused" in str(err.value) and "start it" in str(err.value)
    # The gate fails rather than deciding against "no champion"; the cleanup does not wait again.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    card = Scorecard({"clean/acc": 0.99}, np.zeros((1, 1)), ["x"])
    with pytest.raises(TrackingUnavailable):
        promote.fn(cfg, parent, {"m": card}, {"m": champion})
    t = time.monotonic()
    close_pipeline_run.fn(m, parent, False)
    assert time.monotonic() - t < 5

    mlflow_server.start()  # the same store: nothing moved while it was gone
    c = MlflowClient(mlflow_server.url)
    assert _champion(c) == champion and _versions(c) == [champion]
    assert c.get_run(parent).info.status == "RUNNING"  # nobody could mark it while the server was gone
    assert "clean/acc" not in c.get_run(parent).data.metrics
    close_pipeline_run.fn(m, parent, False)  # with the server back, the same cleanup marks it
    assert c.get_run(parent).info.status == "FAILED"


@pytest.mark.slow
def test_cli_run_when_the_tracking_server_dies_exits_2_and_keeps_the_champion(mlflow_server, tmp_path):
    """A whole pipeline run (`robustops run`, a subprocess, on a Prefect test server) against a
    real MLflow server that is stopped once the baseline's nested run exists."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    sets = [*BASELINE_RUN, f"mlflow.tracking_uri={mlflow_server.url}", "mlflow.experiment=faults"]
    m = load_config(TINY_CONFIG, sets).mlflow
    champion = _fake_champion(m)
    c = MlflowClient(mlflow_server.url)
    exp = c.get_experiment_by_name("faults").experiment_id
    with prefect_test_harness(server_startup_timeout=120):
        api = PREFECT_API_URL.value()
        out, err = (tmp_path / "run.out").open("w"), (tmp_path / "run.err").open("w")
        run = subprocess.Popen([str(BIN / "robustops"), "run", *tiny_args(sets)], cwd=tmp_path, stdout=out, stderr=err,
                               env=_env(PREFECT_API_URL=api, PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results")))  # fmt: skip
        killed = None
        try:
            while run.poll() is None and killed is None:
                if c.search_runs([exp], "tags.`robustops.kind` = 'model'"):
                    mlflow_server.stop()  # mid-run: trained, scored, logging its nested run
                    killed = time.monotonic()
                time.sleep(0.1)
            rc = run.wait(timeout=180)
        finally:
            if run.poll() is None:
                run.kill()
        took = time.monotonic() - killed
        with get_client(sync_client=True) as client:
            tasks = {t.name: t for t in client.read_task_runs()}
    stderr, stdout = (tmp_path / "run.err").read_text(), (tmp_path / "run.out").read_text()
    assert killed is not None and rc == 2, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: the MLflow tracking server at {mlflow_server.url} did"
    )
    assert "Traceback" not in stdout  # (Prefect's own log lines on stderr still carry the task's traceback)
    assert 10 <= took <= 90, took  # bounded retries with backoff, then the error
    failed = [t for t in tasks.values() if t.state and t.state.is_failed()]
    assert failed and all(t.run_count == 1 for t in failed)  # Prefect did not retry on top of MLflow

    mlflow_server.start()
    assert _champion(c) == champion and _versions(c) == [champion]  # nothing registered, nothing moved
    runs = c.search_runs([exp], "tags.`robustops.kind` = 'pipeline'")
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # could not be closed: documented


# ---- (b) the Prefect server is down -----------------------------------------------------------


def _lines(stderr: str) -> list[str]:
    """Stderr without MLflow's download progress bars."""
    return [ln for ln in stderr.splitlines() if ln.strip() and "Downloading artifacts" not in ln]


def _cli(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "robustops"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(**env))  # fmt: skip


def test_serve_without_prefect_server_exits_2(tmp_path):
    api = f"http://127.0.0.1:{free_port()}/api"
    proc = _cli(["serve"], tmp_path, timeout=120, PREFECT_API_URL=api)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"error: no Prefect server answers at {api} (ConnectError); start one with make prefect-ui"
    )


# ---- a local store with a real registered champion (for b, c, d) -------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained, digits_split):
    """A sqlite store whose champion is a real guarded model, logged and registered by the record
    tasks and promoted by the gate; a batch to monitor beside it."""
    from robustops.evaluation import evaluate
    from robustops.evaluation.scorecard import ScoreInputs
    from tasks.gate import promote
    from tasks.record import close_pipeline_run, log_model_run, open_pipeline_run, register_model

    root = tmp_path_factory.mktemp("faults-store")
    sets = [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/mlartifacts",
            "mlflow.experiment=faults", *BASELINE_RUN]  # fmt: skip
    cfg = load_config(TINY_CONFIG, sets)
    card = evaluate(
        ScoreInputs(
            trained.model, digits_split.test, EvalConfig.model_validate(QUICK_EVAL), val=digits_split.val
        )
    )
    parent = open_pipeline_run.fn(cfg, None)
    run_id, uri = log_model_run.fn(cfg, parent, StandardConfig(label="baseline"), trained, card, digits_split)
    version = str(register_model.fn(cfg, uri, run_id, card, "baseline", digits_split.test, parent))
    assert promote.fn(cfg, parent, {"baseline": card}, {"baseline": version}).promote
    close_pipeline_run.fn(cfg.mlflow, parent, True)
    np.savez(root / "batch.npz", x=digits_split.test.x[:100, 0], y=digits_split.test.y[:100])
    return {"root": root, "sets": sets, "cfg": cfg, "card": card, "version": version, "run_id": run_id}


def _client(store) -> MlflowClient:
    return MlflowClient(store["cfg"].mlflow.tracking_uri)


def _cli_sets(store) -> list[str]:
    return tiny_args(store["sets"])


def test_monitor_without_prefect_server_exits_2(store):
    api = f"http://127.0.0.1:{free_port()}/api"
    t = time.monotonic()
    proc = _cli(["monitor", "--data", str(store["root"] / "batch.npz"), *_cli_sets(store)], store["root"],
                PREFECT_API_URL=api)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = _lines(proc.stderr)
    assert err == [
        f"error: no Prefect server answers at PREFECT_API_URL={api} (ConnectError); start one with make "
        "prefect-ui, or unset PREFECT_API_URL to run with a temporary local server"
    ]
    assert time.monotonic() - t < 60  # at once, not after Prefect's own retries
    c = _client(store)
    assert _champion(c) == store["version"]
    exp = c.get_experiment_by_name("faults").experiment_id
    assert not c.search_runs([exp], "tags.`robustops.kind` = 'monitor'")  # no monitor run was started


# ---- (c) the artifact folder cannot be written ------------------------------------------------


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "under-a-file":  # works as root too, where chmod does not stop writes
        (tmp_path / "afile").write_text("not a folder")
        return tmp_path / "afile" / "sub"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("how", ["under-a-file", "read-only"])
def test_unwritable_artifact_folder_fails_the_model_run_and_registers_nothing(store, tmp_path, how, trained,
                                                                              digits_split):  # fmt: skip
    """The record tasks with a new experiment whose artifact folder cannot be written: one error
    naming the folder, the runs marked FAILED, no model version, the champion unchanged."""
    from adapters import tracking
    from tasks.record import log_model_run, open_pipeline_run

    folder = _unwritable(tmp_path, how)
    cfg = load_config(
        TINY_CONFIG, [*store["sets"], f"mlflow.artifact_root={folder}", f"mlflow.experiment=faults-{how}"]
    )
    c = _client(store)
    before = _versions(c)
    with pytest.raises(ArtifactStoreError, match=f"cannot write MLflow artifacts to {folder}"):
        open_pipeline_run.fn(cfg, None)
    parent = tracking.start_run(cfg.mlflow, "robustness-pipeline")  # as if the parent run had opened
    with pytest.raises(ArtifactStoreError, match="set mlflow.artifact_root to a writable folder"):
        log_model_run.fn(cfg, parent, StandardConfig(label="baseline"), trained, store["card"], digits_split)
    exp = c.get_experiment_by_name(f"faults-{how}").experiment_id
    statuses = {
        r.data.tags.get("robustops.kind", r.info.run_name): r.info.status for r in c.search_runs([exp])
    }
    assert statuses == {"pipeline": "FAILED", "model": "FAILED", "robustness-pipeline": "RUNNING"}
    assert _versions(c) == before and _champion(c) == store["version"]


@pytest.mark.slow
def test_cli_run_with_unwritable_artifact_folder_exits_2(store, tmp_path):
    folder = _unwritable(tmp_path, "under-a-file")
    sets = [*store["sets"], f"mlflow.artifact_root={folder}", "mlflow.experiment=faults-cli"]
    c = _client(store)
    before = _versions(c)
    proc = _cli(["run", *tiny_args(sets)], tmp_path,
                PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"))  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [
        f"error: cannot write MLflow artifacts to {folder} (Not a directory): free disk space or make the "
        "folder writable, or set mlflow.artifact_root to a writable folder together with a new "
        "mlflow.experiment (an experiment keeps the artifact folder it was created with)"
    ]
    assert _versions(c) == before and _champion(c) == store["version"]
    exp = c.get_experiment_by_name("faults-cli").experiment_id
    assert {r.info.status for r in c.search_runs([exp])} == {"FAILED"}


# ---- (d) a registered model's files are corrupt -----------------------------------------------


def _model_files(store, name: str) -> list[Path]:
    """The champion's copies of ``name``: in its run's checkpoint and inside the logged model."""
    return sorted((store["root"] / "mlartifacts").rglob(name))


@pytest.fixture()
def corrupt(store):
    """Corrupts the champion's files one way or another; puts the originals back afterwards."""
    saved: dict[Path, bytes] = {}

    def damage(name: str, how: str) -> list[Path]:
        files = _model_files(store, name)
        assert files
        for f in files:
            data = saved.setdefault(f, f.read_bytes())
            if how == "truncated":
                f.write_bytes(data[: len(data) // 3])
            else:  # garbled: the same length, other bytes
                f.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
        return files

    yield damage
    for f, data in saved.items():
        f.write_bytes(data)


@pytest.mark.parametrize("how", ["truncated", "garbled"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "monitor"])
def test_corrupt_weights_are_a_clear_error_and_keep_the_champion(
    store, corrupt, capsys, tmp_path, how, command
):
    from app.cli import main

    corrupt("state_dict.pt", how)
    batch = str(store["root"] / "batch.npz")
    args = {
        "evaluate": ["evaluate", "--model", f"models:/{MODEL}@champion", "--data", batch],
        "predict": ["predict", "--data", batch, "--out", str(tmp_path / "pred")],
        "monitor": ["monitor", "--data", batch],
    }[command]
    assert main([*args, *_cli_sets(store)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert "state_dict.pt: unreadable or not plain weights" in err[0] and "retrain" in err[0]
    assert _champion(_client(store)) == store["version"]
    assert not (tmp_path / "pred").exists()  # nothing written from a model that could not load


def test_corrupt_guard_settings_are_a_clear_error(store, corrupt, capsys, tmp_path):
    from app.cli import main

    corrupt("guard.json", "truncated")
    args = ["predict", "--data", str(store["root"] / "batch.npz"), "--out", str(tmp_path / "pred")]
    assert main([*args, *_cli_sets(store)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: MLflow's download progress
    assert last.startswith("error: ") and "guard.json" in last and "version" in last, last


def test_the_champion_is_intact_after_the_faults(store, tmp_path, capsys):
    """After every fault above, with the originals back: the champion still loads and predicts."""
    from app.cli import main

    args = ["predict", "--data", str(store["root"] / "batch.npz"), "--out", str(tmp_path / "pred")]
    assert main([*args, *_cli_sets(store)]) == 0
    assert (tmp_path / "pred" / "predictions.csv").exists()
    assert _champion(_client(store)) == store["version"]
