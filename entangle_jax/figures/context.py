"""Where a figure run writes and reads, and the command-line options that say so.

A figure is computed once per configuration: ``FigureContext.cached`` keeps the run's results (and
any log the run writes beside them) under ``cache_dir/figures/<figure>-<key>/`` (the key:
``provenance.cache_key`` of the configuration, the package versions and the code) and returns the
stored results when the same configuration comes again. Trained models live under
``cache_dir/models`` (``train.sft.cached_sft``), the same place ``entangle measure`` and ``entangle
verify`` use, so a figure reuses a model any of them trained. This module stays light (no plotting
imports): ``entangle --help`` builds its options.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from entangle_jax.io import atomic_write_json
from entangle_jax.provenance import cache_key


@dataclass(frozen=True)
class FigureContext:
    """Where a figure run writes and reads. ``quick`` selects each figure's tiny configuration;
    ``real`` the real-model twins (``real_config``) instead of the figures; ``recompute``
    ignores stored figure and preference runs (trained models are still reused), recomputing
    each once: ``recomputed`` holds the keys already recomputed by this context."""

    out_dir: Path = Path("figures/out")
    cache_dir: Path = Path(".cache")
    quick: bool = False
    real: bool = False
    recompute: bool = False
    progress: bool = True
    recomputed: set = field(default_factory=set, compare=False, repr=False)

    def use_stored(self, key: str) -> bool:
        """Whether a stored run under ``key`` may be used (not when it is to be recomputed and
        has not been yet); call ``recomputed.add(key)`` after recomputing it."""
        return not self.recompute or key in self.recomputed

    @property
    def model_cache(self) -> Path:
        return Path(self.cache_dir) / "models"

    def run_dir(self, name: str, config) -> Path:
        return Path(self.cache_dir) / "figures" / f"{name}-{cache_key(config)}"

    def cached(self, name: str, config, compute: Callable[[Path], dict]) -> dict:
        """The results of ``compute(run_dir)`` for ``config``: read from ``run_dir/results.json``
        when a previous run stored them, else computed and stored (the file is written last, so
        an interrupted run is recomputed)."""
        directory = self.run_dir(name, config)
        path = directory / "results.json"
        if path.exists() and self.use_stored(str(directory)):
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # a damaged file is recomputed
        results = compute(directory)
        atomic_write_json(path, results)
        self.recomputed.add(str(directory))
        return results


def add_context_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and few steps: a smoke run of a minute or two")
    parser.add_argument("--out", default="figures/out",
                        help="output directory for PNG, PDF and CSV (default figures/out)")
    parser.add_argument("--cache-dir", default=".cache",
                        help="trained models (CACHE/models) and figure runs (CACHE/figures, "
                             "CACHE/preference) are reused from here (default .cache)")
    parser.add_argument("--real", action="store_true",
                        help="the real-model twins instead (SmolLM2-135M-Instruct: figures 1, 2, "
                             "3 and 8, written as figN_<name>_smollm2; about 40 min on 2 cores "
                             "the first time; needs the repository's data/)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the figure runs even when cached (models are reused)")


def context_from_args(args) -> FigureContext:
    return FigureContext(out_dir=Path(args.out), cache_dir=Path(args.cache_dir), quick=args.quick,
                         real=args.real, recompute=args.recompute)
