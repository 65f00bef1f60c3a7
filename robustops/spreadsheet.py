"""CSV files that are safe to open in a spreadsheet.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return before one) as a formula: a class folder named ``=HYPERLINK(...)`` would become a live
formula in predictions.csv. Every CSV robustops writes goes through :func:`write_csv`, which puts
a ``'`` before such text cells (OWASP's advice; spreadsheets show the text as it was). A cell
that already starts with ``'`` gets one too, so :func:`read_csv` can take exactly one off and
give back the original text. Plain numbers ("-1", "+2.5") are left as they are: they are values,
not formulas.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralise(cell: Any) -> Any:
    """``cell`` as a spreadsheet shows it: formula-leading text prefixed with ``'``."""
    if isinstance(cell, str) and cell.startswith(_TRIGGERS) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def restore(cell: Any) -> Any:
    """The inverse of :func:`neutralise`."""
    if isinstance(cell, str) and cell.startswith("'") and neutralise(cell[1:]) == cell:
        return cell[1:]
    return cell


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Writes ``frame`` without its index, text cells neutralised."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise)
    out.columns = [neutralise(str(c)) for c in out.columns]
    out.to_csv(path, index=False)


def read_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Reads a CSV written by :func:`write_csv` back to the original text."""
    frame = pd.read_csv(path, **kwargs)
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].map(restore)
    frame.columns = [restore(c) for c in frame.columns]
    return frame
