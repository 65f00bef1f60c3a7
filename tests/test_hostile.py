"""Hostile input and faults that a probe found getting through (issue 14), one test or more per
defect, each with real parts: real files (16-bit PNGs, FIFOs, compression bombs), a real sqlite
MLflow store, the ``robustops`` command in process or as a subprocess, real HTTP.

The pipeline-level ones (a failure after registering, SIGTERM mid-training) live in
tests/test_flow.py and below under ``slow``; the name rules in tests/test_names.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from app.cli import main
from robustops.catalog import load_config
from robustops.config import EvalConfig, LimitsConfig
from robustops.data import load_folder, load_npz
from robustops.data.loaders import load_batch
from robustops.defences.standard import StandardConfig
from robustops.errors import DataValidationError, DataWarning
from robustops.serving.http import RequestLimits, cap_error, json_problem
from robustops.spreadsheet import read_csv, write_csv
from robustops.training import checkpoint
from tests.helpers.net import free_port, wait_until_answers
from tests.helpers.runs import BIN, REPO


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return path


def _digit_folder(root: Path, classes=("a", "b"), n=4, size=8) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(n):
            _png(root / c / f"{i}.png", rng.integers(0, 256, (size, size), dtype=np.uint8))
    return root


def _returns_within(fn, seconds: float):
    """Runs ``fn`` in a thread; fails the test if it has not returned (or raised) in time."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (it would hang the command)"
    return out


# ---- 1. serving loads no pickle ------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def logged(tmp_path_factory, trained, digits_split):
    """A guarded model logged by the pipeline's own adapter, downloaded as a server would."""
    from adapters.pyfunc import log_guarded
    from robustops.serving import settings_for

    root = tmp_path_factory.mktemp("logged")
    folder = checkpoint.save(trained.model, trained.blueprint, root / "checkpoint")
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    exp = mlflow.create_experiment("hostile", artifact_location=(root / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    uri = log_guarded(run.info.run_id, folder, settings_for(trained.blueprint, None), digits_split.test.x)
    return {"root": root, "uri": uri, "run_id": run.info.run_id}


def test_the_served_model_holds_no_pickle_and_a_planted_one_never_runs(logged, tmp_path, digits_split):
    from adapters.pyfunc import check_model_folder

    local = Path(mlflow.artifacts.download_artifacts(logged["uri"], dst_path=str(tmp_path / "model")))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    check_model_folder(local, "models:/m/1")  # robustops serve-model's check passes the clean model
    marker = tmp_path / "the-pickle-ran"
    (local / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    model = mlflow.pyfunc.load_model(str(local))  # what mlflow models serve does
    assert len(model.predict(digits_split.test.x[:3])) == 3
    assert not marker.exists()
    with pytest.raises(checkpoint.CheckpointError, match="it holds python_model.pkl"):
        check_model_folder(local, "models:/m/1")  # and refuses it with a pickle planted...
    meta = yaml.safe_load((local / "MLmodel").read_text())
    meta["flavors"]["python_function"] |= {
        "loader_module": "mlflow.pyfunc.model",
        "python_model": "python_model.pkl",
    }
    (local / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(checkpoint.CheckpointError, match="not robustops'.*is not served"):
        check_model_folder(local, "models:/m/1")  # ...or rewired to load it
    assert not marker.exists()


# ---- 2. memory bounded before decoding -----------------------------------------------------------


def test_a_compressed_npz_bomb_is_refused_from_its_header_before_inflating(tmp_path):
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((2000, 32, 32), np.uint8), y=np.zeros(2000, np.int64))
    assert bomb.stat().st_size < 100_000  # 2 MB of pixels, 8 MB as float32
    tracemalloc.start()
    try:
        with pytest.raises(DataValidationError, match=r"limits.max_bytes = 4 MiB"):
            load_npz(bomb, LimitsConfig(max_bytes=4 * 2**20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # refused from the header: nothing inflated
    assert len(load_npz(bomb, LimitsConfig(max_bytes=16 * 2**20)).y) == 2000  # under the limit: loads


def test_the_cli_refuses_an_input_over_the_limit_with_exit_2_and_the_limit_name(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((2000, 32, 32), np.uint8), y=np.arange(2000) % 2)
    args = [
        "check-data",
        "--set",
        "data.source=npz",
        "--set",
        "data.path=big.npz",
        "--set",
        "limits.max_bytes=4194304",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: big.npz: its arrays decode to") and "limits.max_bytes" in err
    assert err.count("\n") == 1


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    _digit_folder(tmp_path / "img")
    _png(tmp_path / "img" / "a" / "huge.png", np.zeros((300, 400), np.uint8))
    with pytest.raises(
        DataValidationError, match=r"huge.png: is 400x300 = 120,000 pixels, above limits.max_image_pixels"
    ):
        load_folder(tmp_path / "img", size=(8, 8), limits=LimitsConfig(max_image_pixels=100_000))


def test_a_folder_over_the_byte_limit_is_refused_before_the_image_that_crosses_it(tmp_path):
    _digit_folder(tmp_path / "img", n=40, size=64)
    with pytest.raises(
        DataValidationError, match=r"decode to more than limits.max_bytes = 1 MiB .*reached at image"
    ):
        load_folder(tmp_path / "img", limits=LimitsConfig(max_bytes=2**20))  # 80 x 64x64 float32 = 1.25 MiB


# ---- 3. nothing dropped silently: 16-bit, alpha, hidden folders ----------------------------------


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    levels = np.array([0, 4096, 32768, 65535], np.uint16)
    for c in ("a", "b"):
        for i in range(3):
            _png(tmp_path / c / f"{i}.png", np.tile(levels, (8, 2)).astype(np.uint16))
    with Image.open(tmp_path / "a" / "0.png") as im:
        assert im.mode == "I;16"
    ds = load_folder(tmp_path)
    np.testing.assert_allclose(ds.x[0, 0, 0, :4], levels / 65535, atol=1e-6)  # convert("L") gave 0 and 1/255


def test_an_alpha_channel_that_hides_content_is_refused_and_an_opaque_one_is_not(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    _digit_folder(tmp_path / "ok")
    _png(tmp_path / "ok" / "a" / "opaque.png", rgba)
    assert len(load_folder(tmp_path / "ok").y) == 9
    rgba[2:6, 2:6, 3] = 0  # a glyph drawn by transparency: RGB alone shows a black square
    _digit_folder(tmp_path / "bad")
    _png(tmp_path / "bad" / "a" / "glyph.png", rgba)
    with pytest.raises(DataValidationError, match=r"glyph.png: has transparent pixels \(25% of them\)"):
        load_folder(tmp_path / "bad")


def test_an_animation_is_refused_not_cut_to_its_first_frame(tmp_path):
    _digit_folder(tmp_path)
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "a" / "anim.png", save_all=True, append_images=frames[1:])
    with pytest.raises(DataValidationError, match="anim.png: holds 2 frames"):
        load_folder(tmp_path)


def test_hidden_and_stray_entries_are_named_in_a_warning(tmp_path, capsys, monkeypatch):
    _digit_folder(tmp_path / "img", classes=("a", "b", "..."), n=3)
    (tmp_path / "img" / ".DS_Store").write_bytes(b"\0")  # system clutter: skipped without a word
    (tmp_path / "img" / "README.txt").write_text("about these images")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ds = load_folder(tmp_path / "img")
    said = [str(w.message) for w in seen if issubclass(w.category, DataWarning)]
    assert ds.classes == ["a", "b"]
    assert any("skipped hidden entries '...'" in s for s in said), said
    assert any("README.txt" in s for s in said) and not any(".DS_Store" in s for s in said)
    monkeypatch.chdir(tmp_path)
    assert main(["check-data", "--set", "data.source=folder", "--set", "data.path=img"]) == 0
    err = capsys.readouterr().err
    assert "warning: img: skipped hidden entries '...'" in err


# ---- 11. memory grows with the output size -------------------------------------------------------


def test_large_images_are_resized_as_they_are_read(tmp_path):
    big = np.tile(np.linspace(0, 255, 1000, dtype=np.uint8), (1000, 1))
    for c in ("a", "b"):
        for i in range(15):
            _png(tmp_path / c / f"{i}.png", big)
    tracemalloc.start()
    try:
        ds = load_folder(tmp_path, size=(16, 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ds.x.shape == (30, 1, 16, 16)
    # One 1000x1000 image in flight (and its float copy for resizing), not all thirty (30 MB).
    assert peak < 12 * 2**20, peak


# ---- 15. only regular files are read --------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_png_is_refused_at_once(tmp_path):
    _digit_folder(tmp_path / "img")
    os.mkfifo(tmp_path / "img" / "a" / "pipe.png")
    out = _returns_within(lambda: load_folder(tmp_path / "img"), 10)
    assert isinstance(out.get("error"), DataValidationError)
    assert "pipe.png: is a FIFO (named pipe), not an image file" in str(out["error"])
    os.mkfifo(tmp_path / "data.npz")
    out = _returns_within(lambda: load_npz(tmp_path / "data.npz"), 10)
    assert "is a FIFO (named pipe), not a regular file or folder" in str(out["error"])
    flat = tmp_path / "batch"
    flat.mkdir()
    _png(flat / "0.png", np.zeros((8, 8), np.uint8))
    os.mkfifo(flat / "1.png")
    out = _returns_within(lambda: load_batch(flat, (1, 8, 8), ["a"]), 10)
    assert "1.png: is a FIFO (named pipe)" in str(out["error"])


def test_a_device_as_data_path_says_what_it_is(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["check-data", "--set", "data.source=npz", "--set", "data.path=/dev/zero"]) == 2
    assert "error: /dev/zero: is a character device, not a regular file or folder" in capsys.readouterr().err


# ---- 14. metric keys never collide --------------------------------------------------------------


def test_class_folders_that_would_share_metric_keys_are_refused_at_load(tmp_path, capsys, monkeypatch):
    _digit_folder(tmp_path / "img", classes=("a b", "a_b"))
    monkeypatch.chdir(tmp_path)
    assert main(["check-data", "--set", "data.source=folder", "--set", "data.path=img"]) == 2
    assert "class names 'a b' and 'a_b' would write the same MLflow metric keys" in capsys.readouterr().err
    _digit_folder(tmp_path / "long", classes=("x" * 230, "y"))
    assert main(["check-data", "--set", "data.source=folder", "--set", "data.path=long"]) == 2
    assert "is 230 characters" in capsys.readouterr().err


# ---- 4, 5, 6: names refused at load, before anything runs -----------------------------------------


@pytest.mark.parametrize(
    "override",
    ["gate.alias=latest", "gate.alias=v1", "gate.alias='a b'", "mlflow.registered_model=a/b",
     "mlflow.registered_model=m@prod", "evaluation.autoattack.eps=[1.5]", "evaluation.eps=[0.1, 0.1000001]"],
)  # fmt: skip
def test_values_mlflow_would_refuse_exit_2_before_anything_is_written(
    override, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config: ") and err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()


# ---- 4 (retries), 7: deterministic MLflow errors, quoted filters ----------------------------------


class _State:
    def __init__(self, error: BaseException):
        self.error = error

    def result(self):
        raise self.error


def test_deterministic_mlflow_errors_are_not_retried(tmp_path):
    from adapters.retries import worth_retrying
    from robustops.errors import PromotionConflict, TrackingUnavailable

    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(MlflowException) as bad_name:
        c.create_registered_model("a/b")  # MLflow's own refusal
    with pytest.raises(MlflowException) as missing:
        c.get_model_version("nope", "1")
    for error, retry in [
        (bad_name.value, False),
        (missing.value, False),
        (MlflowException("boom", error_code="INTERNAL_ERROR"), True),
        (MlflowException("busy", error_code="TEMPORARILY_UNAVAILABLE"), True),
        (ConnectionResetError("reset"), True),
        (TrackingUnavailable("gone"), False),
        (PromotionConflict("moved"), True),
        (ValueError("a bug"), False),
    ]:
        assert worth_retrying(None, None, _State(error)) is retry, error


def test_the_sweep_deletes_a_killed_runs_version_whatever_the_model_is_called(tmp_path):
    from adapters import tracking
    from adapters.sweep import OWNER_TAG
    from tasks.sweep import sweep_killed_runs

    for name in ("it's", 'say "hi"', "end\\"):
        m = load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.artifact_root={tmp_path}/art",
                               f"mlflow.registered_model={name!r}"]).mlflow  # fmt: skip
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        owner = f"{os.uname().nodename}:{dead.pid}:{psutil.Process().create_time():.2f}"
        parent = tracking.start_run(m, "robustness-pipeline", tags={OWNER_TAG: owner})
        child = tracking.start_run(m, "baseline", parent_id=parent)
        version = tracking.register(m, f"runs:/{child}/guarded_model", child, {})
        assert sweep_killed_runs.fn(m) == [parent]
        c = MlflowClient(m.tracking_uri)
        assert c.get_run(parent).info.status == "KILLED" and c.get_run(child).info.status == "KILLED"
        assert version not in [mv.version for mv in tracking.versions_of(c, name)], name


# ---- 10. small batches --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def champion(tmp_path_factory, trained, digits_split):
    """A sqlite store whose champion is a real guarded model, recorded by the pipeline's tasks."""
    from robustops.evaluation import evaluate
    from robustops.evaluation.scorecard import ScoreInputs
    from tasks.gate import promote
    from tasks.record import close_pipeline_run, log_model_run, open_pipeline_run, register_model

    root = tmp_path_factory.mktemp("hostile-store")
    sets = [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/art",
            "mlflow.registered_model=hostile", "gate={primary: clean/acc, min: {}, max: {}, require_masking: false, spec_checks: []}"]  # fmt: skip
    cfg = load_config(None, sets)
    quick = {"eps": [0.1], "l2_eps": [0.5], "pgd_steps": 2, "max_samples": 32, "autoattack": {"enabled": False},
             "masking": {"more_steps": 4}}  # fmt: skip
    card = evaluate(
        ScoreInputs(trained.model, digits_split.test, EvalConfig.model_validate(quick), val=digits_split.val)
    )
    parent = open_pipeline_run.fn(cfg, None)
    run_id, uri = log_model_run.fn(cfg, parent, StandardConfig(label="baseline"), trained, card, digits_split)
    version = str(register_model.fn(cfg, uri, run_id, card, "baseline", digits_split.test, parent))
    assert promote.fn(cfg, parent, {"baseline": card}, {"baseline": version}).promote
    close_pipeline_run.fn(cfg.mlflow, parent, True)
    return {"root": root, "sets": [a for s in sets for a in ("--set", s)], "cfg": cfg, "version": version}


@pytest.mark.parametrize("n", [1, 2, 19])
def test_monitor_refuses_a_batch_too_small_to_test_and_names_the_minimum(champion, digits_split, n, capsys):
    path = champion["root"] / f"small{n}.npz"
    np.savez(path, x=digits_split.test.x[:n])
    assert main(["monitor", "--data", str(path), *champion["sets"]]) == 2
    err = capsys.readouterr().err
    assert f"small{n}.npz: {n} image(s); the drift tests need at least 20 (monitor.min_batch)" in err


def test_drift_refuses_too_few_rows_in_the_core_too(champion, digits_split):
    from robustops.monitoring.drift import DriftSettings
    from robustops.monitoring.monitor import drift, score
    from tasks.monitoring import load_champion

    guarded, ref, _ = load_champion.fn(champion["cfg"], "models:/hostile@champion")
    _, features, _ = score(guarded, ref, digits_split.test.x[:2])
    with pytest.raises(DataValidationError, match="need at least 3"):
        drift(ref, features, DriftSettings())
    _, features, _ = score(guarded, ref, digits_split.test.x[:3])
    assert drift(ref, features, DriftSettings()).p_values  # 3 rows: answered


# ---- 12, 13: HTTP limits --------------------------------------------------------------------------


async def _call(app, body: bytes, path="/invocations", ctype=b"application/json", chunk: int | None = None):
    """One request through an ASGI app: (status, body)."""
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    incoming = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", ctype)] + ([] if chunk else [(b"content-length", str(len(body)).encode())])
    await app({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def _echo_app(scope, receive, send):
    """An app that answers 400 with the whole request in its message, as MLflow's server does."""
    body = (await receive())["body"]
    out = json.dumps({"error_code": "BAD_REQUEST", "message": f"Failed to predict data '{body.decode()}'",
                      "stack_trace": "Traceback ..."}).encode()  # fmt: skip
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


def test_request_limits_refuse_before_the_app_reads_and_cap_what_errors_repeat():
    app = RequestLimits(_echo_app, max_body=10_000)
    run = asyncio.run
    status, body = run(_call(app, b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}"))
    assert status == 400 and b"nested 3001 levels deep" in body
    status, body = run(_call(app, b'{"inputs": [' + b"1," * 6000 + b"1]}"))
    assert status == 413
    status, body = run(_call(app, b'{"inputs": [' + b"1," * 6000 + b"1]}", chunk=1000))  # no length header
    assert status == 413
    assert run(_call(app, b"x", ctype=b"text/csv"))[0] == 415
    assert b"booleans" in run(_call(app, b'{"inputs": [[true, false]]}'))[1]
    assert b"text besides" in run(_call(app, b'{"inputs": [["0.5"]]}'))[1]
    assert b"one key" in run(_call(app, b'{"data": [1]}'))[1]
    status, body = run(
        _call(app, b'{"inputs": [' + b"0.5," * 2000 + b"0.5]}")
    )  # passes to the app, which echoes
    doc = json.loads(body)
    assert status == 400 and len(doc["message"]) < 1100 and "more characters not repeated" in doc["message"]
    assert "stack_trace" not in doc
    assert json_problem(b'{"inputs": [[[[0.5, null, 1e-3]]]]}') is None
    assert cap_error(b"x" * 5000).endswith(b"(4,000 more characters not repeated)")


@pytest.fixture(scope="module")
def served(champion):
    """``robustops serve-model`` (what ``make serve-model`` runs) on the champion, as a process."""
    port = free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": champion["cfg"].mlflow.tracking_uri, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([str(BIN / "robustops"), "serve-model", *champion["sets"], "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", proc, "robustops serve-model")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def served_guarded(champion):
    from tasks.monitoring import load_champion

    return load_champion.fn(champion["cfg"], "models:/hostile@champion")[0]


def test_served_model_answers_hostile_requests_with_short_4xx_reasons(served, served_guarded, digits_split):
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, body = _post(served, deep)
    assert status == 400 and b"nested 100001 levels deep" in body  # was a bare 500
    status, body = _post(served, json.dumps({"inputs": "x" * 5_000_000}).encode())
    assert status == 400 and len(body) < 2000  # was the 5 MB string, twice
    status, body = _post(served, b'{"inputs": [' + b"0.5," * 1_000_000 + b"0.5")  # broken JSON, 4 MB
    assert status == 400 and len(body) < 2000 and b"not repeated" in body
    assert _post(served, json.dumps({"inputs": [[[[True] * 8] * 8]]}).encode())[0] == 400  # was answered
    assert _post(served, json.dumps({"inputs": [[[["0.5"] * 8] * 8]]}).encode())[0] == 400  # was answered
    images = digits_split.test.x[:3].copy()
    images[2, 0, 0, 0] = 7.0
    status, body = _post(served, json.dumps({"inputs": images.tolist()}).encode())
    assert status == 200  # still serving, and as in process:
    rows = json.loads(body)["predictions"]
    assert len(rows) == 3 and rows[2]["rejected"] and "outside [0, 1]" in rows[2]["reason"]
    assert [r["label"] for r in rows] == served_guarded.predict(images)["label"].tolist()
    status, body = _post(served, json.dumps({"inputs": np.zeros((2, 5, 5)).tolist()}).encode())
    assert status == 400 and b"shape" in body  # the model's own refusal, passed on


# ---- 16. no formulas in CSV -----------------------------------------------------------------------


def test_csv_cells_that_spreadsheets_would_run_are_neutralised_and_read_back(tmp_path):
    frame = pd.DataFrame({"label": ["=1+2", "@SUM(1+1)", "-1", "+cmd|' /C calc'!A0", "'quoted", "plain", None],
                          "confidence": [0.5, 0.1, -1.0, 0.2, 0.3, 0.4, 0.0]})  # fmt: skip
    write_csv(frame, tmp_path / "p.csv")
    text = (tmp_path / "p.csv").read_text()
    cells = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert cells[:6] == ["'=1+2", "'@SUM(1+1)", "-1", "'+cmd|' /C calc'!A0", "''quoted", "plain"]
    assert read_csv(tmp_path / "p.csv").equals(frame)


def test_every_csv_the_project_writes_goes_through_the_neutraliser():
    writers = []
    for folder in ("robustops", "adapters", "tasks", "flows"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "spreadsheet.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "to_csv":
                    writers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not writers, f"write CSV with robustops.spreadsheet.write_csv: {writers}"


def test_predict_writes_class_names_as_text_not_formulas(tmp_path):
    from robustops.monitoring.features import Projection
    from robustops.monitoring.reference import Reference, load_reference, save_reference

    features = pd.DataFrame({"confidence": [0.9, 0.8], "predicted": ["=1+2", "@SUM(1+1)"]})
    save_reference(Reference(features, Projection(np.zeros(2), np.eye(2))), tmp_path)
    assert "'=1+2" in (tmp_path / "reference.csv").read_text()
    assert load_reference(tmp_path).features["predicted"].tolist() == ["=1+2", "@SUM(1+1)"]


# ---- 8. a killed run leaves no server behind -------------------------------------------------------


def test_the_watchdog_ends_what_a_killed_command_started(tmp_path):
    script = (
        "import subprocess, sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from app import watchdog\n"
        "watchdog.start()\n"
        "child = subprocess.Popen(['sleep', '600'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.5)  # the watchdog's first look at the children
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    end = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < end, "the child outlived its killed parent"
        time.sleep(0.1)


# ---- 8, 9: SIGTERM and SIGKILL of a real run (a temporary Prefect server, as users run it) ---------

LONG_RUN = """
train: {{epochs: 3000, patience: 3000, progress: false}}
model: {{name: mlp, hidden: 16}}
defences: []
synthesis: {{enabled: false}}
evaluation: {{eps: [0.1], l2_eps: [], pgd_steps: 2, max_samples: 32, autoattack: {{enabled: false}}, masking: {{more_steps: 3}}}}
gate: {{primary: clean/acc, min: {{}}, max: {{}}, require_masking: false, spec_checks: []}}
mlflow: {{tracking_uri: "sqlite:///{root}/mlflow.db", artifact_root: {root}/art, registered_model: signals}}
"""


def _start_long_run(
    root: Path, own_group: bool = False
) -> tuple[subprocess.Popen, list[psutil.Process], str]:
    """``robustops run`` training for minutes, as a process with its own temporary Prefect server;
    returns it once training is under way, with its child processes and the champion's version."""
    from adapters import tracking

    (root / "c.yaml").write_text(LONG_RUN.format(root=root))
    m = load_config(root / "c.yaml").mlflow
    run_id = tracking.start_run(m, "earlier champion")
    tracking.log_metrics(m, run_id, {"clean/acc": 0.99})
    tracking.end_run(m, run_id, True)
    champion = str(tracking.register(m, f"runs:/{run_id}/guarded_model", run_id, {}))
    tracking.set_alias(m, "champion", champion, None)
    env = os.environ | {"PREFECT_HOME": str(root / "prefect"), "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
                        "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = (root / "run.log").open("w")
    proc = subprocess.Popen([str(BIN / "robustops"), "run", "--config", str(root / "c.yaml")], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=own_group)  # fmt: skip
    end = time.monotonic() + 240
    while "log-data-stage" not in (root / "run.log").read_text():
        assert proc.poll() is None and time.monotonic() < end, (root / "run.log").read_text()[-3000:]
        time.sleep(0.5)
    time.sleep(5)  # the baseline is training
    children = psutil.Process(proc.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(p.cmdline()) for p in children)  # the temporary server
    return proc, children, champion


def _all_gone(procs: list[psutil.Process], within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigterm_mid_training_stops_promptly_and_leaves_the_store_consistent(tmp_path):
    proc, children, champion = _start_long_run(tmp_path)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    took = time.monotonic() - t
    out = (tmp_path / "run.log").read_text()
    assert rc == 143 and took < 30, (rc, took, out[-3000:])  # was: training went on for minutes
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: stopped by SIGTERM"), out[-2000:]
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name("robustops").experiment_id
    (parent,) = c.search_runs([exp], "tags.`robustops.kind` = 'pipeline'")
    assert parent.info.status == "KILLED"
    assert [str(mv.version) for mv in c.search_model_versions("name = 'signals'")] == [champion]
    assert str(c.get_model_version_by_alias("signals", "champion").version) == champion
    assert _all_gone(children, 10)  # the temporary server stopped with the run


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_run_and_its_server(tmp_path):
    """Ctrl-C sends SIGINT to the whole foreground group: the temporary Prefect server used to stop
    at once with the run, whose teardown then hung on API retries (over 120 s, then a ConnectError)."""
    proc, children, champion = _start_long_run(tmp_path, own_group=True)
    t = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=120)
    out = (tmp_path / "run.log").read_text()
    assert rc == 130 and time.monotonic() - t < 30, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted (Ctrl-C)"), out[-2000:]
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name("robustops").experiment_id
    (parent,) = c.search_runs([exp], "tags.`robustops.kind` = 'pipeline'")
    assert parent.info.status == "KILLED"
    assert str(c.get_model_version_by_alias("signals", "champion").version) == champion
    assert _all_gone(children, 10)


@pytest.mark.slow
def test_sigkill_leaves_no_temporary_server_behind(tmp_path):
    proc, children, _ = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _all_gone(children, 15), [(p.pid, p.cmdline()) for p in children if p.is_running()]
