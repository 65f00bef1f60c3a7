"""The pipeline as users run it: real Prefect flow runs, a real MLflow sqlite store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from prefect import flow

from app.cli import main
from flows.pipeline import robustness_pipeline
from robustops.catalog import load_config, resolve
from robustops.config import Config
from robustops.data import load_digits, split_dataset
from robustops.errors import DataValidationError
from tests.helpers.runs import TINY_CONFIG, tiny_args


@pytest.fixture(scope="module")
def harness(prefect_harness):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/mlartifacts"]


@pytest.fixture(scope="module")
def tiny(store) -> Config:
    return load_config(TINY_CONFIG, store)


@pytest.fixture(scope="module")
def first_run(harness, tiny):
    return robustness_pipeline(tiny)


def _client(cfg: Config) -> MlflowClient:
    return MlflowClient(cfg.mlflow.tracking_uri)


def test_parent_run_holds_config_and_data_summary(first_run, tiny):
    c = _client(tiny)
    parent = c.get_run(first_run["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"]
    assert parent.data.params["train.epochs"] == "3"
    resolved = yaml.safe_load(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/config/resolved.yaml"))
    assert resolve(Config.model_validate(resolved)) == tiny
    summary = json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/data/summary.json"))
    assert summary["sizes"] == first_run["sizes"] and summary["sizes"]["test"] == 359  # train is thinned
    assert str(tiny.mlflow.artifact_root) in parent.info.artifact_uri


def test_data_stage_is_logged(first_run, tiny):
    c = _client(tiny)
    parent_id = first_run["parent_run_id"]
    m = c.get_run(parent_id).data.metrics
    assert (
        first_run["synthesized"] == {"3": int(m["data/class_3/n_synthetic"])}
        and m["data/class_3/n_synthetic"] > 0
    )
    assert m["data/class_3/n_real"] + m["data/class_3/n_synthetic"] == max(
        m[f"data/class_{k}/n_real"] for k in range(10)
    )
    assert 0 <= m["synth/judge/acc"] <= 1
    files = {a.path for a in c.list_artifacts(parent_id, "data")}
    assert {
        "data/synthetic_samples.png",
        "data/augmentation_samples.png",
        "data/held_out_corruptions.png",
        "data/corruptions.json",
        "data/synthesis.json",
        "data/summary.json",
    } <= files
    synth = json.loads(
        mlflow.artifacts.load_text(f"{c.get_run(parent_id).info.artifact_uri}/data/synthesis.json")
    )
    assert synth["after"]["3"] == synth["before"]["3"] + synth["made"]["3"]


def test_adversarial_set_is_exported(first_run, tiny, tmp_path):
    from robustops.data.adversarial import load_npz

    c = _client(tiny)
    child_id = first_run["models"]["baseline"]["run_id"]
    local = c.download_artifacts(child_id, "adversarial/pgd_linf_eps_0.1.npz", str(tmp_path))
    aset = load_npz(local)
    assert len(aset) == 32 and aset.settings["attack"] == "pgd_linf" and aset.settings["eps"] == 0.1
    assert c.get_run(child_id).data.metrics["adv_set/robust_share"] == pytest.approx(aset.robust.mean())


def test_nested_model_run_has_metrics_curves_and_artifacts(first_run, tiny):
    c = _client(tiny)
    child_id = first_run["models"]["baseline"]["run_id"]
    child = c.get_run(child_id)
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == first_run["parent_run_id"]
    m = child.data.metrics
    assert m["clean/acc"] > 0.85
    fgsm = {h.step: h.value for h in c.get_metric_history(child_id, "adv/acc_vs_eps_x1000/fgsm")}
    assert m["adv/pgd_linf/eps_0.1/acc"] <= fgsm[100] + 0.05  # curves: step = 1000 x eps
    assert m["adv/pgd_linf/eps_0.1/acc"] < m["clean/acc"]
    assert [h.step for h in c.get_metric_history(child_id, "val/acc")] == [1, 2, 3]
    files = {a.path for p in ("plots", "evaluation", "adversarial") for a in c.list_artifacts(child_id, p)}
    assert {
        "plots/confusion_matrix.png",
        "plots/accuracy_vs_eps.png",
        "plots/corruption_heatmap.png",
        "evaluation/attacks.json",
        "adversarial/examples.png",
    } <= files
    fog = c.get_metric_history(child_id, "corruption/acc_vs_severity/fog")
    assert 0 < m["corruption/mean_acc"] <= 1 and sorted(h.step for h in fog) == [0, 1, 5]  # 0: clean
    attacks = json.loads(mlflow.artifacts.load_text(f"{child.info.artifact_uri}/evaluation/attacks.json"))
    assert {(a["label"], a["eps"]) for a in attacks} == {
        ("fgsm", 0.05),
        ("fgsm", 0.1),
        ("pgd_linf", 0.05),
        ("pgd_linf", 0.1),
        ("pgd_linf_cw", 0.05),
        ("pgd_linf_cw", 0.1),
        ("pgd_l2", 0.5),
        ("pgd_l2", 1.0),
        ("apgd", 0.1),
        ("apgd_dlr", 0.1),
        ("square", 0.1),
        ("autoattack", 0.1),
    }


def test_registered_model_is_the_guarded_model(first_run, tiny):
    c = _client(tiny)
    version = c.get_model_version("tiny-digits", first_run["version"])
    assert version.run_id == first_run["models"]["baseline"]["run_id"]
    uri = f"models:/tiny-digits/{version.version}"
    mlflow.set_tracking_uri(tiny.mlflow.tracking_uri)
    assert mlflow.models.get_model_info(uri).signature is not None
    model = mlflow.pyfunc.load_model(uri)
    test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
    x = test.x.copy()
    x[0, 0, 0, 0] = np.nan  # layer 1 rejects this image, and only this one
    x[1] = 1.5
    out = model.predict(x)  # any batch size: the batch dimension is dynamic
    assert list(out.columns) == ["label", "class_index", "confidence", "abstain", "rejected", "reason"]
    assert out["rejected"].tolist()[:3] == [True, True, False] and out["rejected"].sum() == 2
    assert "NaN" in out["reason"][0] and "outside [0, 1]" in out["reason"][1]
    answered = ~out["rejected"] & ~out["abstain"]
    # The answered predictions are the scored model's: compare with the checkpoint's argmax.
    from robustops.training import checkpoint

    folder = c.download_artifacts(version.run_id, "checkpoint", tempfile.mkdtemp())
    logits = checkpoint.load(folder)(torch.from_numpy(test.x)).detach().numpy()
    assert (out["class_index"][answered] == logits.argmax(1)[answered]).all()
    assert answered.mean() > 0.5 and (out["class_index"][answered] == test.y[answered]).mean() > 0.9


def test_rerun_reuses_cached_training(first_run, tiny):
    again = robustness_pipeline(tiny)
    c = _client(tiny)
    first = c.get_run(first_run["models"]["baseline"]["run_id"]).data.metrics
    second = c.get_run(again["models"]["baseline"]["run_id"]).data.metrics
    assert again["parent_run_id"] != first_run["parent_run_id"]
    assert second["train/seconds"] == first["train/seconds"]  # the cached result, not a retrain
    assert int(again["version"]) == int(first_run["version"]) + len(first_run["models"])  # one per model
    # The same scores cannot beat the champion: the alias stays where the first run put it.
    assert not again["gate"]["promote"] and "does not beat" in again["gate"]["summary"]
    assert (
        c.get_model_version_by_alias("tiny-digits", "champion").run_id
        == first_run["models"][first_run["gate"]["challenger"]]["run_id"]
    )


def test_a_run_that_fails_after_registering_leaves_no_version_behind(first_run, tiny, monkeypatch):
    """Every model registered, then the gate fails: the run is FAILED and the versions it
    registered are deleted; the champion stays (issue 14, item 4)."""
    import flows.pipeline as pipeline

    c = _client(tiny)
    champion = c.get_model_version_by_alias("tiny-digits", "champion").version
    before = {mv.version for mv in c.search_model_versions("name='tiny-digits'")}

    def failing_gate(*args, **kwargs):
        raise RuntimeError("the registry refused the alias")

    monkeypatch.setattr(pipeline, "promote", failing_gate)
    with pytest.raises(RuntimeError, match="refused the alias"):
        robustness_pipeline(tiny.model_copy(update={"defences": []}))  # the baseline, from the cache
    exp = c.get_experiment_by_name(tiny.mlflow.experiment)
    last = c.search_runs([exp.experiment_id], "tags.`robustops.kind` = 'pipeline'",
                         order_by=["attributes.start_time DESC"], max_results=1)[0]  # fmt: skip
    assert last.info.status == "FAILED"
    nested = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{last.info.run_id}'")
    assert nested and all(r.info.status == "FINISHED" for r in nested)  # logged and registered, then...
    assert {mv.version for mv in c.search_model_versions("name='tiny-digits'")} == before  # ...deleted
    assert c.get_model_version_by_alias("tiny-digits", "champion").version == champion


def test_failed_run_is_marked_failed_and_registers_nothing(first_run, tiny, store, tmp_path):
    bad = load_config(TINY_CONFIG, [*store, "data.source=npz", f"data.path={tmp_path}/x.npz"])
    c = _client(tiny)
    before = len(c.search_model_versions("name='tiny-digits'"))
    with pytest.raises(DataValidationError, match="not found"):
        robustness_pipeline(bad)
    exp = c.get_experiment_by_name(tiny.mlflow.experiment)
    last = c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert last.data.tags["robustops.kind"] == "pipeline" and last.info.status == "FAILED"
    assert len(c.search_model_versions("name='tiny-digits'")) == before


def _count_calls(monkeypatch, target: str) -> list[int]:
    """Counts calls of the function ``target`` names (module.attribute) by the code under test."""
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(target, counted)
    return calls


def test_cli_run_prints_summary_and_ui_commands(harness, store, capsys, monkeypatch):
    sets = tiny_args([*store, "mlflow.register_model=false"])
    reads = _count_calls(monkeypatch, "robustops.data.split.load_dataset")
    assert main(["run", *sets]) == 0
    assert reads == [1]  # the pre-flight check read the data; the data stage did not read it again
    out = capsys.readouterr().out
    assert "pipeline finished in" in out and "clean/acc" in out and "baseline" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "?workflowType=machine_learning" in out
    assert "Prefect UI: http://127.0.0.1:" in out and "/runs/flow-run/" in out  # the harness's server
    assert "registered:" not in out


def test_the_data_stage_takes_what_the_pre_flight_check_read(harness, tiny, monkeypatch):
    from app.checks import run_inputs
    from tasks.data import load_data

    stage = load_data.with_options(refresh_cache=True)  # run the task, not its cached result

    @flow
    def data_stage() -> list:
        return [stage(tiny.data, tiny.seed, tiny.limits) for _ in range(2)]

    reads = _count_calls(monkeypatch, "robustops.data.split.load_dataset")
    checked = run_inputs(tiny)
    taken, read = data_stage()
    assert reads == [2]  # the check's read and the second task's: the first took the check's
    assert np.array_equal(taken.train.x, checked.train.x) and np.array_equal(read.train.x, checked.train.x)


def test_runs_read_well_in_the_mlflow_ui(first_run, tiny):
    c = _client(tiny)
    exp = c.get_experiment_by_name(tiny.mlflow.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = c.get_run(first_run["parent_run_id"]).data.tags
    child = c.get_run(first_run["models"]["baseline"]["run_id"]).data.tags
    acc = first_run["models"]["baseline"]["metrics"]["clean/acc"]
    assert f"| `clean/acc` | {acc:.4f} |" in parent["mlflow.note.content"]
    assert "baseline" in child["mlflow.note.content"] and "mlflow.source.name" in child


def test_every_defence_has_its_own_nested_run_with_the_same_keys(first_run, tiny, tmp_path):
    from robustops.training import checkpoint

    c = _client(tiny)
    assert list(first_run["models"]) == ["baseline", "pgd_at", "smoothing"]
    keys = {}
    for name, info in first_run["models"].items():
        run = c.get_run(info["run_id"])
        assert (
            run.info.status == "FINISHED"
            and run.data.tags["mlflow.parentRunId"] == first_run["parent_run_id"]
        )
        assert run.data.tags["robustops.defence"] == ("standard" if name == "baseline" else name)
        own = ("certified/", "smoothed/", "base/adv/", "train/")  # smoothing's own, and training's
        keys[name] = {k for k in run.data.metrics if not k.startswith(own)}
        # The checkpoint loads with weights_only=True and predicts like the logged scores say.
        folder = c.download_artifacts(info["run_id"], "checkpoint", str(tmp_path / name))
        model = checkpoint.load(folder)
        test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
        acc = (model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean()
        assert acc == pytest.approx(run.data.metrics["clean/acc"])
        assert c.get_model_version("tiny-digits", info["version"]).tags["robustops.model"] == name
    assert keys["baseline"] == keys["pgd_at"] == keys["smoothing"]  # the compare view lines them up
    pgd_at = c.get_run(first_run["models"]["pgd_at"]["run_id"]).data
    assert pgd_at.params["defence.steps"] == "2" and "train/val_pgd_acc" in pgd_at.metrics
    smooth = c.get_run(first_run["models"]["smoothing"]["run_id"])
    m = smooth.data.metrics
    cert = {
        h.step: h.value for h in c.get_metric_history(smooth.info.run_id, "certified/acc_vs_radius_x1000")
    }
    assert sorted(cert) == [0, 125, 250, 375, 500] and cert[250] == m["certified/r_0.25/acc"]
    assert cert[500] <= cert[0] <= 1
    files = {a.path for a in c.list_artifacts(smooth.info.run_id, "plots")}
    assert "plots/certified_accuracy.png" in files
    cert = json.loads(mlflow.artifacts.load_text(f"{smooth.info.artifact_uri}/evaluation/certificates.json"))
    assert cert["settings"]["n"] == 50 and cert["settings"]["images"] == 16


def test_first_run_promotes_the_best_passing_model(first_run, tiny):
    c = _client(tiny)
    gate = first_run["gate"]
    assert gate["promote"] and gate["challenger"] in first_run["models"]
    champion = c.get_model_version_by_alias("tiny-digits", "champion")
    best = max(first_run["models"].items(), key=lambda kv: kv[1]["metrics"]["adv/autoattack/eps_0.1/acc"])[0]
    assert (
        champion.version
        == first_run["models"][best]["version"]
        == first_run["models"][gate["challenger"]]["version"]
    )
    assert champion.tags["gate"] == "passed"
    parent = c.get_run(first_run["parent_run_id"])
    assert "promoted" in parent.data.tags["robustops.gate"] and parent.data.metrics["gate/promoted"] == 1.0
    decision = json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/gate/decision.json"))
    assert decision["challenger"] == gate["challenger"]
    files = {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    assert {"report/scorecard.html", "report/scorecard.json"} <= files
    page = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/report/scorecard.html")
    assert all(name in page for name in first_run["models"]) and "data:image/png;base64," in page


def test_gate_moves_the_alias_only_on_a_win(first_run, tiny, harness):
    """The promotion task against the real registry: a failing gate and a non-improving
    challenger leave the champion alone; a better one takes the alias."""
    from robustops.evaluation.scorecard import Scorecard
    from tasks.gate import promote

    c = _client(tiny)
    before = c.get_model_version_by_alias("tiny-digits", "champion").version
    champ = c.get_run(c.get_model_version("tiny-digits", before).run_id).data.metrics
    key = "adv/autoattack/eps_0.1/acc"
    versions = {n: m["version"] for n, m in first_run["models"].items()}
    other = next(n for n in versions if versions[n] != before)

    def card(primary: float, clean: float) -> Scorecard:
        return Scorecard(dict(champ) | {key: primary, "clean/acc": clean}, np.zeros((1, 1)), ["x"])

    fail = promote.fn(
        tiny, first_run["parent_run_id"], {other: card(champ[key] + 0.1, 0.1)}, {other: versions[other]}
    )
    assert not fail.promote and c.get_model_version_by_alias("tiny-digits", "champion").version == before
    assert c.get_model_version("tiny-digits", versions[other]).tags["gate"].startswith("failed: clean/acc")
    win = promote.fn(
        tiny, first_run["parent_run_id"], {other: card(champ[key] + 0.1, 0.99)}, {other: versions[other]}
    )
    assert win.promote and c.get_model_version_by_alias("tiny-digits", "champion").version == versions[other]
    c.set_registered_model_alias("tiny-digits", "champion", before)  # leave the store as the run left it


def test_evaluate_scores_the_champion_on_any_dataset(first_run, tiny, store, tmp_path, capsys, monkeypatch):
    test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
    path = tmp_path / "shifted.npz"
    np.savez(path, x=np.clip(test.x[:, 0] * 0.7 + 0.2, 0, 1), y=test.y)  # N,H,W float, dimmer and greyer
    sets = tiny_args(store)
    reads = _count_calls(monkeypatch, "robustops.data.loaders.load_npz")
    assert main(["evaluate", "--model", "models:/tiny-digits@champion", "--data", str(path), *sets]) == 0
    assert reads == [1]  # checked and scored from one read
    out = capsys.readouterr().out
    assert "models:/tiny-digits@champion" in out and "clean/acc" in out
    c = _client(tiny)
    exp = c.get_experiment_by_name(tiny.mlflow.experiment)
    run = c.search_runs([exp.experiment_id], "tags.`robustops.kind` = 'evaluation'")[0]
    champion = c.get_model_version_by_alias("tiny-digits", "champion")
    assert run.data.tags["robustops.source_run"] == champion.run_id and run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["clean/acc"] <= 1 and "adv/autoattack/eps_0.1/acc" in run.data.metrics
    assert {"report/scorecard.html", "report/scorecard.json"} <= {
        a.path for a in c.list_artifacts(run.info.run_id, "report")
    }
    # Bad inputs: one line, exit 2, before any flow starts.
    assert main(["evaluate", "--model", "models:/tiny-digits@nope", "--data", str(path), *sets]) == 2
    assert "no alias @nope (tiny-digits has versions" in capsys.readouterr().err
    np.savez(tmp_path / "alien.npz", x=test.x[:, 0], y=test.y + 20)
    assert (
        main(
            [
                "evaluate",
                "--model",
                "models:/tiny-digits@champion",
                "--data",
                str(tmp_path / "alien.npz"),
                *sets,
            ]
        )
        == 2
    )
    assert "the model does not know" in capsys.readouterr().err


def test_monitor_flags_a_shifted_batch_and_emits_the_drift_event(first_run, tiny, tmp_path):
    from flows.monitor import robustness_monitor

    test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
    rng = np.random.default_rng(0)
    idx = rng.choice(len(test.y), 200, replace=False)
    np.savez(tmp_path / "clean.npz", x=test.x[idx, 0])  # no labels: production data
    m = test.x[idx].mean(axis=(1, 2, 3), keepdims=True)
    np.savez(tmp_path / "dim.npz", x=((test.x[idx] - m) * 0.5 + m).astype(np.float32), y=test.y[idx])
    clean = robustness_monitor(str(tmp_path / "clean.npz"), tiny)
    assert not clean["drift"] and clean["event"] is None and clean["n"] == 200
    shifted = robustness_monitor(str(tmp_path / "dim.npz"), tiny)
    assert shifted["drift"] and shifted["event"] and any(r.startswith("contrast") for r in shifted["reasons"])
    c = _client(tiny)
    run = c.get_run(shifted["run_id"])
    assert run.data.tags["robustops.drift"] == "detected" and run.data.metrics["drift/detected"] == 1.0
    # The batch came with labels: coverage and the two accuracies, never abstentions as errors.
    assert {"batch/coverage", "batch/acc_answered", "batch/plain_acc"} <= set(run.data.metrics)
    assert "batch/acc" not in run.data.metrics
    files = {a.path for p in ("drift", "batch") for a in c.list_artifacts(run.info.run_id, p)}
    assert {
        "drift/report.html",
        "drift/decision.json",
        "batch/predictions.csv",
        "batch/features.csv",
    } <= files
    assert c.get_run(clean["run_id"]).data.metrics["drift/detected"] == 0.0
    # Expected accuracy: every estimator on every batch; with labels the truth and each error.
    metrics = run.data.metrics
    methods = ("atc_msp", "atc_ne", "atc_logit_z", "doc", "temperature", "scorecard_match")
    assert {f"estimate/acc/{k}" for k in methods} | {"estimate/acc", "estimate/truth"} <= set(metrics)
    assert metrics["estimate/truth"] == metrics["batch/plain_acc"]
    for k in methods:
        assert metrics[f"estimate/error/{k}"] == pytest.approx(
            metrics[f"estimate/acc/{k}"] - metrics["estimate/truth"]
        )
    clean_metrics = c.get_run(clean["run_id"]).data.metrics
    assert clean_metrics["estimate/alert"] == 0.0 and "estimate/truth" not in clean_metrics
    assert "estimate/expected_accuracy.json" in {
        a.path for a in c.list_artifacts(run.info.run_id, "estimate")
    }
    report = Path(c.download_artifacts(run.info.run_id, "drift/report.html", str(tmp_path)))
    assert "Expected accuracy" in report.read_text(encoding="utf-8")
    # An accuracy alert alone raises the drift event, with its reason in words.
    strict = tiny.model_copy(update={"monitor": tiny.monitor.model_copy(update={"min_expected_acc": 1.0})})
    alert = robustness_monitor(str(tmp_path / "clean.npz"), strict)
    assert alert["drift"] and alert["event"] and alert["metrics"]["drift/detected"] == 0.0
    assert any(r.startswith("expected accuracy ") and r.endswith("below 1.00") for r in alert["reasons"])
    assert c.get_run(alert["run_id"]).data.tags["robustops.drift"] == "detected"


def test_cli_monitor_reads_the_batch_once(first_run, tiny, store, tmp_path, capsys, monkeypatch):
    test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
    idx = np.random.default_rng(0).choice(len(test.y), 200, replace=False)  # the clean batch above
    np.savez(tmp_path / "batch.npz", x=test.x[idx, 0])
    reads = _count_calls(monkeypatch, "robustops.data.loaders._read_npz")
    assert main(["monitor", "--data", str(tmp_path / "batch.npz"), *tiny_args(store)]) == 0
    assert reads == [1]  # checked and monitored from one read
    assert "no drift" in capsys.readouterr().out


def test_the_gate_check_knows_every_metric_the_run_logged(first_run, tiny):
    """The names the gate is checked against before a run (a dry run of the scorecard) are exactly
    the names the run's models logged (issue 15, item 3)."""
    from robustops.catalog import produced_metrics

    split = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed)
    produced = produced_metrics(tiny, split.test.shape, split.test.classes)
    logged = set().union(*(m["metrics"] for m in first_run["models"].values()))
    assert logged == produced, (sorted(logged - produced), sorted(produced - logged))


def test_a_batch_the_model_cannot_take_is_refused_unless_converted(first_run, tiny, store, tmp_path, capsys):
    """An RGB 12x12 batch sent to the 1x8x8 digits champion: predict, monitor and evaluate refuse
    it (exit 2, no run, no drift event); with --convert it is scored (issue 15, item 5)."""
    test = split_dataset(load_digits(), tiny.data.val_fraction, tiny.data.test_fraction, tiny.seed).test
    x = torch.nn.functional.interpolate(torch.from_numpy(test.x[:120]), size=(12, 12), mode="bilinear")
    path = tmp_path / "rgb12.npz"
    np.savez(path, x=np.repeat(x.numpy(), 3, axis=1), y=test.y[:120])
    sets = tiny_args(store)
    model = ["--model", "models:/tiny-digits@champion", "--data", str(path)]
    c = _client(tiny)
    exp = c.get_experiment_by_name(tiny.mlflow.experiment)
    before = len(c.search_runs([exp.experiment_id]))
    for command in (["predict", "--out", str(tmp_path / "p")], ["monitor"], ["evaluate"]):
        assert main([command[0], *model, *command[1:], *sets]) == 2
        err = capsys.readouterr().err
        assert "holds RGB 12x12 images; the model takes 1x8x8" in err and "--convert" in err, err
    assert len(c.search_runs([exp.experiment_id])) == before  # nothing logged, no event emitted
    assert main(["predict", *model, "--out", str(tmp_path / "p"), "--convert", *sets]) == 0
    assert "scored 120 images" in capsys.readouterr().out
