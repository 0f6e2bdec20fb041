"""What every figure script shares: where it writes, its cached run, its CSV and its seed bands.

A figure is computed once per configuration: ``FigureContext.cached`` keeps the run's results (and any
log the run writes beside them) under ``cache_dir/figures/<figure>-<config hash>/`` and returns the
stored results when the same configuration comes again. Trained models live under
``cache_dir/models`` (``train.sft.cached_sft``), the same place ``entangle measure`` and ``entangle
verify`` use, so a figure reuses a model any of them trained.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from entangle_jax.config import config_hash
from entangle_jax.io import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class FigureContext:
    """Where a figure run writes and reads. ``quick`` selects each figure's tiny configuration;
    ``recompute`` ignores stored figure runs (trained models are still reused)."""

    out_dir: Path = Path("figures/out")
    cache_dir: Path = Path(".cache")
    quick: bool = False
    recompute: bool = False
    progress: bool = True

    @property
    def model_cache(self) -> Path:
        return Path(self.cache_dir) / "models"

    def run_dir(self, name: str, config) -> Path:
        return Path(self.cache_dir) / "figures" / f"{name}-{config_hash(config)}"

    def cached(self, name: str, config, compute: Callable[[Path], dict]) -> dict:
        """The results of ``compute(run_dir)`` for ``config``: read from ``run_dir/results.json``
        when a previous run stored them, else computed and stored (the file is written last, so
        an interrupted run is recomputed)."""
        directory = self.run_dir(name, config)
        path = directory / "results.json"
        if path.exists() and not self.recompute:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # a damaged file is recomputed
        results = compute(directory)
        atomic_write_json(path, results)
        return results


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
