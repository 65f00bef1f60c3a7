"""Does the data stage help? Two experiments on the default digits (run by hand, never by tests).

    .venv/bin/python benchmarks/data_stage.py synthesis      # rare class: no synthesis vs each generator
    .venv/bin/python benchmarks/data_stage.py augmentation   # held-out corruptions: none vs corruptions vs augmix

synthesis: the training split's class '3' is cut to 5 % of its samples (validation and test stay
whole); the model is trained with the default config without synthesis and with each generator.
Reports the rare class's test recall and the overall test accuracy, mean over seeds.

augmentation: the model is trained with each augmentation policy and scored on the held-out
evaluation corruptions (never trained on) at severities 1-5.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from robustops.catalog import load_config
from robustops.config import AugmentConfig
from robustops.data import load_dataset, split_dataset, thin_classes
from robustops.data.synthesis import GENERATORS, synthesize
from robustops.evaluation import confusion_matrix, per_class_recall
from robustops.evaluation.corruption import corruption_accuracy, corruption_metrics
from robustops.inference import predict
from robustops.training import train_baseline
from robustops.training.augment import make_loss

RARE, KEEP = "3", 0.05


def synthesis(seeds: list[int], sets: list[str]) -> list[dict]:
    rows = []
    base = load_config(None, ["train.progress=false", *sets])
    ds = load_dataset(base.data)
    for seed in seeds:
        split = split_dataset(ds, base.data.val_fraction, base.data.test_fraction, seed)
        train = thin_classes(split.train, {RARE: KEEP}, seed)
        for gen in ["none", *GENERATORS.names()]:
            start = time.perf_counter()
            cfg = base.synthesis.model_copy(
                update={"enabled": gen != "none", "generator": gen if gen != "none" else "interpolate"}
            )
            data = synthesize(train, cfg, seed).train
            model = train_baseline(
                data, split.val, base.model, base.train, seed, loss_fn=make_loss(base.augment, seed)
            ).model
            pred = predict(model, split.test.x).argmax(1)
            recall = per_class_recall(confusion_matrix(split.test.y, pred, ds.num_classes))
            rows.append({
                "seed": seed, "generator": gen, "rare_train": int((train.y == int(RARE)).sum()),
                "rare_recall": float(recall[ds.classes.index(RARE)]), "acc": float((pred == split.test.y).mean()),
                "seconds": time.perf_counter() - start,
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    print(f"\nclass {RARE!r} cut to {KEEP:.0%} of its training samples; mean over seeds {seeds}\n")
    print("| generator | rare-class recall | gain (points) | overall accuracy | change (points) | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    base = {x["seed"]: x for x in rows if x["generator"] == "none"}
    for gen in ["none", *GENERATORS.names()]:
        r = [x for x in rows if x["generator"] == gen]
        gain = 100 * np.mean([x["rare_recall"] - base[x["seed"]]["rare_recall"] for x in r])
        change = 100 * np.mean([x["acc"] - base[x["seed"]]["acc"] for x in r])
        print(f"| {gen} | {np.mean([x['rare_recall'] for x in r]):.4f} | {gain:+.1f} | {np.mean([x['acc'] for x in r]):.4f} | "
              f"{change:+.2f} | {np.mean([x['seconds'] for x in r]):.1f} |")  # fmt: skip
    return rows


def augmentation(seeds: list[int], sets: list[str], policies: list[str]) -> list[dict]:
    rows = []
    base = load_config(None, ["train.progress=false", *sets])
    ds = load_dataset(base.data)
    ev = base.evaluation
    for seed in seeds:
        split = split_dataset(ds, base.data.val_fraction, base.data.test_fraction, seed)
        for policy in policies:
            jsd = policy == "augmix+jsd"
            # model_validate, not model_copy(update=...): the latter skips validation and enum coercion.
            aug = AugmentConfig.model_validate(
                base.augment.model_dump() | {"policy": policy.split("+")[0], "jsd": jsd}
            )
            start = time.perf_counter()
            model = train_baseline(
                split.train, split.val, base.model, base.train, seed, loss_fn=make_loss(aug, seed)
            ).model
            secs = time.perf_counter() - start
            acc = corruption_accuracy(model, split.test.x, split.test.y, ev.corruptions, ev.severities, seed)
            m = corruption_metrics(acc)
            clean = float((predict(model, split.test.x).argmax(1) == split.test.y).mean())
            by_sev = {s: float(np.mean([acc[n][s] for n in acc])) for s in ev.severities}
            rows.append({"seed": seed, "policy": policy, "clean": clean, "corruption_mean": m["corruption/mean_acc"],
                         "by_severity": by_sev, "per_corruption": {n: m[f"corruption/{n}/acc"] for n in acc},
                         "seconds": secs})  # fmt: skip
            print(json.dumps(rows[-1]))
    print(f"\nheld-out corruptions {ev.corruptions}, severities {ev.severities}; mean over seeds {seeds}\n")
    print(
        "| policy | clean acc | held-out corruption acc | "
        + " | ".join(f"s{s}" for s in ev.severities)
        + " | train s |"
    )
    print("|---|---:|---:|" + "---:|" * (len(ev.severities) + 1))
    for policy in policies:
        r = [x for x in rows if x["policy"] == policy]
        sev = " | ".join(f"{np.mean([x['by_severity'][s] for x in r]):.4f}" for s in ev.severities)
        print(f"| {policy} | {np.mean([x['clean'] for x in r]):.4f} | {np.mean([x['corruption_mean'] for x in r]):.4f} | "
              f"{sev} | {np.mean([x['seconds'] for x in r]):.1f} |")  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("experiment", choices=["synthesis", "augmentation"])
    # Ten seeds for synthesis: the rare class has 37 test images and training noise moves its
    # recall by +-8 points per seed, so a 3-seed mean cannot resolve a 10-point effect.
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0-9 (synthesis), 0-4 (augmentation)")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override, as in the CLI")
    p.add_argument("--policies", nargs="+", default=["none", "corruptions", "augmix", "augmix+jsd"])
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    if args.seeds is None:
        args.seeds = list(range(10 if args.experiment == "synthesis" else 5))
    if args.experiment == "synthesis":
        rows = synthesis(args.seeds, args.sets)
    else:
        rows = augmentation(args.seeds, args.sets, args.policies)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
