"""Defence layer 1: every malformed input is rejected with a clear, one-line reason."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustops.config import DataConfig
from robustops.data import load_dataset, load_folder, load_npz, split_dataset
from robustops.data.loaders import resize
from robustops.errors import DataValidationError


def _x(n=30, shape=(8, 8), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape)).astype(dtype)


def _y(n=30, k=3):
    return np.arange(n) % k


def _npz(tmp_path: Path, name="d.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(source="npz", path=path, **kw)


def _img(path: Path, size=(8, 8), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode=None).save(path)


def _folder(root: Path, classes=("cat", "dog"), n=4, size=(8, 8), mode="L") -> Path:
    for c in classes:
        for i in range(n):
            _img(root / c / f"{i}.png", size, mode, seed=i)
    return root


# ---- accepted inputs -------------------------------------------------------------------------


def test_digits_are_canonical(digits):
    assert digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == np.float32
    assert digits.x.min() >= 0 and digits.x.max() <= 1
    assert digits.num_classes == 10 and digits.y.dtype == np.int64


def test_npz_uint8_nhw_is_scaled_to_unit_range(tmp_path):
    x = _x()
    ds = load_dataset(_cfg(_npz(tmp_path, x=x, y=_y())))
    assert ds.x.shape == (30, 1, 8, 8) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[:, 0], x / 255.0, atol=1e-6)


def test_npz_float_nchw_rgb_and_label_remap(tmp_path):
    x = _x(shape=(3, 10, 12)).astype(np.float32) / 255
    y = np.array([3, 7, 9] * 10)
    ds = load_dataset(_cfg(_npz(tmp_path, x=x, y=y)))
    assert ds.shape == (3, 10, 12)
    assert ds.classes == ["3", "7", "9"]
    assert set(ds.y) == {0, 1, 2}
    assert ds.counts() == {"3": 10, "7": 10, "9": 10}


def test_integral_float_labels_are_accepted(tmp_path):
    ds = load_dataset(_cfg(_npz(tmp_path, x=_x(), y=_y().astype(np.float64))))
    assert ds.y.dtype == np.int64


def test_resize_and_channel_conversion(tmp_path):
    ds = load_dataset(_cfg(_npz(tmp_path, x=_x(), y=_y()), image_size=16, channels=3))
    assert ds.shape == (3, 16, 16)
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    np.testing.assert_array_equal(ds.x[:, 0], ds.x[:, 1])  # gray -> RGB copies the channel


def test_resize_keeps_constant_images_constant():
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    np.testing.assert_allclose(resize(x, (20, 12)), 0.5, atol=1e-6)


def test_image_folder_gray_and_rgb(tmp_path):
    ds = load_folder(_folder(tmp_path / "gray"))
    assert ds.classes == ["cat", "dog"] and ds.shape == (1, 8, 8) and len(ds.y) == 8
    (tmp_path / "gray" / ".DS_Store").write_text("ignored")
    rgb = load_folder(_folder(tmp_path / "rgb", mode="RGB", size=(10, 6)))
    assert rgb.shape == (3, 6, 10)


def test_image_folder_mixed_sizes_with_resize(tmp_path):
    root = _folder(tmp_path / "d", n=3)
    _img(root / "cat" / "big.jpg", size=(12, 12))
    ds = load_dataset(DataConfig(source="folder", path=root, image_size=8))
    assert ds.shape == (1, 8, 8) and len(ds.y) == 7


def test_split_is_stratified_disjoint_complete_and_seeded(digits):
    a = split_dataset(digits, 0.15, 0.2, seed=1)
    b = split_dataset(digits, 0.15, 0.2, seed=1)
    c = split_dataset(digits, 0.15, 0.2, seed=2)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    assert sum(a.sizes().values()) == len(digits.y)
    for part, frac in ((a.test, 0.2), (a.val, 0.15)):
        share = np.bincount(part.y, minlength=10) / np.bincount(digits.y)
        assert np.all(np.abs(share - frac) < 0.02)  # every class in proportion
    keys = [{x.tobytes() for x in p.x} for p in (a.train, a.val, a.test)]
    # digits has a few duplicate images; allow those but nothing systematic
    assert len(keys[0] & keys[2]) < 5 and len(keys[1] & keys[2]) < 5


def test_split_keeps_every_class_in_every_part_at_the_minimum(tmp_path):
    ds = load_dataset(_cfg(_npz(tmp_path, x=_x(n=9), y=np.arange(9) % 3)))
    sp = split_dataset(ds, 0.15, 0.2, seed=0)
    for part in (sp.train, sp.val, sp.test):
        assert set(part.y) == {0, 1, 2}


# ---- rejected inputs: each error names the problem and the fix ------------------------------

BAD_NPZ = {
    "wrong keys": (dict(images=_x(), labels=_y()), "missing array(s) x, y (found: images, labels)"),
    "missing y": (dict(x=_x()), "missing array(s) y"),
    "wrong rank": (dict(x=np.zeros((30, 64), np.uint8), y=_y()), "rank 2"),
    "rank 5": (dict(x=np.zeros((30, 1, 1, 8, 8), np.uint8), y=_y()), "rank 5"),
    "two channels": (dict(x=np.zeros((30, 2, 8, 8), np.uint8), y=_y()), "2 channels"),
    "channels last": (dict(x=np.zeros((30, 8, 8, 3), np.uint8), y=_y()), "channels-last"),
    "tiny images": (dict(x=np.zeros((30, 2, 2), np.uint8), y=_y()), "at least 4x4"),
    "no images": (dict(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, int)), "no images"),
    "length mismatch": (dict(x=_x(), y=_y(29)), "30 images but 29 labels"),
    "nan pixels": (dict(x=np.where(np.eye(8) > 0, np.nan, 0.5)[None].repeat(30, 0), y=_y()), "NaN or inf"),
    "inf pixels": (dict(x=np.full((30, 8, 8), np.inf), y=_y()), "NaN or inf"),
    "float out of range": (dict(x=_x().astype(np.float32), y=_y()), "divide by 255"),
    "negative floats": (dict(x=-np.ones((30, 8, 8), np.float32), y=_y()), "rescale to [0, 1]"),
    "int16 pixels": (dict(x=_x().astype(np.int16), y=_y()), "cast to uint8"),
    "bool pixels": (dict(x=np.zeros((30, 8, 8), bool), y=_y()), "dtype bool"),
    "string pixels": (dict(x=np.array(["a"] * 30), y=_y()), "dtype <U1"),
    "fractional labels": (dict(x=_x(), y=_y() + 0.5), "not integers"),
    "string labels": (dict(x=_x(), y=np.array(["a", "b", "c"] * 10)), "dtype <U1"),
    "negative labels": (dict(x=_x(), y=_y() - 1), "negative values"),
    "2-d labels": (dict(x=_x(), y=np.zeros((30, 2), int)), "one integer per image"),
    "one class": (dict(x=_x(), y=np.zeros(30, int)), "at least 2"),
    "class too small": (dict(x=_x(), y=np.r_[np.zeros(28, int), 1, 1]), "class 1: 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_is_rejected_with_a_reason(tmp_path, case):
    arrays, expected = BAD_NPZ[case]
    path = _npz(tmp_path, **arrays)
    with pytest.raises(DataValidationError) as err:
        load_dataset(_cfg(path))
    msg = str(err.value)
    assert expected in msg
    assert str(path) in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match="not found; set data.path"):
        load_npz(tmp_path / "nope.npz")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = _npz(tmp_path, x=_x(), y=_y())
    path.chmod(0)
    with pytest.raises(DataValidationError, match="cannot be read"):
        load_npz(path)


def test_pickled_object_array_is_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([object()] * 30, dtype=object), y=_y())
    with pytest.raises(DataValidationError, match="pickled Python objects"):
        load_npz(path)


def test_plain_pickle_and_npy_and_garbage_files(tmp_path):
    pkl = tmp_path / "data.npz"
    pkl.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataValidationError, match="not an .npz file"):
        load_npz(pkl)
    npy = tmp_path / "a.npz"
    with npy.open("wb") as f:
        np.save(f, _x())
    with pytest.raises(DataValidationError, match="single .npy array"):
        load_npz(npy)
    folder = tmp_path / "dir.npz"
    folder.mkdir()
    with pytest.raises(DataValidationError, match="is a folder"):
        load_npz(folder)


def test_truncated_npz(tmp_path):
    path = _npz(tmp_path, x=_x(n=300, shape=(16, 16)), y=_y(300))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataValidationError, match="truncated or corrupt"):
        load_npz(path)


def test_empty_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="is empty; it needs one subfolder per class"):
        load_folder(tmp_path / "empty")


def test_class_folder_without_images(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "emu").mkdir()
    with pytest.raises(DataValidationError, match="emu: holds no images"):
        load_folder(root)


def test_non_image_file_in_folder(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DataValidationError, match="notes.txt: is not a PNG/JPEG image"):
        load_folder(root)


def test_corrupt_image_in_folder(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataValidationError, match="broken.png: is not a readable PNG/JPEG"):
        load_folder(root)


def test_mixed_sizes_without_resize(tmp_path):
    root = _folder(tmp_path / "d")
    _img(root / "dog" / "big.png", size=(12, 10))
    with pytest.raises(DataValidationError, match="different sizes .* set data.image_size"):
        load_folder(root)


def test_folder_path_is_a_file(tmp_path):
    path = _npz(tmp_path, x=_x(), y=_y())
    with pytest.raises(DataValidationError, match="is a file"):
        load_folder(path)
