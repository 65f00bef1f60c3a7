"""The Prefect server adapter (``adapters/prefect_server.py``), and what issue 16 moved or wired:

- the one server check, with each caller's behaviour and exact message, defined once;
- ``flows/monitor.py`` and ``app/serve.py`` no longer import each other (no import cycle in flows/);
- every MLflow param goes through the credential redaction (a real sqlite store);
- the retrain deployment's cron runs in ``retrain.timezone``.
"""

from __future__ import annotations

import ast
import http.server
import threading
from pathlib import Path

import pytest

from robustops.catalog import load_config
from robustops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55"
CLOSED = "http://127.0.0.1:9/api"  # the discard port: nothing listens there


# ---- the server check ------------------------------------------------------------------------


def _settings(url: str | None):  # noqa: ANN202
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if url is None:
        return temporary_settings(restore_defaults={PREFECT_API_URL})
    return temporary_settings({PREFECT_API_URL: url})


@pytest.fixture()
def failing_server():
    """An HTTP server on loopback that answers every request with 500: a server that answers, badly."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_a_needed_server_that_is_down_or_unset_is_a_clear_error():
    from adapters.prefect_server import PrefectUnavailable, check_server

    with _settings(CLOSED), pytest.raises(PrefectUnavailable) as e:
        check_server()
    assert (
        str(e.value)
        == f"no Prefect server answers at {CLOSED} (ConnectError); start one with make prefect-ui"
    )
    with (
        _settings(None),
        pytest.raises(PrefectUnavailable, match="^PREFECT_API_URL is not set: start a server"),
    ):
        check_server()


def test_a_flow_run_needs_a_server_only_when_one_is_named():
    from adapters.prefect_server import PrefectUnavailable, check_server

    with _settings(None):
        assert check_server(temporary_ok=True) is None  # the run starts a temporary server
    with _settings(CLOSED), pytest.raises(PrefectUnavailable) as e:
        check_server(temporary_ok=True)
    assert str(e.value) == (
        f"no Prefect server answers at PREFECT_API_URL={CLOSED} (ConnectError); start one with make "
        "prefect-ui, or unset PREFECT_API_URL to run with a temporary local server"
    )


def test_an_error_status_fails_serve_but_not_a_flow_run(failing_server):
    from adapters.prefect_server import PrefectUnavailable, check_server

    with _settings(failing_server):
        assert check_server(temporary_ok=True) == failing_server  # it answers: the rest is Prefect's
        with pytest.raises(PrefectUnavailable, match=r"no Prefect server answers at .* \(HTTPStatusError\)"):
            check_server()


# ---- the source: one check, no import cycle --------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_the_prefect_server_check_is_defined_once():
    names = {"check_server", "check_configured_server", "own_temporary_server", "PrefectUnavailable"}
    where = []
    for folder in ("robustops", "adapters", "tasks", "flows", "app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names:
                    where.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert sorted(where) == [
        "adapters/prefect_server.py:PrefectUnavailable",
        "adapters/prefect_server.py:check_server",
        "adapters/prefect_server.py:check_server",  # the two typing overloads and the function
        "adapters/prefect_server.py:check_server",
        "adapters/prefect_server.py:own_temporary_server",
    ]


# ---- credentials never reach MLflow params ---------------------------------------------------


def test_logged_params_are_redacted(tmp_path):
    from mlflow.tracking import MlflowClient

    from adapters import tracking

    m = load_config(
        None, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.artifact_root={tmp_path}/art"]
    ).mlflow
    run_id = tracking.start_run(m, "params")
    tracking.log_params(
        m,
        run_id,
        {
            "batch": f"s3://ml:{SECRET}@bucket/batch.npz",
            "extra": [f"https://store.example.com/x.npz?token={SECRET}", "plain.npz"],
            "model_uri": "models:/robustops-digits@champion",
            "data.shape": [1, 8, 8],
        },
    )
    params = MlflowClient(m.tracking_uri).get_run(run_id).data.params
    assert SECRET not in repr(params)
    assert params["batch"] == "s3://ml:***@bucket/batch.npz"
    assert params["extra"] == "['https://store.example.com/x.npz?token=***', 'plain.npz']"
    assert params["model_uri"] == "models:/robustops-digits@champion" and params["data.shape"] == "[1, 8, 8]"


def test_the_pipeline_run_logs_its_config_redacted(tmp_path):
    """The flattened config of a pipeline run (tasks/record.py) goes through the same redaction:
    a Dask scheduler address with a password lands in MLflow without it."""
    from mlflow.tracking import MlflowClient

    from tasks.record import open_pipeline_run

    cfg = load_config(
        None,
        [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.artifact_root={tmp_path}/art",
         "runner.kind=dask", f"runner.address=tcp://ml:{SECRET}@scheduler:8786"],
    )  # fmt: skip
    run_id = open_pipeline_run.fn(cfg, None)
    params = MlflowClient(cfg.mlflow.tracking_uri).get_run(run_id).data.params
    assert params["runner.address"] == "tcp://ml:***@scheduler:8786"
    assert not [k for k, v in params.items() if SECRET in v]


# ---- schedules -------------------------------------------------------------------------------


def test_the_retrain_cron_runs_in_the_configured_timezone():
    from app.deploy import _when
    from app.serve import deployments

    cfg = load_config(
        None,
        ["retrain.cron=0 4 * * *", "retrain.timezone=Europe/Berlin", "monitor.cron=0 * * * *",
         "monitor.batch_path=/data/incoming.npz"],
    )  # fmt: skip
    deps = {d.name: d for d in deployments(cfg)}
    (retrain,) = deps["retrain"].schedules
    assert (retrain.schedule.cron, retrain.schedule.timezone) == ("0 4 * * *", "Europe/Berlin")
    (monitor,) = deps["monitor"].schedules
    assert monitor.schedule.cron == "0 * * * *" and monitor.schedule.timezone in (None, "UTC")
    assert "cron 0 4 * * * (Europe/Berlin)" in _when(deps["retrain"])
    assert "cron 0 * * * * (UTC)" in _when(deps["monitor"])
    assert deps["retrain"].triggers  # the drift trigger stays beside the schedule


def test_a_timezone_prefect_does_not_know_is_a_config_error():
    from app.serve import deployments

    with pytest.raises(ConfigError, match=r"^retrain\.timezone: Invalid timezone: \"Mars/Olympus\""):
        deployments(load_config(None, ["retrain.timezone=Mars/Olympus"]))
    with pytest.raises(ConfigError, match=r"^monitor\.cron: Invalid cron string"):
        deployments(load_config(None, ["monitor.cron=every day", "monitor.batch_path=/data/b.npz"]))
