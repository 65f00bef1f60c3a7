"""Adversarial sets: generation, the .npz round trip, bad files, and the Prefect task's body."""

import json
import zipfile

import numpy as np
import pytest
import torch

from adapters.caching import fingerprint
from robustops import data
from robustops.attacks import FGSM, PGD, PGDL2, build_attack
from robustops.data.adversarial import AdversarialSet, generate, load_npz, save_npz
from robustops.errors import DataValidationError
from tasks.adversarial import generate_adversarial_set

N = 96


@pytest.fixture(scope="module")
def aset(trained, digits_split) -> AdversarialSet:
    test = digits_split.test
    index = np.arange(10, 10 + N)
    attack = PGDL2(0.8, steps=5, seed=1)
    return generate(
        trained.model, attack, test.x[index], test.y[index], test.classes, batch_size=40, index=index
    )


def _predict(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def test_generate_flags_match_predictions_and_rows_point_at_the_source(aset, trained, digits_split):
    test = digits_split.test
    assert aset.x.shape == (N, *test.shape) and aset.x.dtype == np.float32
    assert aset.y.dtype == np.int64 and aset.x_clean_index.dtype == np.int64 and aset.robust.dtype == bool
    assert np.array_equal(aset.robust, _predict(trained.model, aset.x) == aset.y)
    assert np.array_equal(test.y[aset.x_clean_index], aset.y)
    norms = np.linalg.norm((aset.x - test.x[aset.x_clean_index]).reshape(N, -1), axis=1)
    assert (norms <= 0.8 + 1e-5).all() and norms.max() > 0.5  # the attack used its budget
    assert aset.x.min() >= 0 and aset.x.max() <= 1
    assert aset.settings == PGDL2(0.8, steps=5, seed=1).settings()
    assert aset.classes == test.classes
    assert not aset.robust.all()  # the MLP is not robust at this radius


def test_generate_attacks_misclassified_inputs_too_and_keeps_linf_budget(trained, digits_split):
    test = digits_split.test
    wrong = np.flatnonzero(_predict(trained.model, test.x) != test.y)
    assert len(wrong)
    out = generate(trained.model, FGSM(0.1), test.x[wrong], test.y[wrong], test.classes)
    assert len(out) == len(wrong) and np.array_equal(out.x_clean_index, np.arange(len(wrong)))
    assert np.abs(out.x - test.x[wrong]).max() <= 0.1 + 1e-6
    assert (out.x != test.x[wrong]).any()


def test_generate_restores_train_mode_and_checks_lengths(trained, digits_split):
    test = digits_split.test
    trained.model.train()
    try:
        generate(trained.model, FGSM(0.1), test.x[:8], test.y[:8], test.classes)
        assert trained.model.training
    finally:
        trained.model.eval()
    with pytest.raises(ValueError, match="one row per input"):
        generate(trained.model, FGSM(0.1), test.x[:8], test.y[:7], test.classes)


def test_npz_round_trip_is_exact(aset, tmp_path):
    path = save_npz(aset, tmp_path / "deep" / "dir" / "adv.npz")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["adv.npz"]  # no temp file left
    back = load_npz(path)
    for field in ("x", "y", "x_clean_index", "robust"):
        a, b = getattr(aset, field), getattr(back, field)
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    assert back.settings == aset.settings and back.classes == aset.classes


def test_file_holds_no_pickles_and_loads_as_training_data(aset, tmp_path):
    path = save_npz(aset, tmp_path / "adv.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["x", "y", "index", "robust", "classes", "settings"])
        assert all(npz[k].dtype != object for k in npz.files)
        assert json.loads(str(npz["settings"])) == aset.settings
    ds = data.load_npz(path)
    assert np.array_equal(ds.x, aset.x)
    assert [ds.classes[i] for i in ds.y] == [str(v) for v in aset.y]  # labels survive (re-indexed)


def test_empty_set_round_trips(trained, digits_split, tmp_path):
    test = digits_split.test
    empty = generate(trained.model, FGSM(0.1), test.x[:0], test.y[:0], test.classes)
    assert empty.x.shape == (0, *test.shape)
    back = load_npz(save_npz(empty, tmp_path / "empty.npz"))
    assert back.x.shape == (0, *test.shape) and back.classes == test.classes


@pytest.mark.parametrize(
    "case", ["missing", "folder", "garbage", "truncated", "no_keys", "pickled", "bad_json"]
)
def test_bad_files_raise_data_validation_error(case, aset, tmp_path):
    path = tmp_path / "adv.npz"
    good = save_npz(aset, tmp_path / "good.npz")
    if case == "folder":
        path.mkdir()
    elif case == "garbage":
        path.write_bytes(b"garbage" * 20)
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:200])
    elif case == "no_keys":
        np.savez(path, x=aset.x, y=aset.y)  # plain training data, not an adversarial set
    elif case == "pickled":
        with np.load(good) as npz:
            arrays = dict(npz.items())
        arrays["classes"] = np.array(aset.classes, dtype=object)
        np.savez(path, **arrays)
    elif case == "bad_json":
        with np.load(good) as npz:
            arrays = dict(npz.items())
        arrays["settings"] = np.array("{not json")
        np.savez(path, **arrays)
    with pytest.raises(DataValidationError) as err:
        load_npz(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "save_npz" in msg  # one line: the file and the fix
    expected = {
        "missing": "not found",
        "folder": "is a folder",
        "garbage": "no zip header",
        "truncated": "truncated or corrupt",
        "no_keys": "missing array(s) index, robust, classes, settings",
        "pickled": "pickled Python objects",
        "bad_json": "malformed",
    }
    assert expected[case] in msg


def test_zip_without_arrays_is_rejected(tmp_path):
    path = tmp_path / "adv.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(DataValidationError, match="missing array"):
        load_npz(path)


def test_build_attack_passes_only_what_each_attack_takes():
    assert build_attack("fgsm", 0.1, 10, 2.5, 3).settings() == FGSM(0.1).settings()
    pgd = build_attack("pgd_linf", 0.1, 10, 2.0, 3)
    assert isinstance(pgd, PGD) and pgd.steps == 10 and pgd.seed == 3
    assert pgd.step_size == pytest.approx(2.0 * 0.1 / 10)
    l2 = build_attack("pgd_l2", 1.5, 4, 2.5, 7)
    assert isinstance(l2, PGDL2) and l2.step_size == pytest.approx(2.5 * 1.5 / 4)
    assert build_attack("pgd_l2", 0.0, 4, 2.5, 7).eps == 0  # no zero step size error
    with pytest.raises(KeyError, match="known"):
        build_attack("nope", 0.1, 10, 2.5, 0)


def test_task_body_subsamples_with_a_seed(trained, digits_split):
    test = digits_split.test
    args = dict(attack_name="pgd_linf", eps=0.1, steps=5, rel_step=2.5, seed=4, device="cpu", max_samples=50)
    out = generate_adversarial_set.fn(trained.model, test, **args)
    again = generate_adversarial_set.fn(trained.model, test, **args)
    assert len(out) == 50 and np.array_equal(out.x_clean_index, np.sort(out.x_clean_index))
    assert np.array_equal(out.x_clean_index, again.x_clean_index) and np.array_equal(out.x, again.x)
    assert np.array_equal(test.y[out.x_clean_index], out.y)
    assert np.abs(out.x - test.x[out.x_clean_index]).max() <= 0.1 + 1e-6
    assert out.settings["attack"] == "pgd_linf" and out.settings["seed"] == 4
    full = generate_adversarial_set.fn(
        trained.model, test, **(args | {"attack_name": "fgsm", "max_samples": None})
    )
    assert np.array_equal(full.x_clean_index, np.arange(len(test.y)))
    # The cache key must be computable from these inputs, or Prefect would fail the task.
    assert fingerprint({"model": trained.model, "test": test, **args})
