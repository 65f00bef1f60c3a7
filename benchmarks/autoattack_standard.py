"""robustops' standard AutoAttack against torchattacks' ``AutoAttack(version="standard")``: the
same model, images and eps, side by side in one run (run by hand, never by tests).

    .venv-bench/bin/python benchmarks/autoattack_standard.py [--models digits mnist rgb] [--threads 2]
        [--norm Linf|L2] [--images N]

Models: ``digits``, the default config's CNN trained on the embedded digits (eps 0.1, 200 test
images); ``mnist``, the small strided CNN trained with FGSM-RS for ``--mnist-epochs`` on MNIST
(eps 0.3, 200 test images, ../shared/data); ``rgb``, the user's ResNet of
``benchmarks/byo_model.py`` behind its declared preprocessing, trained on half of the CIFAR-10
set (eps 2/255, 100 images of the other half). Both run AutoAttack's standard version with the
reference's settings: APGD-CE, APGD-T and FAB-T (100 steps, 9 target classes), Square with 5,000
queries, each on the images the ones before left standing (torchattacks' members in its
MultiAttack: its own ``AutoAttack(version="standard")`` runs its default of 10 steps, shown in
the last column). Ours is scored as the scorecard scores it.
``--norm L2`` runs both ensembles' L2 versions instead, at L2 radii 0.4 (digits), 1.5 (MNIST) and
0.5 (RGB, RobustBench's CIFAR-10 L2 radius). ``--images N`` scores N test images per model.
Target: within 0.5 points of torchattacks on every model, and at least as fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


L2_EPS = {"digits": 0.4, "mnist": 1.5, "rgb": 0.5}


def cascade(
    n: int, members, run: Callable[[object, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, list[float]]:
    """Each member on the images the ones before left standing, as AutoAttack and torchattacks'
    MultiAttack run them (``run(member, indices)`` gives which of those still stand): the robust
    mask over ``n`` images and each member's seconds."""
    standing = np.ones(n, dtype=bool)
    seconds = []
    for member in members:
        idx = np.flatnonzero(standing)
        start = time.perf_counter()
        if len(idx):
            standing[idx] = run(member, idx)
        seconds.append(time.perf_counter() - start)
    return standing, seconds


def ours(model, x: np.ndarray, y: np.ndarray, eps: float, l2: bool = False) -> tuple[np.ndarray, list[float]]:
    """Robust mask of robustops' standard ensemble, each member on the images the ones before
    left standing, and each member's seconds."""
    from robustops.config import EvalConfig
    from robustops.evaluation.scorecard import ensemble_for
    from robustops.inference import robust_mask

    cfg = EvalConfig(
        autoattack={"version": "standard", "eps": [] if l2 else [eps], "l2_eps": [eps] if l2 else []}
    )
    return cascade(
        len(y),
        ensemble_for(cfg, eps, 0, l2),
        lambda attack, idx: robust_mask(model, attack, x[idx], y[idx], batch_size=500),
    )


def theirs(
    model, x: np.ndarray, y: np.ndarray, eps: float, shipped: bool = False, norm: str = "Linf"
) -> tuple[np.ndarray, list[float]]:
    """Robust mask of torchattacks' standard version with the reference's settings (100 steps for
    APGD-CE, APGD-T and FAB-T) and each member's seconds, or ``shipped``:
    ``AutoAttack(version="standard")`` as torchattacks 3.3.0 builds it, whose members run its
    default of 10 steps. The members run as its MultiAttack runs them: each on the images every
    one before failed on (all of them for the first), the attacked images kept where they fool
    the model; timed one by one (:func:`cascade`)."""
    import torchattacks as ta

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if shipped:
        attack = ta.AutoAttack(model, norm=norm, eps=eps, version="standard", n_classes=10, seed=0)
        with torch.no_grad():
            return (model(attack(xt, yt)).argmax(1) == yt).numpy(), []
    members = [
        ta.APGD(model, norm=norm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        ta.APGDT(model, norm=norm, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
        ta.FAB(model, norm=norm, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0),
        ta.Square(model, norm=norm, eps=eps, n_queries=5000, n_restarts=1, seed=0),
    ]  # fmt: skip

    def run(attack, idx: np.ndarray) -> np.ndarray:
        adv = attack(xt[idx], yt[idx])
        with torch.no_grad():
            return (model(adv).argmax(1) == yt[idx]).numpy()

    return cascade(len(y), members, run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", nargs="+", default=["digits", "mnist", "rgb"], choices=["digits", "mnist", "rgb"]
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mnist-epochs", type=int, default=3)
    p.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    p.add_argument("--rgb-cache", type=Path, default=None, help="the RGB ResNet's weights, trained once")
    p.add_argument(
        "--images", type=int, default=None, help="test images per model (default: 200; 100 for rgb)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks  # noqa: F401 - both sides' imports before any timing
    from attack_speed import rgb_resnet, trained_model

    import robustops.evaluation.scorecard  # noqa: F401

    rows = []
    for name in args.models:
        start = time.perf_counter()
        if name == "digits":
            model, test = trained_model("baseline")
            n = args.images or 200
            x, y, eps = test.x[:n], test.y[:n], 0.1
        elif name == "mnist":
            model, x, y = _mnist(args.mnist_epochs, args.images or 200)
            eps = 0.3
        else:
            model, test = rgb_resnet(args.rgb_cache, 10, args.images or 100)
            x, y, eps = test.x, test.y, 2 / 255
        model = model.eval()
        l2 = args.norm == "L2"
        eps = L2_EPS[name] if l2 else eps
        trained = time.perf_counter() - start
        x, y = np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        with torch.no_grad():
            clean = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
        t = time.perf_counter()
        a, s_ours = ours(model, x, y, eps, l2)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        b, s_theirs = theirs(model, x, y, eps, norm=args.norm)
        t_theirs = time.perf_counter() - t
        shipped = theirs(model, x, y, eps, shipped=True, norm=args.norm)[0].mean()
        rows.append(
            (name, len(y), eps, clean, a.mean(), b.mean(), int((a != b).sum()), t_ours, t_theirs, shipped)
        )
        print(f"{name}: done ({trained:.0f} s to train): ours {a.mean():.3f} in {t_ours:.1f} s, torchattacks "
              f"{b.mean():.3f} in {t_theirs:.1f} s, shipped {shipped:.3f}", flush=True)  # fmt: skip
        print("  seconds per member (APGD-CE, APGD-T, FAB-T, Square): ours "
              + ", ".join(f"{v:.1f}" for v in s_ours) + "; torchattacks "
              + ", ".join(f"{v:.1f}" for v in s_theirs), flush=True)  # fmt: skip
    print(f"\n{args.norm}:\n| model | images | eps | clean | robustops standard | torchattacks, reference settings | "
          "diff (points) | images judged differently | robustops s | torchattacks s | ratio | "
          "torchattacks as shipped (10 steps) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, eps, clean, a, b, differ, ta, tb, shipped in rows:
        print(f"| {name} | {n} | {eps:.4g} | {clean:.3f} | {a:.3f} | {b:.3f} | {100 * (a - b):+.1f} | {differ} | "
              f"{ta:.1f} | {tb:.1f} | x{tb / ta:.2f} | {shipped:.3f} |")  # fmt: skip


def _mnist(epochs: int, n: int):
    """The small strided CNN trained with FGSM-RS at eps 0.3 for ``epochs`` on MNIST (as
    ``benchmarks/mnist.py`` trains it), and the first ``n`` test images."""
    from robustops.catalog import load_config
    from robustops.config import ModelConfig
    from robustops.data import Dataset, load_npz
    from robustops.data.split import split_indices
    from robustops.defences import Context, settings_from, train_defence

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    full, test = load_npz(data / "mnist_train.npz"), load_npz(data / "mnist_test.npz")
    tr, va, _ = split_indices(full.y, 5000 / len(full.y), 1 / len(full.y), seed=0)
    train = Dataset(full.x[tr], full.y[tr], full.classes, "mnist")
    val = Dataset(full.x[va][:1000], full.y[va][:1000], full.classes, "mnist")
    cfg = load_config(None, ["augment.policy=none", "train.progress=false"])
    ctx = Context(ModelConfig(name="cnn_strided"), cfg.train.model_copy(update={"batch_size": 100}), cfg.augment,
                  cfg.regularize, 0)  # fmt: skip
    defence = settings_from({"name": "fgsm_rs", "eps": 0.3, "epochs": epochs})
    model = train_defence(train, val, ctx, defence).model
    return model, test.x[:n], test.y[:n]


if __name__ == "__main__":
    main()
