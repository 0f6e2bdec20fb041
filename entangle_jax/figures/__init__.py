"""Figures: the shared style, the cached figure runs and the runner of the scripts in ``figures/``
(``entangle figures``). See ``figures.runner`` for what a figure script defines."""

from entangle_jax.figures.runs import FigureContext, mean_ci95, read_csv, write_csv

__all__ = ["FigureContext", "mean_ci95", "read_csv", "write_csv"]
