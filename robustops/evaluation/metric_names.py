"""The metric names a run's scorecards will hold, known before anything is trained, and the check
that every name the gate uses is one of them.

The names come from a dry run of the real scorecard code (:func:`robustops.evaluation.scorecard.
evaluate`) on a tiny untrained network and a few random images of the data's shape and classes,
not from a second list of names that could drift from the code that makes them. The dry run keeps
every setting that shapes a name (eps lists, attacks, corruptions, severities, noise levels,
radii, masking steps, checks) and shrinks only what costs time without naming anything (the
number of images, noise samples for certification).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from robustops.attacks.eot import EoT, Randomized, one_draw
from robustops.config import Config
from robustops.data import Dataset
from robustops.errors import ConfigError
from robustops.evaluation.corruption import benchmark_names
from robustops.evaluation.scorecard import ScoreInputs, ScorePart, evaluate, relative_corruption_metrics
from robustops.models import build_model

# Logged beside the scorecard for every model (tasks/evaluation.py, flows/pipeline.py).
ALWAYS = frozenset({"eval/seconds", "train/seconds"})

# Scores defined only when their denominator is not zero (answered images; corruption error
# above the clean error), which the stand-in's values need not give: each comes with the score
# that shows its part of the scorecard ran.
SOMETIMES = {
    "guard/coverage": ("guard/acc_answered",),
    "smoothed/abstain": ("smoothed/acc_answered",),
    "corruption/mean_acc": ("corruption/mce", "corruption/relative_mce"),
}

_cache: dict[tuple, frozenset[str]] = {}


def produced_metrics(
    cfg: Config,
    shape: tuple[int, int, int],
    classes: list[str],
    shift: bool = False,
    ood: bool = False,
    extras: Sequence[Mapping[str, ScorePart]] = (),
    base: bool = False,
) -> frozenset[str]:
    """Every metric name some model of a run of ``cfg`` on data of ``shape`` and ``classes``
    logs. ``shift``/``ood``: the run has those sets. ``extras``: the defences' own scorecard
    parts (:meth:`robustops.defences.Defence.scorecard_parts`, with their dry-run settings).
    ``base``: a model of the run is random with a deterministic base (smoothing), whose
    ``base/adv/...`` figures are logged beside its own."""
    key = (
        cfg.model_dump_json(),
        tuple(shape),
        tuple(classes),
        shift,
        ood,
        tuple(tuple(e) for e in extras),
        base,
    )
    if key not in _cache:
        _cache[key] = frozenset(_dry_run(cfg, tuple(shape), list(classes), shift, ood, extras, base))
    return _cache[key]


def _dry_run(
    cfg: Config,
    shape: tuple[int, int, int],
    classes: list[str],
    shift: bool,
    ood: bool,
    extras: Sequence[Mapping[str, ScorePart]],
    base: bool = False,
) -> set[str]:
    k = len(classes)
    gen = np.random.default_rng(0)
    y = np.repeat(np.arange(k), 3)
    x = gen.random((len(y), *shape), dtype=np.float32)
    data = Dataset(x, y, classes, "dry run")
    ev = cfg.evaluation.model_copy(
        update={
            "max_samples": None,
            "batch_size": 64,
            "pgd_steps": 1,
            "pgd_restarts": 1,
            "autoattack": cfg.evaluation.autoattack.model_copy(
                update={"apgd_steps": 2, "apgd_restarts": 1, "targets": 1, "square_queries": 2}
            ),
            "noise": cfg.evaluation.noise.model_copy(update={"flip_draws": 1}),
            "corruption_benchmark": None,  # its names come from its settings, not its files
        }
    )
    # Names only: the run's own randomness stays untouched, and what the scorecard warns about
    # (a small test split) concerns these stand-in images, not the user's data.
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = build_model("mlp", shape, k, hidden=8, dropout=0.0).eval()
        names: set[str] = set(ALWAYS)
        random = Randomized(
            EoT(model, 1), one_draw(model), 1, base=model
        )  # names as a smoothed model logs them
        runs = [({}, None), *((e, None) for e in extras), *([({}, random)] if base else [])]
        for extra, randomized in runs:
            inputs = ScoreInputs(model, data, ev, 0, "cpu", data, data, data if shift else None, x if ood else None,
                                 extra, randomized)  # fmt: skip
            card = evaluate(inputs)
            names |= set(card.metrics) | set(relative_corruption_metrics(card, card))
    names |= benchmark_names(cfg.evaluation.corruption_benchmark)
    return names | {m for shown, extra in SOMETIMES.items() if shown in names for m in extra}


def _producer(name: str, producers: Sequence[tuple[tuple[str, ...], str]]) -> str:
    """The setting that makes metrics like ``name``, for the error message (``producers``: the
    defences' own metric prefixes and the setting that adds each)."""
    eps = re.search(r"/eps_([0-9.]+)/", name)
    rules = [
        (("adv/autoattack_l2/", "adv/apgd_l2", "adv/apgd_t_l2", "adv/fab_t_l2", "adv/square_l2/"),
         "evaluation.autoattack.l2_eps (with evaluation.autoattack.enabled: true)"),
        (("adv/autoattack/", "adv/apgd", "adv/fab_t/", "adv/square/", "adv/worst/", "masking/"),
         "evaluation.autoattack (enabled: true, with the radius in evaluation.autoattack.eps)"),
        (("adv/pgd_l2",), "evaluation.l2_eps"),
        (("adv/",), "evaluation.eps (the radius must be in the list)"),
        (("shift/",), "evaluation.shift_data"),
        (("corruption_benchmark/",), "evaluation.corruption_benchmark"),
        (("ood/ood_data/",), "evaluation.ood_data"),
        (("corruption/",), "evaluation.corruptions and evaluation.severities"),
        (("noise/",), "evaluation.noise"),
        (("spec/",), "evaluation.specification.checks"),
    ]  # fmt: skip
    for prefixes, setting in [*producers, *rules]:
        if name.startswith(prefixes):
            return setting + (f" (radius {eps.group(1)})" if eps and setting.startswith("evaluation") else "")
    return ""


def check_gate(
    cfg: Config,
    shape: tuple[int, int, int],
    classes: list[str],
    shift: bool = False,
    ood: bool = False,
    extras: Sequence[Mapping[str, ScorePart]] = (),
    producers: Sequence[tuple[tuple[str, ...], str]] = (),
    base: bool = False,
) -> None:
    """Refuses a gate that names a metric this run will not produce or a specification check
    that is not run: found at the end of a run, it would fail every model. (That each check
    exists is checked with every other name, by ``robustops.catalog.resolve``.)"""
    if not cfg.gate.enabled:
        return
    problems = []
    run = set(cfg.evaluation.specification.checks)
    for check in cfg.gate.spec_checks:
        if check not in run:
            problems.append(
                f"gate.spec_checks: {check!r} is not run: add it to evaluation.specification.checks "
                "or remove it from gate.spec_checks"
            )
    produced = produced_metrics(cfg, shape, classes, shift, ood, extras, base)
    used = [("gate.primary", cfg.gate.primary)]
    used += [("gate.min", k) for k in cfg.gate.min] + [("gate.max", k) for k in cfg.gate.max]
    for where, name in used:
        if name in produced:
            continue
        near = difflib.get_close_matches(name, sorted(produced), n=1, cutoff=0.8)
        producer = _producer(name, producers)
        hint = (
            f"did you mean {near[0]}?"
            if near
            else f"it comes from {producer}: turn that on or change the gate"
            if producer
            else "see the names a run logs in its MLflow runs or docs/scorecard.md"
        )
        problems.append(f"{where}: this run produces no metric {name!r}; {hint}")
    if problems:
        raise ConfigError("the gate names what this run will not score: " + "; ".join(problems))
