"""Bring your own model on real RGB data: a user's small ResNet, audited from its saved file, then
hardened by robustops (run by hand, never by tests; the data lives outside the project, in
../shared/data).

    .venv/bin/python benchmarks/byo_model.py [--data PATH] [--defence pgd_at] [--user-epochs 20]
        [--finetune-epochs 5] [--max-samples 500] [--set KEY=VALUE ...]

Stages, each timed, all on this machine's CPUs:

1. As a user would, outside robustops: train a small ResNet (``byo_net.py``, three stages of
   residual blocks, 16-32-64 channels) on one half of the CIFAR-10 set (4,440 images, their own
   normalization), save its ``state_dict`` with ``torch.save``.
2. Audit, from the saved file: ``robustops evaluate --model byo_net.py:ResNet --set
   model.weights=... --set model.preprocess.mean/std=...`` on the other half's test part.
3. Harden: ``robustops run`` on the other half (its own train/validation split, the same test
   part as a fixed test file) with ``model.source`` and the defence, fine-tuning from the saved
   weights; the baseline of that run is the user's model as it is.

Scored (the run's scorecard): clean accuracy and the AutoAttack-grade ensemble (APGD-CE,
APGD-DLR, Square with 1,000 queries; worst case per image) at eps 2/255 and 8/255 on
``--max-samples`` test images, each with n and its 95 % Wilson interval.
Targets: the hardened model's AutoAttack-grade accuracy at 2/255 at least 20 points above the
user's model, its clean accuracy at most 10 points below, everything within 60 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn

from robustops.names import number

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10_test_jpeg.npz"
EPS = {"2/255": 2 / 255, "8/255": 8 / 255}
# The user's own normalization: CIFAR-10's channel statistics, as training scripts declare them.
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]

NET = '''"""A user's small ResNet for 32x32 RGB images (what a training script would define)."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = Block(width, width, 1)
        self.layer2 = Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 4 * width, 2)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))
'''


def wilson(acc: float, n: int) -> str:
    k = round(acc * n)
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{acc:.3f} ({ci.low:.3f}-{ci.high:.3f}, n={n})"


def user_trains(folder: Path, x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    """Stage 1, as a user's script would: their own normalization, flips and crops, SGD."""
    sys.path.insert(0, str(folder))
    from byo_net import ResNet  # noqa: PLC0415 - the file this benchmark just wrote

    torch.manual_seed(0)
    net = ResNet()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * -(-len(ys) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps, pct_start=0.3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(ys), generator=gen).split(128):
            xb = xs[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            pad = nn.functional.pad(xb, (4, 4, 4, 4), mode="reflect")
            i, j = torch.randint(0, 9, (2,), generator=gen).tolist()
            xb = pad[:, :, i : i + 32, j : j + 32]
            loss = nn.functional.cross_entropy(net((xb - mean) / std), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    torch.save(net.state_dict(), folder / "byo_weights.pt")
    with torch.no_grad():
        return float((net((xs - mean) / std).argmax(1) == ys).float().mean())


def robustops(args: list[str], cwd: Path) -> None:
    env = os.environ | {"PREFECT_LOCAL_STORAGE_PATH": str(cwd / "prefect-results"), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"robustops {args[0]} failed:\n{done.stderr[-3000:]}")


def metrics_of(tmp: Path, kind: str) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = c.get_experiment_by_name("robustops")
    runs = c.search_runs([exp.experiment_id], f"tags.`robustops.kind` = '{kind}'")
    return {r.data.tags.get("robustops.model", r.info.run_name): dict(r.data.metrics) for r in runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--defence", default="pgd_at", choices=["pgd_at", "trades"])
    p.add_argument("--user-epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--max-samples", type=int, default=500)
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override, as in the CLI")
    args = p.parse_args()
    with np.load(args.data) as f:
        x = f["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # channels-last uint8 -> N,3,32,32
        y = f["y"].astype(np.int64)
    half = len(y) // 2
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "byo_net.py").write_text(NET)
        start = time.perf_counter()
        train_acc = user_trains(tmp, x[:half], y[:half], args.user_epochs)
        times["1. user trains (outside robustops)"] = time.perf_counter() - start
        # The other half: robustops' data (train + validation) and a fixed test part.
        other_x, other_y = x[half:], y[half:]
        test = np.arange(len(other_y)) % 4 == 0
        np.savez(tmp / "harden.npz", x=other_x[~test], y=other_y[~test])
        np.savez(tmp / "test.npz", x=other_x[test], y=other_y[test])
        eps = sorted(EPS.values())
        common = [
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"mlflow.artifact_root={tmp}/mlartifacts",
            f"model.preprocess.mean={MEAN}",
            f"model.preprocess.std={STD}",
            f"evaluation.eps={eps}",
            f"evaluation.autoattack.eps={eps}",
            "evaluation.l2_eps=[0.5]",
            f"evaluation.max_samples={args.max_samples}",
            *args.sets,
        ]
        source = [f"{tmp / 'byo_net.py'}:ResNet", f"model.weights={tmp / 'byo_weights.pt'}"]
        setting = lambda items: [a for s in items for a in ("--set", s)]  # noqa: E731
        start = time.perf_counter()
        robustops(
            [
                "evaluate",
                "--model",
                source[0],
                "--data",
                str(tmp / "test.npz"),
                *setting([source[1], *common]),
            ],
            tmp,
        )
        times["2. audit (robustops evaluate)"] = time.perf_counter() - start
        harden = [
            "data.source=npz",
            f"data.path={tmp / 'harden.npz'}",
            f"data.test_path={tmp / 'test.npz'}",
            "data.val_fraction=0.1",
            "synthesis.enabled=false",
            "augment.policy=none",
            "adversarial_set={enabled: false}",
            f"model.source={source[0]}",
            source[1],
            f"finetune={{epochs: {args.finetune_epochs}, lr: 0.01, schedule: cosine}}",
            f"defences=[{{name: {args.defence}, eps: {2 / 255}}}]",
            # The gate on the radius hardened for (the default gate's limits name eps 0.1).
            f"gate.primary=adv/autoattack/eps_{number(eps[0])}/acc",
            "gate.min={}",
        ]
        start = time.perf_counter()
        robustops(["run", *setting([*harden, *common])], tmp)
        times["3. harden (robustops run)"] = time.perf_counter() - start
        audit = next(iter(metrics_of(tmp, "evaluation").values()))
        models = metrics_of(tmp, "model")
        shutil.rmtree(tmp / "mlartifacts", ignore_errors=True)
    keys = {"clean": "clean/acc"} | {
        f"AutoAttack-grade {k}": f"adv/autoattack/eps_{number(v)}/acc" for k, v in EPS.items()
    }
    print(f"user's model: train accuracy {train_acc:.3f} after {args.user_epochs} epochs on {half} images\n")
    print("| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    rows = {"user's model, audited (evaluate)": audit, "user's model (run's baseline)": models["baseline"],
            f"hardened ({args.defence})": models[args.defence]}  # fmt: skip
    for name, m in rows.items():
        cells = []
        for key in keys.values():
            n = int(m.get("adv/n" if key.startswith("adv/") else "clean/n", 0))
            cells.append(wilson(m[key], n) if key in m and n else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    base, hard = models["baseline"], models[args.defence]
    aa = keys["AutoAttack-grade 2/255"]
    gain, loss = hard[aa] - base[aa], base["clean/acc"] - hard["clean/acc"]
    total = sum(times.values())
    print("\n| stage | seconds |\n|---|---:|")
    for stage, s in times.items():
        print(f"| {stage} | {s:.0f} |")
    print(f"| total | {total:.0f} |\n")
    print(
        f"AutoAttack-grade 2/255: {gain * 100:+.1f} points (target >= +20): {'met' if gain >= 0.2 else 'NOT met'}"
    )
    print(f"clean: {-loss * 100:+.1f} points (target >= -10): {'met' if loss <= 0.1 else 'NOT met'}")
    print(
        f"time: {total / 60:.1f} min on {os.cpu_count()} cores (target <= 60): {'met' if total <= 3600 else 'NOT met'}"
    )
    print(json.dumps({"times": times, "gain_2_255": gain, "clean_loss": loss}))


if __name__ == "__main__":
    main()
