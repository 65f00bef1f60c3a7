"""Corruption benchmarks read from files: each layout's reader gives the accuracies a direct
computation gives, the summary follows the published definitions, and bad files are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn

from robustops.config import CorruptionBenchmarkConfig, EvalConfig
from robustops.data import Dataset
from robustops.data.corruption_files import benchmark_batches, check_benchmark
from robustops.errors import DataValidationError
from robustops.evaluation.corruption import benchmark_accuracy, benchmark_summary
from robustops.evaluation.scorecard import ScoreInputs, evaluate, metric_intervals

CLASSES = ["a", "b", "c", "d"]


def _model(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 8 * 8, 4)).eval()


def _direct(model: nn.Module, x_nhwc: np.ndarray, y: np.ndarray) -> float:
    x = torch.from_numpy(x_nhwc.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


@pytest.fixture()
def cifar_c(tmp_path):
    """Three corruptions of 20 RGB 8x8 images at five severities, CIFAR-10-C's layout."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 20)
    np.save(tmp_path / "labels.npy", np.tile(y, 5))  # as CIFAR-10-C: a label for each of the 5n rows
    arrays = {}
    for c in ("fog", "snow", "pixelate"):
        arrays[c] = rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8)
        np.save(tmp_path / f"{c}.npy", arrays[c])
    return tmp_path, arrays, y


def test_cifar_c_accuracies_equal_a_direct_computation_per_corruption_and_severity(cifar_c):
    root, arrays, y = cifar_c
    model = _model(3)
    cfg = CorruptionBenchmarkConfig(path=str(root), layout="cifar_c", corruptions=list(arrays))
    for c, x in arrays.items():
        got = benchmark_accuracy(model, cfg, c, (3, 8, 8), CLASSES, batch_size=7)
        for s in range(1, 6):
            assert got[f"corruption_benchmark/{c}/s{s}/acc"] == pytest.approx(
                _direct(model, x[(s - 1) * 20 : s * 20], y)
            )
            assert got[f"corruption_benchmark/{c}/s{s}/n"] == 20
    # A subsample takes the same images at every corruption and severity.
    small = cfg.model_copy(update={"max_images": 6})
    picked = [np.concatenate([b for _, b in benchmark_batches(small, c, s, (3, 8, 8), CLASSES, 3)])
              for c in arrays for s in (1, 5)]  # fmt: skip
    assert all(len(p) == 6 and np.array_equal(p, picked[0]) for p in picked)


def test_imagenet_c_folders_are_read_by_class_name_and_resized_to_the_model(tmp_path):
    rng = np.random.default_rng(1)
    model = _model(3)
    cfg = CorruptionBenchmarkConfig(
        path=str(tmp_path), layout="imagenet_c", corruptions=["fog"], severities=[1, 3]
    )
    expected = {}
    for s in (1, 3):
        xs, ys = [], []
        for name in ["c", "a"]:  # a subset of the classes, any order
            folder = tmp_path / "fog" / str(s) / name
            folder.mkdir(parents=True)
            for i in range(3):
                im = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(im).save(folder / f"{i}.png")
                xs.append(im)
                ys.append(CLASSES.index(name))
        expected[s] = _direct(model, np.stack(xs), np.array(ys))
    got = benchmark_accuracy(model, cfg, "fog", (3, 8, 8), CLASSES, batch_size=4)
    assert got == {
        "corruption_benchmark/fog/s1/acc": pytest.approx(expected[1]),
        "corruption_benchmark/fog/s1/n": 6.0,
        "corruption_benchmark/fog/s3/acc": pytest.approx(expected[3]),
        "corruption_benchmark/fog/s3/n": 6.0,
    }
    (tmp_path / "fog" / "1" / "zebra").mkdir()
    with pytest.raises(DataValidationError, match="class 'zebra' is not one of the model's classes"):
        check_benchmark(cfg, (3, 8, 8), CLASSES)


def test_mnist_c_has_one_severity_per_corruption(tmp_path):
    rng = np.random.default_rng(2)
    model = _model(1)
    x = rng.integers(0, 256, (15, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 4, 15)
    (tmp_path / "shear").mkdir()
    np.save(tmp_path / "shear" / "test_images.npy", x)
    np.save(tmp_path / "shear" / "test_labels.npy", y)
    cfg = CorruptionBenchmarkConfig(path=str(tmp_path), layout="mnist_c", corruptions=["shear"])
    assert cfg.levels == [1]
    got = benchmark_accuracy(model, cfg, "shear", (1, 8, 8), CLASSES)
    assert got["corruption_benchmark/shear/s1/acc"] == pytest.approx(_direct(model, x, y))
    assert CorruptionBenchmarkConfig(path=".", layout="mnist_c").names[0] == "shot_noise"


def test_the_summary_follows_robustbench_and_hendrycks_mce_on_a_hand_table():
    cfg = CorruptionBenchmarkConfig(
        path=".",
        layout="cifar_c",
        corruptions=["fog", "snow"],
        severities=[1, 2],
        reference_errors={"fog": [0.2, 0.4, 0.5, 0.6, 0.7], "snow": 0.5},
    )
    acc = {"fog": {1: 0.9, 2: 0.7}, "snow": {1: 0.8, 2: 0.6}}
    metrics = {f"corruption_benchmark/{c}/s{s}/acc": a for c, by in acc.items() for s, a in by.items()}
    metrics |= {f"corruption_benchmark/{c}/s{s}/n": 50.0 for c in acc for s in (1, 2)}
    out = benchmark_summary(metrics, cfg)
    assert out["corruption_benchmark/mean_acc"] == pytest.approx(0.75)
    assert out["corruption_benchmark/fog/acc"] == pytest.approx(0.8)
    # fog: (0.1 + 0.3) / (0.2 + 0.4), its severities' own reference errors; snow: mean error 0.3 / 0.5.
    assert out["corruption_benchmark/fog/ce"] == pytest.approx(0.4 / 0.6)
    assert out["corruption_benchmark/snow/ce"] == pytest.approx(0.6)
    assert out["corruption_benchmark/mce"] == pytest.approx((0.4 / 0.6 + 0.6) / 2)
    assert out["corruption_benchmark/n"] == 50
    with pytest.raises(ValidationError, match="reference_errors has no error for snow"):
        CorruptionBenchmarkConfig(path=".", layout="cifar_c", corruptions=["fog", "snow"],
                                  reference_errors={"fog": 0.5})  # fmt: skip


def test_the_scorecard_scores_the_benchmark_as_parts_with_intervals(cifar_c):
    root, arrays, y = cifar_c
    model = _model(3)
    rng = np.random.default_rng(3)
    test = Dataset(rng.random((12, 3, 8, 8), dtype=np.float32), np.arange(12) % 4, CLASSES, "test")
    cb = CorruptionBenchmarkConfig(
        path=str(root), layout="cifar_c", corruptions=["fog", "snow"], max_images=10
    )
    ev = EvalConfig(eps=[], l2_eps=[], corruptions=["fog"], severities=[1], corruption_benchmark=cb,
                    autoattack={"enabled": False}, specification={"checks": []})  # fmt: skip
    card = evaluate(ScoreInputs(model, test, ev, 0, "cpu", test, test))
    m = card.metrics
    assert {
        "corruption_benchmark/fog/acc",
        "corruption_benchmark/snow/acc",
        "corruption_benchmark/mean_acc",
    } <= set(m)
    assert m["corruption_benchmark/n"] == 10 and "corruption_benchmark/mce" not in m
    assert m["corruption_benchmark/mean_acc"] == pytest.approx(
        np.mean([m[f"corruption_benchmark/{c}/s{s}/acc"] for c in ("fog", "snow") for s in range(1, 6)])
    )
    assert "corruption_benchmark/mean_acc" in metric_intervals(m)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda root: (root / "snow.npy").unlink(), "snow.npy is missing"),
        (
            lambda root: (root / "snow.npy").write_bytes(b"not an array"),
            "snow.npy is not a readable .npy array",
        ),
        (
            lambda root: np.save(root / "labels.npy", np.full(100, 7)),
            "labels must be class indices 0..3, got 7..7",
        ),
        (
            lambda root: np.save(root / "snow.npy", np.zeros((100, 9, 9, 3), np.uint8)),
            "images are 3x9x9, the model takes 3x8x8",
        ),
        (
            lambda root: np.save(root / "snow.npy", np.zeros((99, 8, 8, 3), np.uint8)),
            "99 rows are not 5 severities",
        ),
    ],
    ids=["missing", "corrupt", "labels", "shape", "rows"],
)
def test_each_bad_benchmark_file_is_named(cifar_c, break_it, message):
    root, arrays, _ = cifar_c
    cfg = CorruptionBenchmarkConfig(path=str(root), layout="cifar_c", corruptions=list(arrays))
    check_benchmark(cfg, (3, 8, 8), CLASSES)
    break_it(root)
    with pytest.raises(DataValidationError, match=message):
        check_benchmark(cfg, (3, 8, 8), CLASSES)


def test_a_gate_may_name_the_benchmark_only_when_it_is_scored(cifar_c):
    from robustops.catalog import check_gate, load_config
    from robustops.errors import ConfigError

    root, _, _ = cifar_c
    gate = ["gate.min={corruption_benchmark/mean_acc: 0.5}", "gate.max={corruption_benchmark/mce: 1.0}"]
    bench = f"evaluation.corruption_benchmark={{path: {root}, layout: cifar_c, corruptions: [fog, snow], reference_errors: {{fog: 0.5, snow: 0.5}}}}"
    check_gate(load_config(None, [*gate, bench]), (3, 8, 8), CLASSES)
    with pytest.raises(ConfigError, match="it comes from evaluation.corruption_benchmark"):
        check_gate(load_config(None, gate), (3, 8, 8), CLASSES)
