"""Reading arrays from an untrusted .npz: no pickle, and no allocation its headers cannot back.

``np.load(allow_pickle=False)`` refuses object arrays, but it trusts each array's header: a few
hundred bytes that declare a shape of 10^12 elements make numpy allocate before it finds the data
missing (a MemoryError, or gigabytes of address space). Each header is read and checked against
the size of its zip member first, and every way a damaged archive fails (bad zip, bad deflate
stream, bad header, short data) becomes one :class:`DataValidationError` that names the file.
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


def _check_header(npz: np.lib.npyio.NpzFile, key: str, path: Path, fix: str) -> None:
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


def read_arrays(path: Path, wanted: Iterable[str], fix: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays ``wanted`` that the .npz at ``path`` holds, and the names of all its arrays.

    A wanted name the file lacks is left out of the result (the caller says what is missing).

    Raises:
        DataValidationError: the file is not a zip archive, is truncated or corrupt, an array
            holds pickled objects, or an array is too large for memory. ``fix`` ends the message.
    """
    try:
        # allow_pickle=False: a pickled array can run arbitrary code when loaded.
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                _fail(path, f"is not an .npz file; {fix}")
            keys = sorted(npz.files)
            arrays = {}
            for key in wanted:
                if key in keys:
                    _check_header(npz, key, path, fix)
                    arrays[key] = npz[key]
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
