"""Reading arrays from an untrusted .npz: no pickle, and no allocation its headers cannot back.

``np.load(allow_pickle=False)`` refuses object arrays, but it trusts each array's header: a few
hundred bytes that declare a shape of 10^12 elements make numpy allocate before it finds the data
missing (a MemoryError, or gigabytes of address space). Each header is read and checked against
the size of its zip member first, and every way a damaged archive fails (bad zip, bad deflate
stream, bad header, short data) becomes one :class:`DataValidationError` that names the file.

What the arrays will cost decoded is bounded too: a header states its array's shape truthfully
even in a compression bomb (a few MB that inflate to gigabytes), so the declared shape is
checked against ``limits.max_bytes`` before a byte is inflated.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from robustops.errors import DataValidationError

DEFAULT_MAX_BYTES = 4 * 2**30  # the default of limits.max_bytes (robustops.config.LimitsConfig)

# What a damaged archive or member raises from zipfile, zlib and numpy's reader.
CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,  # an unsupported compression method
    RuntimeError,  # an encrypted member
    KeyError,
    tokenize.TokenError,  # a header numpy's literal parser cannot tokenize
)


def _fail(path: Path, msg: str) -> None:
    raise DataValidationError(f"{path}: {msg}")


def gib(n: float) -> str:
    """Bytes in the unit a limit is read in: '3.9 GiB', '512 MiB'."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _check_header(npz: np.lib.npyio.NpzFile, key: str, path: Path, fix: str) -> int:
    """Checks one member's header against its size; returns the bytes the array takes decoded (at
    least 4 per value: images become float32)."""
    member = npz._files[key]  # the key without ".npy" -> the zip member's name
    size = npz.zip.getinfo(member).file_size
    with npz.zip.open(member) as f:
        try:
            version = npy_format.read_magic(f)
        except ValueError:
            _fail(path, f"array {key!r} is not a numpy array (no .npy header); {fix}")
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(f)
        else:
            _fail(path, f"array {key!r} has .npy format version {version}, which is not read; {fix}")
        start = f.tell()
    if dtype.hasobject:
        _fail(
            path, f"array {key!r} holds pickled Python objects, which are never loaded; store numbers: {fix}"
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > size - start:
        _fail(
            path,
            f"array {key!r} declares shape {shape} ({declared:,} bytes) but holds {size - start:,} bytes: "
            f"the file is truncated or corrupt; {fix}",
        )
    return math.prod(shape) * max(dtype.itemsize, 4)


def read_arrays(
    path: Path, wanted: Iterable[str], fix: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays ``wanted`` that the .npz at ``path`` holds, and the names of all its arrays.

    A wanted name the file lacks is left out of the result (the caller says what is missing).
    Every header is checked before any array is inflated.

    Raises:
        DataValidationError: the file is not a zip archive, is truncated or corrupt, an array
            holds pickled objects, or the arrays would take more than ``max_bytes`` decoded
            (``limits.max_bytes``). ``fix`` ends the message.
    """
    try:
        # allow_pickle=False: a pickled array can run arbitrary code when loaded.
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                _fail(path, f"is not an .npz file; {fix}")
            keys = sorted(npz.files)
            present = [k for k in wanted if k in keys]
            decoded = {k: _check_header(npz, k, path, fix) for k in present}
            if sum(decoded.values()) > max_bytes:
                big = max(decoded, key=decoded.get)
                _fail(
                    path,
                    f"its arrays decode to {gib(sum(decoded.values()))} ('{big}': {gib(decoded[big])}), above "
                    f"limits.max_bytes = {gib(max_bytes)}: split the file, or raise the limit "
                    f"(--set limits.max_bytes={sum(decoded.values())})",
                )
            arrays = {k: npz[k] for k in present}
    except DataValidationError:
        raise
    except MemoryError:
        _fail(path, f"is too large to load into memory; split it into smaller files ({fix})")
    except RecursionError:
        _fail(path, f"has a malformed array header; {fix}")
    except CORRUPT as e:
        if isinstance(e, ValueError) and "pickled" in str(e):  # np.load on a file it cannot place
            _fail(path, f"is not an .npz file (not a zip archive numpy can read); {fix}")
        _fail(path, f"is truncated or corrupt ({type(e).__name__}: {e}); {fix}")
    return arrays, keys
