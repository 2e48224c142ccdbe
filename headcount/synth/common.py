"""What every part of the generator shares: the reference date, array types and small helpers."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

REFERENCE_DATE = date(2026, 3, 31)  # ages are whole years on this day

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
StrArray = npt.NDArray[np.object_]


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 CSV with Unix line endings, so output bytes do not depend on the platform."""
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


def _pick(values: tuple[str, ...], codes: npt.NDArray[np.integer]) -> StrArray:
    """``values[code]`` for every code."""
    out: StrArray = np.asarray(values, dtype=object)[codes]
    return out


def _probs(weights: Iterable[float]) -> FloatArray:
    """Weights normalised to sum to 1."""
    w = np.fromiter(weights, dtype=np.float64)
    out: FloatArray = w / w.sum()
    return out


def _obj(values: Iterable[object]) -> StrArray:
    """A 1-d object array from any iterable (kept 1-d even for tuple items)."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
