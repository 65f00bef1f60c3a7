"""Tasks that record a pipeline in MLflow: the parent run, one nested run per model, the registry.

Tracking calls retry with backoff (the server may blip); nothing is registered until the model is
fully logged, so a failure never leaves a half-written version in the registry.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task

from adapters import tracking
from adapters.log import logger
from adapters.retries import RETRY
from robustops.config import AugmentPolicy, Config, DefenceConfig, GateConfig, MlflowConfig, flatten, to_yaml
from robustops.corruptions import CORRUPTIONS, describe
from robustops.data import Dataset, Split
from robustops.data.adversarial import AdversarialSet, save_npz
from robustops.data.synthesis import SynthesisResult
from robustops.evaluation import Scorecard
from robustops.evaluation.gate import outcome_images, worst_case_key
from robustops.evaluation.html import report_meta, scorecard_report
from robustops.evaluation.plots import image_grid, scorecard_figures
from robustops.evaluation.report import markdown_table
from robustops.names import segment
from robustops.training import TrainResult, checkpoint
from robustops.training.augment import augmix
from tasks.sweep import OWNER_TAG, owner


def _fail_quietly(m: MlflowConfig, run_id: str, killed: bool = False) -> None:
    """Marks a run FAILED (KILLED) on the way out of an error, without hiding that error."""
    try:
        tracking.end_run(m, run_id, False, killed)
    except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
        logger().warning("could not mark MLflow run %s FAILED (it stays RUNNING): %s", run_id, e)


@task(name="open-pipeline-run", **RETRY)
def open_pipeline_run(cfg: Config, flow_run_id: str | None) -> str:
    """Starts the parent run and logs the resolved config as params and as an artifact."""
    tags = {"robustops.kind": "pipeline", OWNER_TAG: owner()}  # a later run sweeps it if we are killed
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(cfg.mlflow, "robustness-pipeline", tags=tags)
    try:
        tracking.log_params(cfg.mlflow, run_id, flatten(cfg))
        tracking.log_text(cfg.mlflow, run_id, to_yaml(cfg), "config/resolved.yaml")
    except BaseException:
        _fail_quietly(cfg.mlflow, run_id)  # the flow never gets this run's id to close it
        raise
    return run_id


def _severity_rows(x: torch.Tensor, names: list[str], seed: int) -> dict[str, np.ndarray]:
    """One row per corruption: the same image at severities 1..5."""
    return {n: np.concatenate([CORRUPTIONS.get(n)(x, s, seed).numpy() for s in range(1, 6)]) for n in names}


@task(name="log-data-stage", **RETRY)
def log_data_stage(
    cfg: Config, run_id: str, split: Split, synth: SynthesisResult, quality: dict[str, float]
) -> None:
    """Counts per class before and after synthesis, sample grids, augmentation and held-out settings."""
    m = cfg.mlflow
    train = split.train
    sizes = split.sizes()
    info = {
        "source": train.source,
        "shape": list(train.shape),
        "classes": train.classes,
        "sizes": sizes,
        "class_counts": {name: part.counts() for name, part in vars(split).items()},
    }
    tracking.log_json(m, run_id, info, "data/summary.json")
    tracking.log_params(m, run_id, {"data.num_classes": train.num_classes, "data.shape": list(train.shape)})
    metrics = {f"data/n_{k}": v for k, v in sizes.items()} | {"synth/n": float(len(synth.y))} | quality
    for name in train.classes:
        metrics[f"data/class_{segment(name)}/n_real"] = synth.before[name]
        metrics[f"data/class_{segment(name)}/n_synthetic"] = synth.made.get(name, 0)
    tracking.log_metrics(m, run_id, metrics)
    tracking.log_json(
        m,
        run_id,
        {"generator": synth.generator, "made": synth.made, "before": synth.before, "after": synth.after,
         "settings": cfg.synthesis.model_dump(mode="json"), "quality": quality},
        "data/synthesis.json",
    )  # fmt: skip
    if synth.made:
        rows = {}
        k = cfg.synthesis.grid_per_class
        for name in synth.made:
            c = train.classes.index(name)
            rows[f"{name} real"] = train.x[train.y == c][:k]
            rows[f"{name} synthetic"] = synth.x[synth.y == c][:k]
        fig = image_grid(rows, f"synthetic samples ({synth.generator}) beside real ones", per_row=k)
        tracking.log_figure(m, run_id, fig, "data/synthetic_samples.png")
    _log_corruption_settings(cfg, run_id, split)


def _log_corruption_settings(cfg: Config, run_id: str, split: Split) -> None:
    m, aug = cfg.mlflow, cfg.augment
    used = aug.corruptions if aug.policy != AugmentPolicy.NONE else []
    table = {c["name"]: c for c in describe()}
    tracking.log_json(
        m,
        run_id,
        {"augment": aug.model_dump(mode="json"), "train_corruptions": [table[n] for n in used],
         "eval_corruptions": [table[n] for n in cfg.evaluation.corruptions]},
        "data/corruptions.json",
    )  # fmt: skip
    x = torch.from_numpy(split.train.x[:1])
    if used:
        rows = _severity_rows(x, used, cfg.seed)
        if aug.policy == AugmentPolicy.AUGMIX:
            gen = torch.Generator().manual_seed(cfg.seed)
            rows["augmix"] = np.concatenate([augmix(x, aug, gen).numpy() for _ in range(5)])
        fig = image_grid(rows, f"training augmentation ({aug.policy.value}), severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/augmentation_samples.png")
    if cfg.evaluation.corruptions:
        rows = _severity_rows(x, cfg.evaluation.corruptions, cfg.seed)
        fig = image_grid(rows, "held-out evaluation corruptions, severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/held_out_corruptions.png")


def _log_adversarial_set(m: MlflowConfig, run_id: str, aset: AdversarialSet, test_x: np.ndarray) -> None:
    s = aset.settings
    name = f"{s['attack']}_eps_{s['eps']:g}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npz"
        save_npz(aset, path)
        tracking.log_file(m, run_id, path, "adversarial")
    tracking.log_metrics(
        m, run_id, {"adv_set/n": len(aset.y), "adv_set/robust_share": float(aset.robust.mean())}
    )
    k = min(8, len(aset.y))
    clean = test_x[aset.x_clean_index[:k]]
    fig = image_grid(
        {
            "clean": clean,
            "adversarial": aset.x[:k],
            "difference": np.abs(aset.x[:k] - clean) / max(s["eps"], 1e-6),
        },
        f"{s['attack']} eps {s['eps']:g} (difference scaled by 1/eps)",
        per_row=k,
    )
    tracking.log_figure(m, run_id, fig, "adversarial/examples.png")


def _log_certificates(m: MlflowConfig, run_id: str, card: Scorecard) -> None:
    c = card.certificates
    if c is None:
        return
    curve = {f"{r:g}": c.certified_accuracy(r) for r in c.radii}
    tracking.log_json(
        m, run_id, {"settings": c.settings, "certified_accuracy": curve}, "evaluation/certificates.json"
    )


def _log_model(
    m: MlflowConfig, run_id: str, result: TrainResult, card: Scorecard, split: Split, defence: DefenceConfig
) -> str:
    """The checkpoint, the drift reference and the guarded model; returns the guarded model's URI."""
    from adapters.pyfunc import log_guarded
    from robustops.monitoring.reference import build_reference, save_reference
    from robustops.serving import settings_for

    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoint.save(result.model, result.blueprint, Path(tmp) / "checkpoint")
        for f in sorted(folder.iterdir()):
            tracking.log_file(m, run_id, f, "checkpoint")
        ref = build_reference(result.model, split.val, split.train.classes)
        for f in save_reference(ref, Path(tmp) / "monitoring"):
            tracking.log_file(m, run_id, f, "monitoring")
        settings = settings_for(result.blueprint, card.thresholds, defence)
        return log_guarded(run_id, folder, settings, split.test.x)


@task(name="log-model-run", task_run_name="log-{defence.run_name}", **RETRY)
def log_model_run(
    cfg: Config,
    parent_id: str,
    defence: DefenceConfig,
    result: TrainResult,
    card: Scorecard,
    split: Split,
    aset: AdversarialSet | None = None,
) -> tuple[str, str]:
    """Logs one trained model in a nested run: params, curves, scores, plots, its adversarial set,
    a checkpoint and the model. Returns (run id, model URI)."""
    m = cfg.mlflow
    name = defence.run_name
    tags = {"robustops.kind": "model", "robustops.model": name, "robustops.defence": defence.name}
    run_id = tracking.start_run(m, name, parent_id=parent_id, tags=tags)
    ok, killed = False, False
    try:
        settings = {f"defence.{k}": v for k, v in defence.model_dump(mode="json").items()}
        tracking.log_params(m, run_id, flatten(cfg) | settings)
        tracking.log_history(m, run_id, result.history)
        # Curves (accuracy over eps, severity, noise, radius) as stepped metrics, so the UI draws
        # lines and the compare view overlays models; the gate's metrics stay scalars by name.
        tracking.log_scorecard(
            m,
            run_id,
            card.metrics
            | result.extras
            | {
                "train/best_epoch": result.best_epoch,
                "val/best_acc": result.best_val_acc,
                "train/seconds": result.seconds,
            },
            keep=tracking.gate_metrics(cfg.gate),
        )
        if result.stop_reason:
            tracking.set_tag(m, run_id, "robustops.stop_reason", result.stop_reason)
        if not card.masking_passed:
            failed = ", ".join(c.name for c in card.masking if not c.passed)
            tracking.set_tag(m, run_id, "robustops.masking", f"FAILED: {failed}")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        tracking.log_json(m, run_id, card.as_json(), "evaluation/scorecard.json")
        for path, fig in scorecard_figures(card, name).items():
            tracking.log_figure(m, run_id, fig, path)
        _log_certificates(m, run_id, card)
        if aset is not None and len(aset.y):
            _log_adversarial_set(m, run_id, aset, split.test.x)
        tracking.client(m)  # sets the tracking URI for the model logging below
        with tracking.translated(m):  # MLflow's fluent model logging, outside the adapter
            model_uri = _log_model(m, run_id, result, card, split, defence)
        stop = f" Stopped: {result.stop_reason}." if result.stop_reason else ""
        tracking.set_note(
            m,
            run_id,
            f"**{name}** (defence `{defence.name}`, model {result.blueprint.name}, augment: "
            f"{cfg.augment.policy.value}), best epoch {result.best_epoch}, trained in {result.seconds:.1f} s.{stop} "
            f"Test split of {card.n_test} images, attacks on {card.n_attacked}.\n\n"
            + markdown_table({name: card.metrics}),
        )
        ok = True
    except BaseException as e:
        killed = interrupted(e)
        raise
    finally:
        if ok:
            tracking.end_run(m, run_id, True)
        else:
            _fail_quietly(m, run_id, killed)
    return run_id, model_uri


OUTCOMES = "gate/primary_outcomes.npz"  # on a model's run: per-image correctness on gate.primary
FINGERPRINT_TAG = "robustops.test_fingerprint"  # the images those outcomes are on
DIGEST_TAG = "robustops.data.classes_digest"  # the class names, in the model's output order
GATE_NOTE = "**Gate:**"  # the first paragraph of a version's description once the gate has run


def outcomes_of(card: Scorecard, cfg: Config) -> np.ndarray | None:
    """The card's per-image correctness on ``gate.primary`` (None: the card does not keep it)."""
    from robustops.evaluation.gate import primary_outcomes
    from robustops.evaluation.scorecard import ensemble_for

    ev = cfg.evaluation
    ensemble = [a.label for a in ensemble_for(ev, (ev.autoattack.eps or [0.1])[0], 0)]
    return primary_outcomes(card.masks, cfg.gate.primary, ensemble)


def data_tags(cfg: Config, test: Dataset) -> dict[str, str]:
    """What a version was trained on; the gate reads shape and classes back (tasks/gate.py)."""
    from robustops.evaluation.gate import classes_digest, classes_text

    d = cfg.data
    return {
        "data.source": d.source.value if d.path is None else f"{d.source.value}: {d.path}",
        "data.shape": "x".join(map(str, test.shape)),
        "data.classes": f"{test.num_classes}: {classes_text(test.classes)}",
        DIGEST_TAG: classes_digest(test.classes),
    }


REPORT = "report/scorecard.html"  # the parent run's HTML scorecard (tasks/gate.py log_report)


def scorecard_link(m: MlflowConfig, parent_id: str) -> str:
    """Where the run's HTML scorecard is, as markdown: a link into the MLflow UI when the tracking
    URI is a server, otherwise the run and the artifact path (a local store has no URL of its own)."""
    uri = tracking.tracking_uri(m)
    if uri.startswith(("http://", "https://")):
        return f"[{REPORT}]({tracking.ui_url(m, parent_id, artifact=REPORT)})"
    return f"`{REPORT}` of the parent run `{parent_id}`"


def _score(metrics: dict[str, float], key: str | None) -> str:
    return f"{key} = {metrics[key]:.4f}" if key and key in metrics else f"{key or 'none'} (not scored)"


MAX_DESCRIPTION = 5000  # a version's description column on a database store (VARCHAR(5000))


def describe_version(m: MlflowConfig, version: str, text: str) -> None:
    """Sets a version's Description (markdown in the MLflow UI)."""
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    with tracking.translated(m):
        tracking.client(m).update_model_version(m.registered_model, version, description=text)


def version_description(m: MlflowConfig, version: str) -> str:
    with tracking.translated(m):
        return tracking.client(m).get_model_version(m.registered_model, version).description or ""


@task(name="register-model", task_run_name="register-{name}", **RETRY)
def register_model(
    cfg: Config, model_uri: str, run_id: str, card: Scorecard, name: str, test: Dataset, parent_id: str
) -> str:
    """Registers a fully logged model as a new version that says what it is at a glance.

    Tags: its name, the gate's primary score and the worst case over every attack (not a single
    attack's score, which gradient masking can inflate), the masking checks, the data it was
    trained on (``data.source``, ``data.shape``, ``data.classes``: the gate refuses to compare
    models of other data), the parent run; its Description links the run's HTML scorecard (the
    gate adds its verdict on top). Its per-image correctness on ``gate.primary`` goes to its run
    as ``gate/primary_outcomes.npz``, with a fingerprint of those test images, so a later gate can
    test a challenger against it on the same images (McNemar) instead of by a margin.
    """
    m, metrics = cfg.mlflow, card.metrics
    worst = worst_case_key(metrics, cfg.gate.primary)
    failed = [c.name for c in card.masking if not c.passed]
    tags = {
        "robustops.model": name,
        "clean_acc": f"{metrics['clean/acc']:.4f}" if "clean/acc" in metrics else "not scored",
        "primary": _score(metrics, cfg.gate.primary),
        "worst_case": _score(metrics, worst),
        "masking": "FAILED: " + ", ".join(failed) if failed else "passed" if card.masking else "not checked",
        "parent_run": parent_id,
    } | data_tags(cfg, test)
    outcomes = outcomes_of(card, cfg)
    images = (
        outcome_images(test, cfg.evaluation.max_samples, cfg.seed, len(outcomes))
        if outcomes is not None
        else None
    )
    if outcomes is not None and images is not None:
        from robustops.evaluation.gate import images_fingerprint

        tags[FINGERPRINT_TAG] = images_fingerprint(*images)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(OUTCOMES).name
            np.savez(path, correct=outcomes.astype(bool), metric=np.str_(cfg.gate.primary),
                     fingerprint=np.str_(tags[FINGERPRINT_TAG]))  # fmt: skip
            tracking.log_file(m, run_id, path, str(Path(OUTCOMES).parent))
    version = tracking.register(m, model_uri, run_id, tags)
    describe_version(
        m,
        version,
        f"**{name}**, trained on {tags['data.source']} ({tags['data.shape']}, {test.num_classes} classes).\n\n"
        f"Primary: {tags['primary']}; worst case: {tags['worst_case']}; gradient masking: {tags['masking']}; "
        f"clean/acc = {tags['clean_acc']}.\n\n"
        f"Scorecard: {scorecard_link(m, parent_id)}. Model run `{run_id}`.",
    )
    logger().info("registered %s version %s", m.registered_model, version)
    return version


def interrupted(e: BaseException) -> bool:
    """Whether ``e`` means the run was stopped (a signal, Ctrl-C) rather than failed."""
    from robustops.errors import Stopped

    return isinstance(e, Stopped) or not isinstance(e, Exception)


# The dimensions of the parent run's short table, in order, by metric prefix.
_DIMENSIONS = [
    ("clean", ("clean/",)),
    ("adversarial", ("adv/", "masking/", "lipschitz/")),
    ("perturbation", ("noise/",)),
    ("distributional", ("corruption/", "shift/")),
    ("specification", ("spec/",)),
    ("post-processing", ("selective/", "guard/", "calibration/", "ood/")),
    ("smoothing", ("certified/", "smoothed/")),
]
NOTE_LIMIT = 7900  # MLflow cuts a tag value at 8000 characters, mid-table
_SINGLE_ATTACK = re.compile(r"^adv/(pgd_linf|pgd_linf_cw)/")
REQUIRED_CHECKS = "spec checks the gate requires"


def _dimension(key: str) -> int | None:
    return next((i for i, (_, prefixes) in enumerate(_DIMENSIONS) if key.startswith(prefixes)), None)


def _limit(key: str, gate: GateConfig | None) -> tuple[str, Any]:
    """The gate's mark for a row ("primary, >= 0.7") and the test a value must pass (None: no limit)."""
    if gate is None:
        return "", None
    marks, tests = [], []
    if key == gate.primary:
        marks.append("primary")
    if key in gate.min:
        marks.append(f"≥ {gate.min[key]:g}")
        tests.append(lambda v, lo=gate.min[key]: v >= lo)
    if key in gate.max:
        marks.append(f"≤ {gate.max[key]:g}")
        tests.append(lambda v, hi=gate.max[key]: v <= hi)
    if key == "masking/pass" and gate.require_masking:
        marks.append("must pass")
        tests.append(lambda v: v >= 1)
    return ", ".join(marks), (lambda v: all(t(v) for t in tests)) if tests else None


def pipeline_note(
    scores: dict[str, dict[str, float]], decision: Any = None, gate: GateConfig | None = None
) -> str:
    """The parent run's Description (markdown): the gate's decision, a short table of the
    headline scores by dimension with the gate's limits marked (a failing value gets ✗), why
    models failed, then every headline score."""
    from robustops.evaluation.report import summary

    d = decision.as_dict() if hasattr(decision, "as_dict") else decision
    if d is None:
        lines = ["**Gate: not run** (gate.enabled is false, or no model was registered)."]
    else:
        verdict = f"promoted {d['challenger']}" if d["promote"] else "champion unchanged"
        lines = [f"**Gate: {verdict}.** {d['summary']}"]
    names = list(scores)
    keys = [gate.primary, *gate.min, *gate.max] if gate is not None else []
    for m in scores.values():
        # The worst case over every attack stands for the single attacks (the full table has them).
        keys += [k for k in summary(m) if k not in keys and not _SINGLE_ATTACK.match(k)]
    keys = sorted(dict.fromkeys(k for k in keys if _dimension(k) is not None), key=_dimension)
    if gate is not None and gate.spec_checks:
        at = max([i + 1 for i, k in enumerate(keys) if _dimension(k) <= 4] or [0])
        keys.insert(at, REQUIRED_CHECKS)

    def header(name: str) -> str:
        if d is None or d.get("challenger") != name:
            return name
        return f"{name} (promoted)" if d["promote"] else f"{name} (challenger)"

    def cell(key: str, name: str, test: Any) -> str:
        m = scores[name]
        if key == REQUIRED_CHECKS:
            failed = [c for c in gate.spec_checks if m.get(f"spec/{c}/pass") == 0.0]
            known = [c for c in gate.spec_checks if f"spec/{c}/pass" in m]
            return f"{len(known) - len(failed)}/{len(gate.spec_checks)}" + (" ✗" if failed else "")
        v = m.get(key)
        if v is None:
            return "-"
        text = ("pass" if v >= 1 else "fail") if key.endswith("/pass") else f"{v:.4f}"
        return text + (" ✗" if test is not None and not test(v) else "")

    if names and keys:
        lines += ["", "| dimension | metric | gate | " + " | ".join(map(header, names)) + " |",
                  "|---|---|---|" + "---:|" * len(names)]  # fmt: skip
        shown = None
        for key in keys:
            dim = _DIMENSIONS[_dimension(key) if key != REQUIRED_CHECKS else 4][0]
            mark, test = _limit(key, gate)
            if key == REQUIRED_CHECKS:
                mark = "all pass"
            label = key if key == REQUIRED_CHECKS else f"`{key}`"
            row = [dim if dim != shown else "", label, mark, *(cell(key, n, test) for n in names)]
            shown = dim
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "✗: outside the gate's limit."]
    failures = {n: r for n, r in (d or {}).get("failures", {}).items() if r}
    if failures:
        lines += ["", "Why models failed the gate:", ""]
        lines += [f"- **{n}**: " + "; ".join(r) for n, r in failures.items()]
    if scores:
        full = [
            "",
            "Every headline score on the test split, one column per model:",
            "",
            markdown_table(scores),
        ]
        if len("\n".join(lines + full)) <= NOTE_LIMIT:
            lines += full
        else:
            lines += ["", "Every score: `report/scorecard.html` and `report/scorecard.json` of this run."]
    return "\n".join(lines)


@task(name="close-pipeline-run", **RETRY)
def close_pipeline_run(
    mcfg: MlflowConfig,
    run_id: str,
    ok: bool,
    scores: dict[str, dict[str, float]] | None = None,
    killed: bool = False,
    decision: Any = None,
    gate: GateConfig | None = None,
) -> None:
    """Ends the parent run. On success its Description starts with the gate's decision
    (``decision``: a :class:`~robustops.evaluation.gate.Decision` or its ``as_dict()``) and a
    short table by dimension with the ``gate``'s limits marked, then every model's scores. Inside
    a flow run, the flow run gets a Prefect artifact that links this MLflow run.

    A run that did not finish leaves no model version behind: the versions its nested runs
    registered are deleted (unless the gate already made one the champion), so a failed run is
    never half-registered. The runs are marked FAILED, or KILLED when a signal stopped them."""
    if not ok:  # the flow is failing: report its error, not a second one from this cleanup
        try:
            gone = tracking.delete_unaliased(mcfg, set(tracking.child_runs(mcfg, run_id)))
            if gone:
                logger().warning("deleted model version(s) %s of this unfinished run", ", ".join(gone))
        except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
            logger().warning("could not delete this unfinished run's model versions: %s", e)
        _fail_quietly(mcfg, run_id, killed)
        status = "KILLED" if killed else "FAILED"
        tracking.link_in_prefect(mcfg, run_id, "pipeline", f"MLflow run robustness-pipeline ({status})")
        return
    if scores:
        tracking.set_note(mcfg, run_id, pipeline_note(scores, decision, gate))
    tracking.end_run(mcfg, run_id, ok)
    d = decision.as_dict() if hasattr(decision, "as_dict") else decision
    tracking.link_in_prefect(
        mcfg,
        run_id,
        "pipeline",
        "MLflow run robustness-pipeline",
        [f"Gate: {d['summary']}"] if d else ["Gate: not run."],
    )


@task(name="log-evaluation", **RETRY)
def log_evaluation(
    cfg: Config, info: dict[str, Any], uri: str, data: str, card: Scorecard, flow_run_id: str | None
) -> str:
    """One MLflow run tagged with the model URI: the scorecard's metrics, JSON, plots and report."""
    m = cfg.mlflow
    tags = {"robustops.kind": "evaluation", "robustops.model_uri": uri, "robustops.data": data,
            "robustops.model": info["model"], "robustops.source_run": info["run_id"]}  # fmt: skip
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(m, f"evaluate {info['name']} v{info['version']}", tags=tags)
    ok = False
    try:
        tracking.log_params(m, run_id, {"model_uri": uri, "data": data, "model_version": info["version"]})
        # Curves as stepped metrics, as on a pipeline's model runs; the gate's metrics stay scalars.
        tracking.log_scorecard(m, run_id, card.metrics, keep=tracking.gate_metrics(cfg.gate))
        tracking.log_json(m, run_id, card.as_json(), "evaluation/scorecard.json")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        for path, fig in scorecard_figures(card, info["model"]).items():
            tracking.log_figure(m, run_id, fig, path)
        page, doc = scorecard_report({info["model"]: card}, None, report_meta(cfg, card), cfg.gate)
        tracking.log_text(m, run_id, page, "report/scorecard.html")
        tracking.log_json(m, run_id, doc, "report/scorecard.json")
        ok = True
    finally:
        tracking.end_run(m, run_id, ok)
    tracking.link_in_prefect(
        m, run_id, "evaluation", f"MLflow run evaluate {info['name']} v{info['version']}",
        [f"{uri} on {data}: {card.n_test} images scored."],
    )  # fmt: skip
    return run_id
