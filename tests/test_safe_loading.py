"""Safe loading: no file robustops reads can run code, and no credential reaches a log, an MLflow
param or a logged config.

- Every ``np.load`` passes ``allow_pickle=False``, every ``torch.load`` ``weights_only=True``,
  YAML is read with ``safe_load`` only, and nothing calls ``pickle.load``: checked on the source.
- A pickled payload in a checkpoint, an .npz or a YAML config is refused and never runs.
- A tracking URI's password is redacted (``robustops.redact``) in what is logged.
"""

from __future__ import annotations

import ast
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustops.catalog import load_config
from robustops.data import load_npz
from robustops.errors import ConfigError, DataValidationError, RobustopsError
from robustops.redact import (
    has_credentials,
    install_log_redaction,
    redact,
    redact_params,
    redact_tree,
)
from robustops.training import checkpoint
from tests.helpers.net import free_port, wait_until_answers

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55"
URIS = [
    f"postgresql://ml:{SECRET}@db.internal:5432/mlflow",
    f"http://ml:{SECRET}@127.0.0.1:5000",
    f"https://ml:{SECRET}@mlflow.example.com/base?x=1",
    f"mysql+pymysql://root:{SECRET}@db/mlflow",
    f"postgresql://db/mlflow?user=ml&password={SECRET}",
    f"https://mlflow.example.com/?token={SECRET}",
]


# ---- the source: every loader is the safe one ------------------------------------------------


def _calls(path: Path):  # noqa: ANN202
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            kwargs = {k.arg: getattr(k.value, "value", k.value) for k in node.keywords}
            yield f"{path.relative_to(ROOT)}:{node.lineno}", name, node.func.attr, kwargs


def test_every_loader_in_the_source_refuses_pickles():
    files = [p for d in ("robustops", "adapters", "tasks", "flows") for p in sorted((ROOT / d).rglob("*.py"))]
    unsafe = []
    for where, owner, fn, kwargs in (c for f in files for c in _calls(f)):
        if owner in ("np", "numpy") and fn == "load" and kwargs.get("allow_pickle") is not False:
            unsafe.append(f"{where}: np.load without allow_pickle=False")
        if owner == "torch" and fn == "load" and kwargs.get("weights_only") is not True:
            unsafe.append(f"{where}: torch.load without weights_only=True")
        if owner == "yaml" and fn in ("load", "load_all", "full_load", "unsafe_load", "unsafe_load_all"):
            unsafe.append(f"{where}: yaml.{fn} (use yaml.safe_load)")
        if owner in ("pickle", "cloudpickle", "joblib", "dill") and fn in ("load", "loads"):
            unsafe.append(f"{where}: {owner}.{fn}")
    assert not unsafe, unsafe


# ---- pickled payloads are refused and never run ----------------------------------------------


class Payload:
    """Unpickling it writes a file: proof that pickled content ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pwned"))


def test_checkpoint_with_pickled_code_is_refused(trained, tmp_path):
    folder = checkpoint.save(trained.model, trained.blueprint, tmp_path / "ck")
    marker = tmp_path / "pwned"
    state = dict(trained.model.state_dict()) | {"payload": Payload(marker)}
    torch.save(state, folder / checkpoint.STATE)
    with pytest.raises(RobustopsError, match="not plain weights"):
        checkpoint.load(folder)
    assert not marker.exists()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 8, 8), np.uint8), y=np.array([Payload(marker)] * 6, dtype=object))
    with pytest.raises(DataValidationError, match="pickled Python objects, which are never loaded"):
        load_npz(path)
    path.write_bytes(pickle.dumps({"x": Payload(marker)}))  # a plain pickle named .npz
    with pytest.raises(DataValidationError, match="not an .npz file"):
        load_npz(path)
    assert not marker.exists()


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(
        f"seed: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]"
    )
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, [f"seed=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


# ---- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("uri", URIS)
def test_redact_hides_the_password_and_keeps_the_rest(uri):
    safe = redact(uri)
    assert SECRET not in safe and "***" in safe and has_credentials(uri) and not has_credentials(safe)
    assert safe.split("://")[0] == uri.split("://")[0]  # the scheme and host stay readable
    assert redact(f"error: cannot reach {uri} (timeout)") == f"error: cannot reach {safe} (timeout)"


@pytest.mark.parametrize(
    "text",
    ["sqlite:///mlflow.db", "http://127.0.0.1:5000", "file:///tmp/mlruns", "models:/robustops-digits@champion",
     "adv/pgd_linf/eps_0.1/acc", "user@example.com", "databricks://profile", "a=b; c: d"],
)  # fmt: skip
def test_redact_leaves_uris_without_credentials_alone(text):
    assert redact(text) == text and not has_credentials(text)


def test_redact_params_and_trees():
    params = {"mlflow.tracking_uri": URIS[0], "train.epochs": "3", "data.shape": [1, 8, 8]}
    assert redact_params(params) == params | {"mlflow.tracking_uri": redact(URIS[0])}
    tree = {"mlflow": {"tracking_uri": URIS[1], "experiment": "x"}, "eps": [0.1, URIS[2]], "seed": 0}
    assert SECRET not in repr(redact_tree(tree)) and redact_tree(tree)["seed"] == 0


def test_log_records_are_redacted_whatever_the_handler(caplog):
    from prefect.logging import get_logger

    install_log_redaction()
    install_log_redaction()  # idempotent
    log = get_logger("robustops.tasks")  # "prefect.robustops.tasks": through Prefect's handlers
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info("tracking at %s", URIS[0])
        try:
            raise ConnectionError(f"API request to {URIS[1]}/api/2.0/mlflow/runs/create failed")
        except ConnectionError:
            log.exception("task failed")
    text = caplog.text + "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert SECRET not in text and redact(URIS[0]) in text and "runs/create failed" in text


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on loopback, reached with a user:password URI (it ignores auth)."""
    port = free_port()
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", server, "mlflow server")
        yield f"http://ml:{SECRET}@127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_config_with_a_password_is_refused():
    from robustops.errors import ConfigError

    with pytest.raises(ConfigError, match="mlflow.tracking_uri: holds a password.*MLFLOW_TRACKING_PASSWORD"):
        load_config(None, [f"mlflow.tracking_uri=http://user:{SECRET}@127.0.0.1:5000"])


@pytest.mark.slow
def test_tracking_uri_password_never_reaches_mlflow_or_prefect_logs(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.testing.utilities import prefect_test_harness

    from adapters.tracking import tracking_uri
    from tasks.record import open_pipeline_run

    # Credentials live in the environment only (a config holding them is refused, above).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = load_config(None, ["defences=[]"])
    install_log_redaction()

    @flow(name="credentials-check")
    def check() -> tuple[str, str]:
        from prefect.runtime import flow_run

        from adapters.log import logger

        run_id = open_pipeline_run(cfg, flow_run.id)
        logger().info(f"tracking at {tracking_uri(cfg.mlflow)}")
        return run_id, flow_run.id

    with prefect_test_harness(server_startup_timeout=120):
        run_id, flow_run_id = check()

        async def logs() -> list[str]:
            await APILogHandler.aflush()  # logs reach the API in batches
            async with get_client() as c:
                found = await c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
                return [log.message for log in found]

        import asyncio

        messages = asyncio.run(logs())
    assert any("tracking at" in m for m in messages)  # the log made it to Prefect
    assert not any(SECRET in m for m in messages), "password in the Prefect logs"
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.params and not any(SECRET in v for v in run.data.params.values()), "password in params"
    assert not any(SECRET in v for v in run.data.tags.values()), "password in tags"
    resolved = MlflowClient(mlflow_server).download_artifacts(run_id, "config/resolved.yaml", str(tmp_path))
    assert SECRET not in Path(resolved).read_text(), "password in config/resolved.yaml"
