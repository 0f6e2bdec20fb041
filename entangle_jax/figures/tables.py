"""The plotted numbers: CSV files beside each figure, and intervals over seeds."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from entangle_jax.io import atomic_write_text


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """The plotted numbers, one row per point; floats at full precision (``repr``)."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if isinstance(v, (float, np.floating)) else v
                         for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV written by ``write_csv``, numbers parsed back to floats."""
    def parse(value: str):
        try:
            return float(value)
        except ValueError:
            return value
    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def mean_ci95(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t 95% interval ``mean ± t₀.₉₇₅,ₙ₋₁ · s/√n`` along ``axis`` (the seeds);
    the interval is NaN with a single seed (no spread to estimate)."""
    values = np.asarray(values, float)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, math.nan)
        return mean, nan, nan
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half
