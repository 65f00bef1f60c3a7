"""Fuzzed input (hypothesis): every input is either accepted correctly or refused with robustops'
own error, whose one line names the problem. Never a traceback, a crash or a hang.

Targets: the image and label validators, the .npz and image-folder loaders (random arrays,
damaged and pickled files, malformed PNG/JPEG bytes), the config loader (malformed YAML and
``--set`` values), the guarded model in-process and as the MLflow pyfunc (random request shapes,
dtypes, NaN/inf, huge requests), and the ``robustops`` command (a few cases in a subprocess).

Seeds are fixed (``derandomize``) so CI sees the same examples every run.
"""

from __future__ import annotations

import io
import itertools
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlflow.exceptions import MlflowException
from PIL import Image

from robustops.catalog import load_config
from robustops.config import Config
from robustops.data import load_folder, load_npz
from robustops.data.validate import check_images, check_labels
from robustops.errors import ConfigError, DataValidationError
from robustops.evaluation.postprocess import energy
from robustops.inference import predict
from robustops.serving import GuardedModel, GuardSettings, RequestError, as_images, settings_for
from robustops.serving.guard import COLUMNS
from robustops.training import checkpoint

FUZZ = {
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
FAST = settings(max_examples=80, deadline=5000, **FUZZ)  # numpy only: seconds at most, or it hangs
TORCH = settings(max_examples=60, deadline=None, **FUZZ)  # torch's first call is slow; timed by hand
_names = itertools.count()


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ---- strategies ------------------------------------------------------------------------------

NUMERIC = [np.uint8, np.int16, np.int64, np.uint64, np.float16, np.float32, np.float64, np.bool_]
ODD = ["complex64", "U3", "S2", "M8[s]"]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, -1e-320, 5e-324, 255.0, 1.0000001, -0.0]


def _shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """Mostly shapes a validator accepts, so that both outcomes get exercised."""
    good = st.tuples(st.integers(1, 5), st.sampled_from([1, 3]), st.integers(4, 9), st.integers(4, 9))
    gray = st.tuples(st.integers(1, 5), st.integers(4, 9), st.integers(4, 9))
    near = st.tuples(
        st.integers(0, 4), st.sampled_from([0, 1, 2, 3, 4, 8]), st.integers(0, 9), st.integers(0, 9)
    )
    return st.one_of(good, gray, near, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))


@st.composite
def arrays(draw, shapes=None) -> np.ndarray:  # noqa: ANN001
    """Arrays of any dtype: in range, or with NaN/inf, huge, tiny and out-of-range values."""
    shape = draw(shapes if shapes is not None else _shapes())
    kind = draw(st.sampled_from(["valid", "valid", "any", "special", "odd", "object"]))
    if kind == "object":
        cells = draw(st.lists(st.sampled_from([None, 0.5, "a", 1]), min_size=1, max_size=3))
        out = np.empty(shape, dtype=object)
        out.reshape(-1)[:] = [cells[i % len(cells)] for i in range(out.size)]
        return out
    if kind == "odd":
        return draw(hnp.arrays(draw(st.sampled_from(ODD)), shape))
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    if kind == "valid" and dtype.kind == "f":
        elements = st.floats(0, 1, width=8 * dtype.itemsize)
    elif kind == "valid" and dtype.kind in "iu":
        elements = st.integers(0, 255 if dtype == np.uint8 else 1)
    else:
        elements = hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    if kind == "special" and dtype.kind == "f" and x.size:
        with np.errstate(over="ignore"):
            x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIAL))
    return x


def image_problem(x: np.ndarray) -> str | None:
    """What the validator must say about ``x``, in the order it checks (None: acceptable)."""
    if x.dtype.kind not in "uif":
        return "dtype"
    if x.ndim not in (3, 4):
        return "rank"
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        return "channels"
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if n == 0:
        return "no images"
    if min(h, w) < 4:
        return "at least 4x4"
    if x.dtype == np.uint8:
        return None
    if x.dtype.kind in "iu":
        return "integer dtype"
    if not np.isfinite(x).all():
        return "NaN or inf"
    if x.min() < 0 or x.max() > 1:
        return "[0, 1]"
    return None


def canonical(x: np.ndarray) -> np.ndarray:
    """What an accepted ``x`` must come out as."""
    x = x[:, None] if x.ndim == 3 else x
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)


def assert_canonical_images(x: np.ndarray) -> None:
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[0] >= 1
    assert x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


@st.composite
def labels(draw, n: int) -> np.ndarray:  # noqa: ANN001
    """Labels: good class ids, or floats, NaN, negatives, huge values, text, 2-D, wrong length."""
    size = draw(st.one_of(st.just(n), st.integers(0, n + 2)))
    shape = draw(st.sampled_from([(size,), (size,), (size, 2), ()]))
    kind = draw(st.sampled_from(["ids", "ids", "any"]))
    if kind == "ids":
        dtype = draw(st.sampled_from([np.int64, np.uint8, np.int16, np.float32, np.float64]))
        return draw(hnp.arrays(dtype, shape, elements=st.integers(0, 3)))
    dtype = draw(st.sampled_from([*NUMERIC, "U2", "complex64"]))
    return draw(hnp.arrays(dtype, shape))


def label_problem(y: np.ndarray, n: int) -> str | None:
    if y.ndim != 1:
        return "shape"
    if len(y) != n:
        return "labels"
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            return "not integers"
    elif y.dtype.kind not in "iu":
        return "dtype"
    if len(y) and y.min() < 0:
        return "negative"
    if len(y) and y.max() > (2**53 if y.dtype.kind == "f" else np.iinfo(np.int64).max):
        return "labels go up to"
    return None


# ---- validators ------------------------------------------------------------------------------


@FAST
@given(arrays())
def test_check_images_accepts_or_names_the_problem(x):
    problem = image_problem(x)
    if problem is None:
        out = check_images(x, "fuzz")
        assert_canonical_images(out)
        np.testing.assert_array_equal(out, canonical(x))
    else:
        with pytest.raises(DataValidationError) as err:
            check_images(x, "fuzz")
        msg = one_line(err.value)
        assert msg.startswith("fuzz: ") and problem in msg, (problem, msg)


@FAST
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(st.just(n), labels(n))))
def test_check_labels_accepts_or_names_the_problem(case):
    n, y = case
    problem = label_problem(y, n)
    if problem is None:
        out = check_labels(y, n, "fuzz")
        assert out.dtype == np.int64 and out.shape == (n,) and (out >= 0).all()
        assert np.array_equal(out, y.astype(np.float64)) if y.dtype.kind == "f" else np.array_equal(out, y)
    else:
        with pytest.raises(DataValidationError) as err:
            check_labels(y, n, "fuzz")
        assert problem in one_line(err.value), (problem, str(err.value))


# ---- .npz files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(scratch: Path, suffix: str = "") -> Path:
    return scratch / f"f{next(_names)}{suffix}"


def assert_dataset(ds, y_raw: np.ndarray) -> None:
    assert_canonical_images(ds.x)
    assert ds.y.dtype == np.int64 and ds.y.shape == (len(ds.x),)
    values = np.unique(y_raw.astype(np.int64))  # float labels 1.0, 2.0 are classes "1", "2"
    assert ds.classes == [str(v) for v in values]
    assert ds.y.min() >= 0 and ds.y.max() < len(ds.classes)
    assert np.array_equal(values[ds.y], y_raw)  # every label maps back to its class


def valid_images() -> st.SearchStrategy[np.ndarray]:
    shape = st.tuples(st.integers(3, 8), st.sampled_from([1, 3]), st.integers(4, 6), st.integers(4, 6))
    return st.one_of(
        hnp.arrays(np.uint8, shape),
        hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)),
        hnp.arrays(np.float64, shape.map(lambda s: (s[0], *s[2:])), elements=st.floats(0, 1)),
    )


@FAST
@given(
    st.data(),
    st.sampled_from(
        [("x", "y"), ("x", "y"), ("x", "y"), ("x",), ("y",), ("x", "y", "extra"), ("images", "labels")]
    ),
    st.booleans(),
)
def test_npz_with_random_arrays(scratch, data, keys, compressed):
    x = data.draw(st.one_of(valid_images(), arrays()), label="x")
    n = len(x) if x.ndim else 1
    ids = hnp.arrays(st.sampled_from([np.int64, np.uint8, np.float32]), n, elements=st.integers(0, 9))
    y = data.draw(st.one_of(ids, labels(n)), label="y")
    path = _fresh(scratch, ".npz")
    arrays_ = {k: {"x": x, "y": y}.get(k, np.arange(3)) for k in keys}
    (np.savez_compressed if compressed else np.savez)(path, **arrays_)  # object arrays are pickled
    bad = "x" not in keys or "y" not in keys or image_problem(x) or label_problem(y, len(x) if x.ndim else -1)
    try:
        ds = load_npz(path)
    except DataValidationError as e:
        assert one_line(e).startswith(str(path))
        event("refused")
        return
    event("accepted")
    assert not bad, f"accepted bad input: {bad}"
    assert_dataset(ds, y)


def _good_npz_bytes(compressed: bool) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8)).astype(np.uint8)
    (np.savez_compressed if compressed else np.savez)(buf, x=x, y=np.arange(6) % 2)
    return buf.getvalue()


@st.composite
def damaged(draw, good: bytes) -> bytes:  # noqa: ANN001
    """Truncated, bit-flipped, spliced or zeroed copies of a valid file."""
    how = draw(st.sampled_from(["truncate", "flip", "splice", "zero"]))
    b = bytearray(good)
    if how == "truncate":
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    at = draw(st.integers(0, len(b)))
    if how == "splice":
        return bytes(b[:at] + draw(st.binary(min_size=1, max_size=64)) + b[at:])
    end = min(len(b), at + draw(st.integers(1, 64)))
    return bytes(b[:at] + bytes(end - at) + b[end:])


@FAST
@given(st.booleans().flatmap(lambda c: damaged(_good_npz_bytes(c))))
def test_damaged_npz_is_refused_or_still_valid(scratch, blob):
    path = _fresh(scratch, ".npz")
    path.write_bytes(blob)
    try:
        ds = load_npz(path)
    except DataValidationError as e:
        assert one_line(e).startswith(str(path))
        return
    assert_canonical_images(ds.x)  # the damage missed anything that matters (e.g. a zip comment)
    assert len(ds.y) == len(ds.x) and ds.y.min() >= 0 and ds.y.max() < len(ds.classes)


class Exploit:
    """Unpickling it would write a file: proof that pickled content ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pwned"))


def _npy(shape: tuple[int, ...], descr: str = "<f8", data: bytes = b"") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _write_bad_npz(path: Path, case: str, marker: Path) -> None:
    x = np.zeros((6, 8, 8), np.uint8)
    if case == "pickled_array":
        np.savez(path, x=x, y=np.array([Exploit(marker)] * 6, dtype=object))
    elif case == "pickle_renamed":
        path.write_bytes(pickle.dumps({"x": x, "y": Exploit(marker)}))
    elif case == "npy_renamed":
        np.save(path.with_suffix(".npy"), x)
        path.with_suffix(".npy").rename(path)
    elif case == "header_bomb":  # a 150-byte member that declares 5 TB
        path.write_bytes(_zip(**{"x.npy": _npy((10**12, 8, 8)), "y.npy": _npy((6,), "<i8", bytes(48))}))
    elif case == "garbage_member":
        path.write_bytes(_zip(**{"x.npy": b"hello", "y.npy": _npy((6,), "<i8", bytes(48))}))
    elif case == "bad_header":
        path.write_bytes(_zip(**{"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'x'   \n", "y.npy": b""}))
    elif case == "zip_prefix_only":
        path.write_bytes(b"PK" + b"\x00" * 30)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("pickled_array", "pickled Python objects, which are never loaded"),
        ("pickle_renamed", "not an .npz file"),
        ("npy_renamed", "single .npy array"),
        ("header_bomb", "declares shape (1000000000000, 8, 8)"),
        ("garbage_member", "array 'x' is not a numpy array"),
        ("bad_header", "truncated or corrupt"),
        ("zip_prefix_only", "not an .npz file"),
        ("empty", "not an .npz file"),
        ("folder", "is a folder"),
    ],
)
def test_hostile_npz_files_are_refused_and_never_run(tmp_path, case, expected):
    path, marker = tmp_path / "d.npz", tmp_path / "pwned"
    _write_bad_npz(path, case, marker)
    start = time.perf_counter()
    with pytest.raises(DataValidationError) as err:
        load_npz(path)
    assert expected in one_line(err.value) and str(path) in str(err.value)
    assert time.perf_counter() - start < 2 and not marker.exists()


# ---- image folders ---------------------------------------------------------------------------


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _png_header(w: int, h: int, depth: int = 8, ctype: int = 0, idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


GOOD_PNG = _encode(np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8), "PNG")
GOOD_JPEG = _encode(np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.uint8), "JPEG")
HOSTILE_IMAGES = [
    b"",
    b"not an image",
    _png_header(100_000, 100_000, idat=zlib.compress(bytes(100))),  # a decompression bomb's header
    _png_header(10_000, 10_000, idat=zlib.compress(bytes(100))),  # declares 100 MB, holds 100 bytes
    _png_header(0, 0),
    _png_header(8, 8, depth=7, idat=zlib.compress(bytes(72))),
    _png_header(8, 8, idat=b"not deflate"),
    _encode(np.zeros((2, 2), np.uint8), "PNG"),  # valid, but too small to match the others
    _encode(np.zeros((8, 8), np.float32), "TIFF"),  # valid, another format under a .png name
]


def _image_folder(root: Path, bad: bytes, name: str) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(GOOD_PNG)
    (root / "b" / name).write_bytes(bad)
    return root


@FAST
@given(
    st.one_of(
        damaged(GOOD_PNG), damaged(GOOD_JPEG), st.sampled_from(HOSTILE_IMAGES), st.binary(max_size=200)
    ),
    st.sampled_from(["z.png", "z.jpg", "z.jpeg", "z.PNG"]),
)
def test_image_folder_with_a_malformed_file(scratch, bad, name):
    root = _image_folder(_fresh(scratch), bad, name)
    try:
        ds = load_folder(root)
    except DataValidationError as e:
        assert one_line(e).startswith(str(root))  # the folder, or the bad file in it
        event("refused")
        return
    event("accepted")
    assert_canonical_images(ds.x)
    assert len(ds.x) == 7 and ds.classes == ["a", "b"] and ds.y.tolist() == [0, 0, 0, 1, 1, 1, 1]


# ---- configs ---------------------------------------------------------------------------------

YAML_BITS = ["data:", "source: npz", "path: x.npz", "seed:", "train:", "epochs: 3", "defences:", "- pgd_at",
             "- {name: trades, beta: 6}", "evaluation:", "eps: [0.1, 0.3]", "gate:", "min: {clean/acc: .nan}",
             "\n", "\n  ", "  ", "\t", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: *a", "? ", "~",
             ".inf", "-1", "1e999", "'", '"', "#", "!!python/object/apply:os.system ['true']", "!!binary AAAA",
             "%YAML 1.1\n", "---\n", "...\n", "\x00", "\ufeff", "é", "99999999999999999999999"]  # fmt: skip
CONFIG_KEYS = [*Config.model_fields, "data.source", "train.epochs", "nope"]


def _section(**fields: st.SearchStrategy) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=fields)


VALID_CONFIGS = _section(
    seed=st.integers(0, 10**6),
    train=_section(
        epochs=st.integers(1, 5), lr=st.floats(1e-4, 1), optimizer=st.sampled_from(["adam", "sgd"])
    ),
    model=_section(name=st.sampled_from(["cnn", "mlp"]), width=st.integers(4, 32)),
    defences=st.lists(
        st.sampled_from(["pgd_at", "fgsm_rs", "trades", "distillation", "smoothing"]), unique=True
    ),
    evaluation=_section(eps=st.lists(st.floats(0, 0.5), min_size=1, max_size=3)),
).map(yaml.safe_dump)


def _trees() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["npz", "cnn"]),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from([*Config.model_fields, "name", "source", "eps", "x"]), inner, max_size=3
            )
        ),
        max_leaves=12,
    )


HOSTILE_YAML = [
    "a: &a [x,x,x,x,x,x,x,x,x]\n"  # billion laughs: 9^8 values in 9 lines
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)),
    "defences: &a [*a]",  # an alias to itself
    "data: &a {x: *a}",
    "[" * 5000 + "]" * 5000,  # deeper than Python's recursion limit
    "a: " + "{b: " * 3000 + "1" + "}" * 3000,
    "!!python/object/apply:os.system ['touch pwned']",
    "seed: !!python/name:os.system",
]


@FAST
@given(
    st.one_of(
        st.lists(st.sampled_from(YAML_BITS), max_size=12).map(" ".join),
        VALID_CONFIGS,
        _trees().map(lambda t: yaml.safe_dump(t)),
        st.sampled_from(HOSTILE_YAML[:3] + HOSTILE_YAML[5:]),  # the deep ones take a second each: below
        st.text(max_size=60),
    ),
    st.lists(
        st.tuples(
            st.sampled_from(CONFIG_KEYS), st.sampled_from(["=", "", "=="]), st.sampled_from(YAML_BITS)
        ).map("".join),
        max_size=2,
    ),
)
def test_malformed_config_is_refused_in_one_line(scratch, text, overrides):
    path = _fresh(scratch, ".yaml")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    start = time.perf_counter()
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        msg = one_line(e)
        assert str(path) in msg or "--set" in msg, msg
        event("refused")
    else:
        assert isinstance(cfg, Config)
        event("accepted")
    assert time.perf_counter() - start < 3
    assert not Path("pwned").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (HOSTILE_YAML[0], "holds more than 50,000 values"),
        (HOSTILE_YAML[1], "nested more than 32 levels deep"),
        (HOSTILE_YAML[3], "nested too deeply"),
        (HOSTILE_YAML[5], "is not valid YAML at line 1"),
        (b"\xff\xfe\x00binary", "is not valid YAML"),
        (None, "is a folder"),
    ],
)
def test_hostile_config_files(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in one_line(err.value) and str(path) in str(err.value)


def test_config_path_longer_than_a_file_name_may_be():
    with pytest.raises(ConfigError, match="cannot be used"):
        load_config("c" * 5000 + ".yaml")


# ---- the guarded model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(trained, digits_split) -> GuardedModel:
    """The guarded model as tests/test_serving.py builds it (settings_for a checkpoint spec and a
    guard), around the session's small MLP rather than a CNN with a scorecard (35 s): thresholds
    that make it abstain on a share of real digits stand in for the scorecard's."""
    scores = energy(predict(trained.model, digits_split.val.x))
    guard = SimpleNamespace(threshold=0.9, energy_threshold=float(np.quantile(scores, 0.05)))
    return GuardedModel(trained.model, settings_for(trained.blueprint, guard))


@st.composite
def damaged_digits(draw, real: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Real digits (answerable), some pixels set to NaN, inf or out of range, in another layout or dtype."""
    start = draw(st.integers(0, len(real) - 6))
    x = real[start : start + draw(st.integers(1, 6))].astype(draw(st.sampled_from([np.float32, np.float64])))
    for _ in range(draw(st.integers(0, 3))):
        with np.errstate(over="ignore"):  # 1e300 in float32: inf
            x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIAL))
    layout = draw(st.sampled_from(["nchw", "nchw", "nhw", "flat"]))
    return x[:, 0] if layout == "nhw" else x.reshape(len(x), -1) if layout == "flat" else x


@st.composite
def requests(draw, real: np.ndarray):  # noqa: ANN001, ANN201
    """A request in any container: real digits, arrays of any shape and dtype, lists, DataFrames,
    tensors, junk."""
    if draw(st.integers(0, 3)) == 0:
        x = draw(damaged_digits(real))
        return pd.DataFrame(x) if x.ndim == 2 and draw(st.booleans()) else x
    shape = draw(
        st.one_of(
            st.tuples(st.integers(0, 4), st.just(1), st.just(8), st.just(8)),
            st.tuples(st.integers(0, 4), st.just(8), st.just(8)),
            st.tuples(st.integers(0, 4), st.just(64)),
            st.tuples(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(7, 9), st.integers(7, 9)),
            hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
        )
    )
    x = draw(arrays(st.just(shape)))
    box = draw(st.sampled_from(["array", "array", "list", "frame", "tensor", "tuple", "junk"]))
    if box == "list" and x.dtype.kind in "biuf":
        return x.tolist()
    if box == "tuple" and x.ndim:
        return tuple(x)
    if box == "frame" and x.ndim == 2:
        return pd.DataFrame(x)
    if box == "tensor" and x.dtype.kind in "biuf" and x.dtype != np.uint64:
        return torch.from_numpy(x.copy())
    if box == "junk":
        return draw(st.sampled_from([None, "images", b"\x00", 3.5, {"inputs": [1]}, [[0.0] * 8, [0.0] * 7],
                                     [[[[None]]]], [1, [2]], object()]))  # fmt: skip
    return x


def assert_answers(out: pd.DataFrame, n: int, classes: list[str], raw: np.ndarray | None) -> None:
    """One row per image; each answered, abstained or rejected with its reason."""
    assert list(out.columns) == COLUMNS and len(out) == n
    for row in out.itertuples():
        if row.rejected:
            assert row.reason.startswith("rejected: ") and row.class_index == -1 and row.label is None
        elif row.abstain:
            assert row.reason.startswith("abstained: ") and row.class_index == -1 and row.label is None
        else:
            assert row.reason == "" and 0 <= row.class_index < len(classes)
            assert row.label == classes[row.class_index] and 0 <= row.confidence <= 1
    if raw is not None and n:
        flat = raw.reshape(n, -1).astype(np.float64)
        bad = ~np.isfinite(flat).all(1) | (np.nan_to_num(flat, nan=0.5) < 0).any(1) | (flat > 1).any(1)
        assert (out["rejected"].to_numpy() == bad).all()  # exactly the rows with bad pixels


def _raw(request, settings: GuardSettings) -> np.ndarray | None:
    try:
        return as_images(request, settings)
    except RequestError:
        return None


@TORCH
@given(st.data())
def test_guard_answers_each_row_or_refuses_the_request(guarded, digits_split, data):
    request_ = data.draw(requests(digits_split.test.x), label="request")
    s = guarded.settings
    start = time.perf_counter()
    try:
        out = guarded.predict(request_)
    except RequestError as e:
        one_line(e)
        event("request refused")
    else:
        x = as_images(request_, s)
        assert_answers(out, len(x), s.classes, x)
        for kind in ("rejected", "abstain"):
            if out[kind].any():
                event(f"some rows {kind}")
        if (~out["rejected"] & ~out["abstain"]).any():
            event("some rows answered")
    assert time.perf_counter() - start < 5


@pytest.fixture(scope="module")
def pyfunc(guarded, trained, tmp_path_factory):
    """The guarded model as MLflow serves it, from a real sqlite store."""
    from adapters.pyfunc import log_guarded

    root = tmp_path_factory.mktemp("pyfunc")
    folder = checkpoint.save(trained.model, trained.blueprint, root / "checkpoint")
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    with mlflow.start_run() as run:
        pass
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    return mlflow.pyfunc.load_model(log_guarded(run.info.run_id, folder, guarded.settings, x))


@settings(max_examples=40, deadline=None, **FUZZ)
@given(st.data())
def test_pyfunc_answers_each_row_or_refuses_the_request(pyfunc, guarded, digits_split, data):
    """MLflow checks its signature first (float32 (N, 1, 8, 8)); either refusal is a client error."""
    request_ = data.draw(requests(digits_split.test.x), label="request")
    start = time.perf_counter()
    try:
        out = pyfunc.predict(request_)
    except MlflowException as e:
        assert e.error_code == "INVALID_PARAMETER_VALUE", e.message
        event("refused")
    else:
        assert_answers(out, len(out), guarded.settings.classes, _raw(request_, guarded.settings))
        event("answered")
    assert time.perf_counter() - start < 5


HUGE = 10**8  # values in one request: 400 MB as float32


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.broadcast_to(np.float32(0.5), (HUGE // 64, 1, 8, 8)),  # 1.5 M images, a view: no memory
        lambda: np.broadcast_to(np.float32(0.5), (2, HUGE // 2)),  # two enormous rows
        lambda: np.broadcast_to(np.float64(0.5), (1, HUGE // 64, 8, 8)),
        lambda: [[[[0.5] * 8] * 8]] * (HUGE // 64),  # nested lists sharing one image: 12 MB
        lambda: [[0.5] * 10_000] * 10_000,
        lambda: torch.zeros(1).expand(HUGE // 64, 64),
    ],
    ids=["rows", "wide", "float64", "list", "list_wide", "tensor"],
)
def test_huge_request_is_refused_before_anything_is_allocated(guarded, make):
    request_ = make()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(
            RequestError, match=r"send at most \d+ per request|per request: send fewer"
        ) as err:
            guarded.predict(request_)
        took, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(err.value)
    assert took < 1 and peak < 10 * 2**20, (took, peak)  # converting it would take 400-800 MB


def test_request_limits_are_settings(guarded):
    s = guarded.settings
    assert s.max_batch == 10_000 and s.max_bytes == 256 * 2**20  # defaults, saved in guard.json
    small = GuardSettings(s.classes, s.shape, s.threshold, s.energy_threshold, max_bytes=100 * 64 * 4)
    assert small.max_rows() == 100
    as_images(np.zeros((100, 1, 8, 8), np.float32), small)
    with pytest.raises(RequestError, match="101 images in one request; send at most 100 per request"):
        as_images(np.zeros((101, 1, 8, 8), np.float32), small)


def test_pyfunc_refuses_a_huge_request_quickly(pyfunc):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(MlflowException) as err:
            pyfunc.predict(np.broadcast_to(np.float32(0.5), (HUGE // 64, 1, 8, 8)))
        took, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and "send at most 10000" in err.value.message
    assert took < 1 and peak < 10 * 2**20


def test_empty_request_gets_an_empty_answer(guarded):
    for empty in (np.zeros((0, 1, 8, 8), np.float32), pd.DataFrame(np.zeros((0, 64))), []):
        try:
            out = guarded.predict(empty)
        except RequestError as e:  # [] has no shape to check
            assert "shape" in one_line(e)
        else:
            assert list(out.columns) == COLUMNS and len(out) == 0


# ---- the command line ------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _cli_case(tmp_path: Path, case: str) -> Path:
    cfg = tmp_path / "c.yaml"
    if case == "yaml_syntax":
        cfg.write_text("data:\n  source: npz\n\tpath: [x.npz\n")
    elif case == "billion_laughs":
        cfg.write_text(HOSTILE_YAML[0])
    elif case in ("pickled_npz", "header_bomb_npz"):
        path = tmp_path / "d.npz"
        _write_bad_npz(path, "pickled_array" if case == "pickled_npz" else "header_bomb", tmp_path / "pwned")
        cfg.write_text(f"data: {{source: npz, path: {path}}}\n")
    elif case == "bomb_png":
        root = _image_folder(tmp_path / "images", HOSTILE_IMAGES[2], "z.png")
        cfg.write_text(f"data: {{source: folder, path: {root}}}\n")
    return cfg


@pytest.mark.parametrize(
    ("command", "case", "expected"),
    [
        ("check-data", "yaml_syntax", "is not valid YAML at line 3"),
        ("check-data", "billion_laughs", "holds more than 50,000 values"),
        ("check-data", "pickled_npz", "pickled Python objects"),
        ("check-data", "bomb_png", "is too large to decode"),
        ("run", "header_bomb_npz", "declares shape (1000000000000, 8, 8)"),
    ],
)
def test_cli_refuses_bad_input_in_one_line_with_exit_2(tmp_path, command, case, expected):
    cfg = _cli_case(tmp_path, case)
    proc = _cli([command, "--config", str(cfg)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "pwned").exists()


# ---- names end to end: refused at load with exit 2, or the whole run succeeds --------------------

# Name-like values as users type them: separators of URIs and filters, quotes, spaces, formulas.
NAME_CHARS = list("ab-_. /:@'\"\\=+ü") + ["x", "v1", "latest"]
FOLDER_CHARS = list("ab-_. @'\"=+ü;")
# A pipeline run of a few seconds: the baseline alone on 2 classes of 5 tiny images.
MINIMAL = [
    "train.epochs=1", "train.progress=false", "model.name=mlp", "model.hidden=8", "defences=[]",
    "synthesis.enabled=false", "augment.policy=none", "adversarial_set.enabled=false",
    "evaluation.l2_eps=[]", "evaluation.pgd_steps=1", "evaluation.corruptions=[shot_noise]",
    "evaluation.severities=[1]", "evaluation.specification.checks=[]", "evaluation.masking.more_steps=2",
    "evaluation.noise={gaussian: [0.1], uniform: [0.1], salt_pepper: [0.1], flip_draws: 1}",
    "gate={primary: clean/acc, min: {}, max: {}, require_masking: false, spec_checks: []}",
]  # fmt: skip


@st.composite
def names_cases(draw) -> dict:
    """Each value plausible (two draws in three) or hostile, so both outcomes come up often."""
    hostile = lambda chars: st.lists(st.sampled_from(chars), max_size=5).map("".join)  # noqa: E731
    either = lambda valid, bad: st.one_of(valid, valid, bad)  # noqa: E731
    eps_ok = st.lists(st.sampled_from([0.0, 0.05, 0.1, 0.3, 1.0]), min_size=1, max_size=3)
    eps_bad = st.lists(st.sampled_from([0.1, 0.1000001, 1.5, -0.1]), min_size=1, max_size=3)
    folder = either(st.from_regex(r"[a-z0-9=+@ '_;ü-][a-z0-9=+@ '._;ü-]{0,6}", fullmatch=True),
                    hostile(FOLDER_CHARS).filter(lambda s: s.strip(".")))  # fmt: skip
    return {
        "model": draw(
            either(st.from_regex(r"[a-z0-9][a-z0-9 ._'ü=+-]{0,8}", fullmatch=True), hostile(NAME_CHARS))
        ),
        "alias": draw(either(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), hostile(NAME_CHARS))),
        "classes": draw(st.lists(folder, min_size=2, max_size=2, unique=True)),
        "eps": draw(either(eps_ok, eps_bad)),
        "aa_eps": draw(either(eps_ok, eps_bad)),
    }


def _fuzz_names_end_to_end(root: Path, case: dict, capsys) -> str:
    """One ``robustops run`` with the case's values: returns 'refused' or 'ran'."""
    import json

    from app.cli import main

    folder = root / f"img{next(_names)}"
    for c in case["classes"]:
        for i in range(5):
            (folder / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8), dtype=np.uint8)).save(
                folder / c / f"{i}.png"
            )
    sets = [*MINIMAL, f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/art",
            "data.source=folder", f"data.path={folder}", f"mlflow.registered_model={json.dumps(case['model'])}",
            f"gate.alias={json.dumps(case['alias'])}", f"evaluation.eps={case['eps']}",
            f"evaluation.autoattack={{eps: {case['aa_eps']}, apgd_steps: 2, square_queries: 4}}"]  # fmt: skip
    runs_before = _count_runs(root)
    code = main(["run", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code in (0, 2), (case, err[-3000:])  # never a failure after MLflow or Prefect started
    if code == 2:
        assert len(errors) == 1 and "Traceback" not in err, (case, err[-2000:])
        assert _count_runs(root) == runs_before, case  # refused before anything was written
        return "refused"
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{root}/mlflow.db")
    champion = c.get_model_version_by_alias(case["model"], case["alias"])
    assert c.get_run(champion.run_id).info.status == "FINISHED", case
    return "ran"


def _count_runs(root: Path) -> int:
    import sqlite3

    db = root / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


@pytest.fixture(scope="module")
def names_harness(prefect_harness):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[*FUZZ["suppress_health_check"], HealthCheck.function_scoped_fixture],
)
@given(case=names_cases())
def test_name_like_values_are_refused_at_load_or_the_whole_run_succeeds(names_harness, scratch, capsys, case):
    """Registered model names, aliases, class folder names and eps lists: every value is refused
    with exit 2 before MLflow or Prefect start, or the whole pipeline run succeeds and registers
    and promotes under that name (issue 14)."""
    event(_fuzz_names_end_to_end(scratch, case, capsys))


def test_the_nastiest_accepted_names_run_end_to_end(names_harness, tmp_path, capsys):
    """The default run's share of the fuzz above: values that pass every rule but have broken runs
    before (a quote in the model name, formula-like and spaced class folders, eps 0)."""
    case = {"model": "it's a model", "alias": "prod-1_x", "classes": ["=1+2", "a b"], "eps": [0.0, 0.1],
            "aa_eps": [0.1]}  # fmt: skip
    assert _fuzz_names_end_to_end(tmp_path, case, capsys) == "ran"
    refused = {"model": "m@prod", "alias": "latest", "classes": ["a b", "a_b"], "eps": [0.1, 0.1000001],
               "aa_eps": [1.5]}  # fmt: skip
    assert _fuzz_names_end_to_end(tmp_path, refused, capsys) == "refused"
