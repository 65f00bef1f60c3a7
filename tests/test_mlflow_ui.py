"""Where users read results (issue 15, items 8, 9 and 14): links that open MLflow 3's
model-training view, end-of-run hints that run as printed, scorecard curves as stepped metrics,
the parent run's Description, quiet logs, and Prefect flow runs that link their MLflow runs."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from adapters import tracking
from robustops.catalog import load_config
from robustops.config import Config, EvalConfig, GateConfig
from robustops.defences.standard import StandardConfig
from robustops.evaluation import evaluate
from robustops.evaluation.gate import Candidate, decide
from robustops.evaluation.report import summary
from robustops.evaluation.scorecard import ScoreInputs
from tests.helpers.net import free_port, wait_until_answers
from tests.helpers.runs import TINY_CONFIG

ML_VIEW = "workflowType=machine_learning"
QUICK_EVAL = {
    "eps": [0.05, 0.1],
    "l2_eps": [0.5],
    "pgd_steps": 3,
    "max_samples": 64,
    "autoattack": {"enabled": False},
    "masking": {"more_steps": 5},
    "corruptions": ["fog", "jpeg"],
    "severities": [1, 3, 5],
}
# Any point of a curve, by the scorecard's names.
POINT = re.compile(r"^(adv/[^/]+/eps_[^/]+|corruption/[^/]+/s\d+|noise/[^/]+/s_[^/]+|certified/r_[^/]+)/acc$")


@pytest.fixture()
def cfg(tmp_path) -> Config:
    return load_config(
        None,
        [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.artifact_root={tmp_path}/mlartifacts",
         "mlflow.experiment=ui"],
    )  # fmt: skip


def _client(cfg: Config) -> MlflowClient:
    return MlflowClient(cfg.mlflow.tracking_uri)


# ---- item 8: links and hints ---------------------------------------------------------------------


def test_links_open_the_model_training_view(cfg):
    m = cfg.mlflow
    assert tracking.experiment_url(m) == f"http://127.0.0.1:5000/#/experiments?{ML_VIEW}"
    assert _client(cfg).get_experiment_by_name("ui") is None  # the link created nothing
    run = tracking.start_run(m, "robustness-pipeline")
    exp = _client(cfg).get_run(run).info.experiment_id
    assert tracking.ui_url(m, run) == f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run}?{ML_VIEW}"
    assert tracking.experiment_url(m) == f"http://127.0.0.1:5000/#/experiments/{exp}/runs?{ML_VIEW}"
    server = m.model_copy(update={"tracking_uri": "https://ml:s3cret@mlflow.example.org/"})
    assert (
        tracking.ui_url(server, "abc", "7")
        == f"https://mlflow.example.org/#/experiments/7/runs/abc?{ML_VIEW}"
    )


def _runnable(word: str) -> Path | None:
    """The file a shell runs for ``word`` (a bare name goes through PATH), if it is executable."""
    path = Path(word) if "/" in word else (Path(shutil.which(word)) if shutil.which(word) else None)
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def test_end_of_run_hints_run_as_printed(cfg, monkeypatch):
    """Outside the virtualenv (its bin not on PATH) the printed commands still name programs
    that exist, this environment's own; the MLflow link opens the model-training view; the
    Prefect hint says the temporary server has stopped and how to keep the history."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    run = tracking.start_run(cfg.mlflow, "robustness-pipeline")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        hints = tracking.end_of_run_hints(cfg, run, "f-123")
    text = "\n".join(hints)
    command = shlex.split(hints[0].removeprefix("MLflow UI:").split("(or:")[0])
    assert command[1:] == ["ui", "--backend-store-uri", cfg.mlflow.tracking_uri, "--port", "5000"]
    exe = _runnable(command[0])
    assert exe is not None, hints[0]
    assert exe.resolve() == Path(sys.executable).with_name("mlflow").resolve()
    assert hints[1].split("then open ")[1] == tracking.ui_url(cfg.mlflow, run)
    assert "temporary Prefect server, now stopped" in text and "flow runs are kept" in text
    prefect = re.search(r"To see them: (\S+) server start", text)
    assert prefect and _runnable(prefect[1]) and "open http://127.0.0.1:4200/runs/flow-run/f-123" in text
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in text
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.example:4200/api"}):
        hints = tracking.end_of_run_hints(cfg, run, "f-123")
        assert hints[-1] == "Prefect UI: http://prefect.example:4200/runs/flow-run/f-123"
        # The flow run comes from the MLflow run's tag when the caller does not know it.
        tagged = tracking.start_run(cfg.mlflow, "evaluate", tags={"prefect.flow_run_id": "f-9"})
        assert tracking.end_of_run_hints(cfg, tagged)[-1].endswith("/runs/flow-run/f-9")


@pytest.mark.slow  # about 20 s: the UI server's start
def test_the_printed_command_serves_the_printed_link(cfg):
    """The printed `mlflow ui` command, run as printed (on a free port), serves the UI and the
    run the printed link names."""
    run = tracking.start_run(cfg.mlflow, "robustness-pipeline")
    hints = tracking.end_of_run_hints(cfg, run)
    command = shlex.split(hints[0].removeprefix("MLflow UI:").split("(or:")[0])
    port = str(free_port())
    command[command.index("--port") + 1] = port
    link = hints[1].split("then open ")[1].replace(":5000/", f":{port}/")
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", proc, "mlflow ui", timeout=90)
        page = urllib.request.urlopen(link.split("#")[0], timeout=10).read().decode()
        assert "<html" in page.lower()
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/get?run_id={run}"
        assert run in urllib.request.urlopen(api, timeout=10).read().decode()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


# ---- item 9: curves as stepped metrics, one scalar per headline figure ---------------------------


def _history(c: MlflowClient, run: str, key: str) -> dict[int, float]:
    return {h.step: h.value for h in c.get_metric_history(run, key)}


def test_model_runs_log_curves_as_stepped_metrics(cfg, trained, digits_split):
    """A model run holds accuracy over eps per attack, over severity per corruption and over
    noise strength as stepped metrics (step 0: clean), not one single-point metric per point;
    the gate's metrics and the headline figures stay scalars under their names."""
    from tasks.record import log_model_run, open_pipeline_run

    cfg = cfg.model_copy(
        update={
            "gate": GateConfig(
                primary="adv/fgsm/eps_0.1/acc",
                min={"clean/acc": 0.5},
                max={},
                require_masking=False,
                spec_checks=[],
            )
        }  # fmt: skip
    )
    ev = EvalConfig.model_validate(QUICK_EVAL)
    card = evaluate(ScoreInputs(trained.model, digits_split.test, ev, val=digits_split.val))
    parent = open_pipeline_run.fn(cfg, None)
    run, _ = log_model_run.fn(cfg, parent, StandardConfig(label="baseline"), trained, card, digits_split)
    c, m = _client(cfg), card.metrics
    logged = c.get_run(run).data.metrics
    clean = m["clean/acc"]
    for attack in ("fgsm", "pgd_linf", "pgd_linf_cw", "worst"):
        curve = _history(c, run, f"adv/acc_vs_eps_x1000/{attack}")
        assert curve == {0: clean, 50: m[f"adv/{attack}/eps_0.05/acc"], 100: m[f"adv/{attack}/eps_0.1/acc"]}
    assert _history(c, run, "adv/acc_vs_eps_x1000/pgd_l2") == {0: clean, 500: m["adv/pgd_l2/eps_0.5/acc"]}
    for name in ("fog", "jpeg"):
        curve = _history(c, run, f"corruption/acc_vs_severity/{name}")
        assert curve == {0: clean} | {s: m[f"corruption/{name}/s{s}/acc"] for s in (1, 3, 5)}
    for kind, levels in ev.noise.model_dump().items():
        if isinstance(levels, list):
            curve = _history(c, run, f"noise/acc_vs_strength_x1000/{kind}")
            assert curve == {0: clean} | {round(v * 1000): m[f"noise/{kind}/s_{v:g}/acc"] for v in levels}
    # Points are scalars only where the gate reads them or they are headline figures.
    points = {k for k in logged if POINT.match(k)}
    assert points == {k for k in m if POINT.match(k) and (k in summary(m) or k == cfg.gate.primary)}
    assert "adv/fgsm/eps_0.1/acc" in points and "corruption/fog/s5/acc" not in points
    assert {k: logged[k] for k in tracking.gate_metrics(cfg.gate)} == {
        k: m[k] for k in tracking.gate_metrics(cfg.gate)
    }
    assert all(logged[k] == v for k, v in m.items() if not POINT.match(k))  # every other figure
    assert len(points) <= len([k for k in m if POINT.match(k)]) // 2  # far fewer single-bar charts


def test_curve_steps_are_thousandths_and_no_point_is_lost():
    metrics = {
        "clean/acc": 0.99,
        "adv/fgsm/eps_0.0313725/acc": 0.6,  # 8/255
        "adv/fgsm/eps_0.0301/acc": 0.62,
        "adv/fgsm/eps_0.0304/acc": 0.61,  # the same thousandth as 0.0301
        "adv/fgsm/eps_0.0002/acc": 0.98,  # the thousandth of the clean start
        "certified/r_0/acc": 0.9,
        "certified/r_0.25/acc": 0.7,
        "certified/r_0.5/acc": 0.4,
    }
    scalars, curves = tracking.split_curves(metrics, keep={"certified/r_0.5/acc"})
    assert curves == {
        "adv/acc_vs_eps_x1000/fgsm": {0: 0.99, 30: 0.62, 31: 0.6},
        "certified/acc_vs_radius_x1000": {0: 0.9, 250: 0.7, 500: 0.4},  # no clean start
    }
    assert scalars == {
        "clean/acc": 0.99,
        "adv/fgsm/eps_0.0304/acc": 0.61,  # kept by name: its step was taken
        "adv/fgsm/eps_0.0002/acc": 0.98,
        "certified/r_0.25/acc": 0.7,  # a headline figure
        "certified/r_0.5/acc": 0.4,  # asked for (the gate reads it)
    }


# ---- item 9: the parent run's Description --------------------------------------------------------


def _scores() -> dict[str, dict[str, float]]:
    base = {"clean/acc": 0.90, "adv/autoattack/eps_0.1/acc": 0.10, "adv/worst/eps_0.1/acc": 0.05,
            "corruption/mce": 1.0, "corruption/mean_acc": 0.8, "calibration/ece": 0.05, "masking/pass": 1.0,
            "spec/pass": 1.0, "spec/recall_floor/pass": 1.0, "spec/edge_blank/pass": 1.0,
            "noise/gaussian/mean_acc": 0.8, "train/seconds": 3.0}  # fmt: skip
    at = base | {"clean/acc": 0.98, "adv/autoattack/eps_0.1/acc": 0.80, "adv/worst/eps_0.1/acc": 0.78,
                 "corruption/mce": 0.9, "calibration/ece": 0.12, "spec/edge_blank/pass": 0.0, "spec/pass": 0.0}  # fmt: skip
    fixed = at | {"calibration/ece": 0.04, "spec/edge_blank/pass": 1.0, "spec/pass": 1.0}
    return {"baseline": base, "pgd_at": at, "trades": fixed}


def test_parent_run_description_starts_with_the_gate_decision(cfg):
    from tasks.record import close_pipeline_run, open_pipeline_run

    gate = GateConfig(spec_checks=["recall_floor", "edge_blank"], require_masking=True)
    scores = _scores()
    candidates = [
        Candidate(n, s, s["masking/pass"] == 1.0, {c: s[f"spec/{c}/pass"] == 1.0 for c in gate.spec_checks})
        for n, s in scores.items()
    ]
    decision = decide(candidates, None, gate)
    assert decision.promote and decision.challenger == "trades"
    parent = open_pipeline_run.fn(cfg, None)
    close_pipeline_run.fn(cfg.mlflow, parent, True, scores, decision=decision, gate=gate)
    note = _client(cfg).get_run(parent).data.tags["mlflow.note.content"]
    lines = note.splitlines()
    assert lines[0] == f"**Gate: promoted trades.** {decision.summary}"
    assert "| dimension | metric | gate | baseline | pgd_at | trades (promoted) |" in lines
    assert "| clean | `clean/acc` | ≥ 0.95 | 0.9000 ✗ | 0.9800 | 0.9800 |" in lines
    assert (
        "| adversarial | `adv/autoattack/eps_0.1/acc` | primary, ≥ 0.7 | 0.1000 ✗ | 0.8000 | 0.8000 |"
        in lines
    )
    assert "|  | `masking/pass` | must pass | pass | pass | pass |" in lines
    assert "| post-processing | `calibration/ece` | ≤ 0.1 | 0.0500 | 0.1200 ✗ | 0.0400 |" in lines
    assert "|  | spec checks the gate requires | all pass | 2/2 | 1/2 ✗ | 2/2 |" in lines
    order = [next(i for i, x in enumerate(lines) if x.startswith(f"| {d} |"))
             for d in ("clean", "adversarial", "perturbation", "distributional", "specification", "post-processing")]  # fmt: skip
    assert order == sorted(order)  # the four dimensions, then post-processing
    assert "train/seconds" not in "\n".join(lines[: lines.index("✗: outside the gate's limit.")])
    assert any(x.startswith("- **baseline**: clean/acc 0.9000 < 0.95") for x in lines)
    assert "| `clean/acc` | 0.9000 | 0.9800 | 0.9800 |" in lines  # every headline score follows
    # Without a decision (an older caller, or the gate off), the Description says so first.
    other = open_pipeline_run.fn(cfg, None)
    close_pipeline_run.fn(cfg.mlflow, other, True, scores)
    assert _client(cfg).get_run(other).data.tags["mlflow.note.content"].startswith("**Gate: not run**")


# ---- item 14: quieter logs -----------------------------------------------------------------------


def test_image_grids_log_no_clipping_warnings(caplog):
    from robustops.evaluation.plots import image_grid

    rgb = np.random.default_rng(0).uniform(-0.2, 1.3, (4, 3, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        fig = image_grid({"difference": rgb, "gray": rgb[:, :1]}, "scaled differences", per_row=4)
        fig.canvas.draw()
    assert not [r for r in caplog.records if "Clipping" in r.getMessage()]
    shown = fig.axes[0].images[0].get_array()
    assert shown.min() >= 0 and shown.max() <= 1


def test_artifact_downloads_draw_no_progress_bar(cfg, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    run = tracking.start_run(cfg.mlflow, "x")
    for name in ("a.json", "b.json", "c.json"):
        tracking.log_json(cfg.mlflow, run, {"name": name}, f"folder/{name}")
    capfd.readouterr()
    folder = tracking.download(cfg.mlflow, run, "folder", str(tmp_path / "dl"))
    assert sorted(p.name for p in Path(folder).iterdir()) == ["a.json", "b.json", "c.json"]
    assert "Downloading artifacts" not in capfd.readouterr().err


# ---- item 14: flow runs that link their MLflow runs; monitor runs named after batch and verdict --

# On top of tests/tiny.yaml: the baseline alone (every class whole, no synthesis, no adversarial
# set), a smaller model and scorecard, a gate on PGD so no AutoAttack runs.
FLOW = [
    "train.epochs=2",
    "model.hidden=32",
    "data.train_class_fraction={}",
    "synthesis={enabled: false}",
    "adversarial_set={enabled: false}",
    "defences=[]",
    "evaluation.eps=[0.1]",
    "evaluation.l2_eps=[0.5]",
    "evaluation.pgd_steps=2",
    "evaluation.max_samples=32",
    "evaluation.autoattack={enabled: false}",
    "evaluation.masking.more_steps=3",
    "evaluation.corruptions=[fog]",
    "evaluation.severities=[1, 5]",
    "mlflow.registered_model=ui-digits",
    "gate={primary: adv/pgd_linf/eps_0.1/acc, min: {clean/acc: 0.5}, max: {}, require_masking: false, spec_checks: []}",
]


def _artifacts(flow_run_id: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        found = c.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert all(a.task_run_id is None for a in found)  # the flow run's own, not one task's
    return {a.key: str(a.data) for a in found}


@pytest.mark.slow
def test_flow_runs_link_their_mlflow_runs(prefect_harness, tmp_path, digits_split):
    """Each flow run (pipeline, evaluate, monitor) carries a Prefect artifact that links its
    MLflow run in the model-training view; a monitor run is named after its batch and verdict."""
    from prefect.client.orchestration import get_client

    from flows.evaluate import robustness_evaluation
    from flows.monitor import robustness_monitor
    from flows.pipeline import robustness_pipeline

    store = [
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_root={tmp_path}/mlartifacts",
    ]
    cfg = load_config(TINY_CONFIG, [*FLOW, *store])
    out = robustness_pipeline(cfg)
    art = _artifacts(out["flow_run_id"])["mlflow-pipeline-run"]
    assert tracking.ui_url(cfg.mlflow, out["parent_run_id"]) in art and ML_VIEW in art
    assert f"Gate: {out['gate']['summary']}" in art
    note = _client(cfg).get_run(out["parent_run_id"]).data.tags["mlflow.note.content"]
    assert note.startswith("**Gate: promoted baseline.**")  # the flow passes the decision on

    batch = tmp_path / "batch.npz"
    np.savez(batch, x=digits_split.test.x[:, 0], y=digits_split.test.y)  # 359: no small-split warning
    mon = robustness_monitor(str(batch), cfg)
    flow_run = _client(cfg).get_run(mon["run_id"]).data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as c:
        name = c.read_flow_run(flow_run).name
    assert name == f"monitor batch.npz: {'drift' if mon['drift'] else 'no drift'}"
    assert tracking.ui_url(cfg.mlflow, mon["run_id"]) in _artifacts(flow_run)["mlflow-monitor-run"]

    ev = robustness_evaluation("models:/ui-digits@champion", str(batch), cfg)
    flow_run = _client(cfg).get_run(ev["run_id"]).data.tags["prefect.flow_run_id"]
    assert tracking.ui_url(cfg.mlflow, ev["run_id"]) in _artifacts(flow_run)["mlflow-evaluation-run"]
    curve = _client(cfg).get_metric_history(ev["run_id"], "adv/acc_vs_eps_x1000/pgd_linf")
    assert [h.step for h in curve] == [0, 100]  # an evaluation run logs the same curves
