"""Speed and strength of our attacks against torchattacks and IBM ART (run by hand, never by tests).

    make bench-attacks                              # sets up .venv-bench with ART, then runs this
    .venv-bench/bin/python benchmarks/attack_speed.py [--model pgd_at] [--repeats 3] [--json PATH]
        [--model-cache PATH] [--threads N]   # --model-cache: train once, reuse the model later
    .venv-bench/bin/python benchmarks/attack_speed.py --model byo-resnet [--images 256] [--threads 2]
        # a user's RGB ResNet on CIFAR-10 (../shared/data), eps 8/255

One model (the default config's CNN, trained here: the baseline or PGD-AT; or with ``--model
byo-resnet`` the user's ResNet of ``benchmarks/byo_model.py``, trained here on half of the CIFAR-10
set, behind its declared preprocessing as robustops scores it) and one batch (the digits test
split, 359 images, in the memory layout the pipeline's split gives it; or CIFAR-10 images of the
other half) for every library. Timed, each on the whole batch, robust accuracy checked the same way for every library:

- PGD-20, L-inf eps 0.1, step 2.5 * eps / 20, one random start. Ours is timed as robust-accuracy
  evaluation runs it (``robust_mask`` calls ``worst_case``): with AutoAttack's early stop, an
  input leaves the batch at the first iterate that fools the model and counts as broken, and
  misclassified inputs are not attacked. torchattacks and ART run their standard PGD (every
  input, every step, last iterate), so ours is timed once more without early stop, the
  like-for-like row ("robustops, no early stop");
- the AutoAttack-grade ensemble: APGD-CE (100 steps), APGD-DLR (100 steps) and Square (1,000
  queries), each on the whole batch, robust accuracy = per-example worst case over the three.

The model is timed as training returns it and the registry loads it: its parameters require
gradients, as PyTorch's do by default. That costs ART time (its ``loss_gradient`` calls
``loss.backward()``, which computes every parameter's gradient too) and nothing for us or
torchattacks (both differentiate w.r.t. the input alone). ART gets one more PGD row on a copy with
frozen parameters and the whole batch at once, the setting most favourable to it: the target is
read against ART as its users run it (its defaults on the model as trained, as torchattacks' own
comparison with ART does), and that row shows how far tuning ART closes the gap.

Times are wall seconds (``time.perf_counter``), medians over rounds that interleave the libraries
(``--pgd-repeats`` for PGD, ``--repeats`` for the ensemble; the order of the libraries reverses
every round) after one warm-up run each, with torch's default thread count (``--threads N`` sets
it for every library: two threads on two cores slow down many times over while another job
holds a core, so a shared machine gives steadier numbers with one). The fastest round is
printed too: other jobs only ever add time. Our attacks hand the model a one-channel CPU batch
strided channels-last (``robustops.attacks.base.model_layout``: the same bytes, torch's faster
kernels); torchattacks and ART pass on the layout ``x + noise`` gets, NCHW. Targets: PGD at
least at parity with torchattacks and at least 2x faster than ART; the ensemble at least at
parity with torchattacks.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

EPS, STEPS = 0.1, 20


def trained_model(name: str, cache: Path | None = None):
    """The model, and the test split exactly as the pipeline makes it (its arrays' strides
    included: a pickled copy would come back C-ordered, a different memory layout)."""
    from robustops.catalog import load_config
    from robustops.data import load_dataset, split_dataset
    from robustops.defences import Context, train_defence

    cfg = load_config(None, ["train.progress=false"])
    split = split_dataset(load_dataset(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=False)
        if saved["name"] == name:
            # As trained (caches written by older versions of this script held frozen weights).
            return saved["model"].requires_grad_(True), split.test
    defence = next(d for d in [*cfg.defences, None] if d is None or d.name == name)
    if defence is None:
        from robustops.defences.standard import StandardConfig

        defence = StandardConfig()
    ctx = Context(cfg.model, cfg.train, cfg.augment, cfg.regularize, cfg.seed)
    model = train_defence(split.train, split.val, ctx, defence).model.eval()
    if cache is not None:
        torch.save({"name": name, "model": model}, cache)
    return model, split.test


def rgb_resnet(cache: Path | None, epochs: int, n: int):
    """The user's small ResNet of ``benchmarks/byo_model.py`` behind its declared preprocessing
    (the model robustops scores), trained on half of the CIFAR-10 set as that benchmark's user
    does (or loaded from ``cache``), and ``n`` images of the other half."""
    import tempfile

    from byo_model import DATA, MEAN, NET, STD, user_trains

    from robustops.config import ModelConfig, PreprocessConfig
    from robustops.data import Dataset
    from robustops.sources import assemble, resolve_factory

    with np.load(DATA) as f:
        x = f["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        y = f["y"].astype(np.int64)
    half = len(y) // 2
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "byo_net.py").write_text(NET)
        if cache is None or not cache.exists():
            user_trains(Path(tmp), x[:half], y[:half], epochs)
            weights = torch.load(Path(tmp) / "byo_weights.pt", weights_only=True)
            if cache is not None:
                torch.save(weights, cache)
        else:
            weights = torch.load(cache, weights_only=True)
        net = resolve_factory(f"{tmp}/byo_net.py:ResNet")()
    net.load_state_dict(weights)
    cfg = ModelConfig(source="byo_net.py:ResNet", preprocess=PreprocessConfig(mean=MEAN, std=STD))
    model = assemble(net, cfg, 3).eval()
    return model, Dataset(
        np.ascontiguousarray(x[half : half + n]), y[half : half + n], [str(i) for i in range(10)], "cifar10"
    )


def timed(fn: Callable[[], np.ndarray]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def robust(model, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).numpy()


def ours(model, x, y, early_stop: bool = True):
    """As robust-accuracy evaluation runs our attacks: ``worst_case``, which ``robust_mask``
    scores. Without early stop that is PGD's classic last iterate, the same as calling it."""
    from robustops.attacks import APGD, PGD, Square

    pgd = PGD(EPS, steps=STEPS, step_size=2.5 * EPS / STEPS, early_stop=early_stop)
    ens = [APGD(EPS, steps=100, loss="ce"), APGD(EPS, steps=100, loss="dlr"), Square(EPS, queries=1000)]
    return (
        lambda: robust(model, x, y, pgd.worst_case(model, x, y)),
        # The ensemble does not depend on PGD's early stop: timed once, in the first row.
        (lambda: np.logical_and.reduce([robust(model, x, y, a.worst_case(model, x, y)) for a in ens]))
        if early_stop
        else None,
    )


def theirs_torchattacks(model, x, y):
    import torchattacks as ta

    pgd = ta.PGD(model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)
    ens = [ta.APGD(model, eps=EPS, steps=100, loss="ce"), ta.APGD(model, eps=EPS, steps=100, loss="dlr"),
           ta.Square(model, eps=EPS, n_queries=1000)]  # fmt: skip
    return (
        lambda: robust(model, x, y, pgd(x, y)),
        lambda: np.logical_and.reduce([robust(model, x, y, a(x, y)) for a in ens]),
    )


def theirs_art(model, x, y, batch_size: int | None = None, frozen: bool = False):
    """ART given the whole batch at once (``batch_size=None``), or ART's own mini-batch size;
    ``frozen``: on a copy of the model whose parameters need no gradient (PGD only)."""
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        ProjectedGradientDescentPyTorch,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    if frozen:
        model = copy.deepcopy(model).requires_grad_(False)
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")  # fmt: skip
    xn, yn = x.numpy(), y.numpy()
    bs = batch_size or len(xn)
    pgd = ProjectedGradientDescentPyTorch(clf, eps=EPS, eps_step=2.5 * EPS / STEPS, max_iter=STEPS,
                                          num_random_init=1, batch_size=bs, verbose=False)  # fmt: skip
    ens = [
        AutoProjectedGradientDescent(clf, eps=EPS, eps_step=2 * EPS, max_iter=100, nb_random_init=1,
                                     loss_type="cross_entropy", batch_size=bs, verbose=False),
        AutoProjectedGradientDescent(clf, eps=EPS, eps_step=2 * EPS, max_iter=100, nb_random_init=1,
                                     loss_type="difference_logits_ratio", batch_size=bs, verbose=False),
        SquareAttack(clf, eps=EPS, max_iter=1000, nb_restarts=1, batch_size=bs, verbose=False),
    ]  # fmt: skip

    def run(attack) -> np.ndarray:
        return robust(model, x, y, torch.from_numpy(attack.generate(xn, yn)))

    return (lambda: run(pgd), None if frozen else lambda: np.logical_and.reduce([run(a) for a in ens]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="pgd_at",
        help="baseline or a defence of the default config, or byo-resnet: a user's RGB ResNet on CIFAR-10 at eps 8/255",
    )
    p.add_argument("--images", type=int, default=256, help="byo-resnet: CIFAR-10 images in the batch")
    p.add_argument("--pgd-only", action="store_true", help="time PGD-20 only, not the ensemble")
    p.add_argument("--train-epochs", type=int, default=10, help="byo-resnet: the user's training epochs")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the ensemble")
    p.add_argument("--pgd-repeats", type=int, default=21, help="rounds of PGD-20")
    p.add_argument("--json", type=Path)
    p.add_argument("--model-cache", type=Path, help="save the trained model here, or load it if there")
    p.add_argument("--threads", type=int, help="torch threads for every library (default: torch's own)")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    global EPS
    if args.model == "byo-resnet":
        EPS = 8 / 255
        model, test = rgb_resnet(args.model_cache, args.train_epochs, args.images)
        what = f"a user's RGB ResNet (benchmarks/byo_model.py) behind its preprocessing, on {len(test.y)} CIFAR-10 images"
    else:
        model, test = trained_model(args.model, args.model_cache)
        what = f"{args.model} CNN on the digits test split ({len(test.y)} images)"
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    libs = {
        "robustops": ours,
        "robustops, no early stop": lambda m, a, b: ours(m, a, b, early_stop=False),
        "torchattacks": theirs_torchattacks,
        "ART": theirs_art,
        "ART (its default batch_size=32)": lambda m, a, b: theirs_art(m, a, b, 32),
        "ART, frozen parameters (tuned)": lambda m, a, b: theirs_art(m, a, b, frozen=True),
    }
    versions = {"torchattacks": version("torchattacks")}
    if importlib.util.find_spec("art") is None:  # outside .venv-bench: compare with torchattacks alone
        libs = {k: v for k, v in libs.items() if not k.startswith("ART")}
    else:
        versions["ART"] = version("adversarial-robustness-toolbox")
    print(f"# Attack speed: {what}, eps {EPS:.4g} L-inf")
    print(f"- torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; medians of {args.pgd_repeats} (PGD) and {args.repeats} (ensemble) interleaved rounds after a warm-up; batch strides {tuple(x.stride())}")  # fmt: skip
    print("- our PGD row stops early per input (AutoAttack's rule, as robust_mask scores it); the 'no early stop' "
          "row runs every input for every step like torchattacks' and ART's PGD")  # fmt: skip
    print("- the model as trained (parameters require gradients, PyTorch's default); the tuned ART row attacks a "
          "copy with frozen parameters, so ART's backward pass skips the parameters' gradients")  # fmt: skip
    print("- our attacks hand the model a CPU batch in robustops.attacks.base.model_layout (channels-last strides for "
          "one channel); torchattacks and ART pass on whatever layout x + noise gets (NCHW)\n")  # fmt: skip
    made = {lib: make(model, x, y) for lib, make in libs.items()}
    if args.pgd_only:
        made = {lib: (pgd, None) for lib, (pgd, _) in made.items()}
    # Interleaved rounds: every library sees the same machine load, so a noisy neighbour or a
    # frequency change cannot favour one of them. Medians over the rounds.
    times = {lib: {"pgd": [], "ensemble": []} for lib in libs}
    accs = {lib: {} for lib in libs}
    for lib, (pgd, ens) in made.items():  # warm-up, and the accuracies
        accs[lib] = {"pgd": float(pgd().mean()), "ensemble": float(ens().mean()) if ens else float("nan")}
    order = list(made)
    for _ in range(args.pgd_repeats):
        for lib in order:
            times[lib]["pgd"].append(timed(made[lib][0]))
        order.reverse()
    ensembles = [lib for lib in made if made[lib][1] is not None]
    for r in range(args.repeats):
        for lib in ensembles if r % 2 == 0 else ensembles[::-1]:
            times[lib]["ensemble"].append(timed(made[lib][1]))
            print(f"  round {r + 1}: {lib} ensemble {times[lib]['ensemble'][-1]:.1f} s", flush=True)

    def med(t: list[float]) -> float:
        return statistics.median(t) if t else float("nan")

    rows = {
        lib: {"pgd_s": med(t["pgd"]), "pgd_min_s": min(t["pgd"]), "pgd_acc": accs[lib]["pgd"],
              "ensemble_s": med(t["ensemble"]), "ensemble_acc": accs[lib]["ensemble"],
              "pgd_runs": t["pgd"], "ensemble_runs": t["ensemble"]}
        for lib, t in times.items()
    }  # fmt: skip
    ref, like = rows["robustops"], rows["robustops, no early stop"]
    print("\n| library | PGD-20 s (median) | fastest | PGD-20 acc | ours faster | ours, no early stop, faster "
          "| ensemble s | ensemble acc | ours faster |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lib, r in rows.items():
        ens = (f"{r['ensemble_s']:.2f} | {r['ensemble_acc']:.4f} | {r['ensemble_s'] / ref['ensemble_s']:.2f}x"
               if r["ensemble_runs"] else "- | - | -")  # fmt: skip
        print(f"| {lib} | {r['pgd_s']:.3f} | {r['pgd_min_s']:.3f} | {r['pgd_acc']:.4f} | {r['pgd_s'] / ref['pgd_s']:.2f}x "
              f"| {r['pgd_s'] / like['pgd_s']:.2f}x | {ens} |")  # fmt: skip
    ta = rows["torchattacks"]
    names = {"ART on the whole batch": "ART", "ART at its default batch size": "ART (its default batch_size=32)",
             "ART tuned (whole batch, frozen parameters)": "ART, frozen parameters (tuned)"}  # fmt: skip
    arts = {label: rows[lib] for label, lib in names.items() if lib in rows}
    for label, ours_row in (("PGD, ours with early stop", ref), ("PGD, ours without early stop", like)):
        vs_art = ", ".join(f"{a['pgd_s'] / ours_row['pgd_s']:.2f}x {k}" for k, a in arts.items())
        fastest = ", ".join(f"{a['pgd_min_s'] / ours_row['pgd_min_s']:.2f}x" for a in arts.values())
        print(f"\n{label}: {ta['pgd_s'] / ours_row['pgd_s']:.2f}x torchattacks (target >= 1)"
              + (f"; {vs_art} (target >= 2)" if arts else "; ART not installed (make bench-attacks)")
              + f"; fastest rounds: {ta['pgd_min_s'] / ours_row['pgd_min_s']:.2f}x torchattacks"
              + (f", ART {fastest}" if arts else ""))  # fmt: skip
    if ref["ensemble_runs"]:
        art = f", {rows['ART']['ensemble_s'] / ref['ensemble_s']:.2f}x ART" if "ART" in rows else ""
        print(f"ensemble: {ta['ensemble_s'] / ref['ensemble_s']:.2f}x torchattacks (target >= 1){art}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows, "versions": versions}, indent=2))


if __name__ == "__main__":
    main()
