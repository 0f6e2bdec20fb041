"""One look for every figure: colours, sizes, and how a figure is saved.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies).
Chosen is always blue and rejected always vermillion, in every figure; the margin is black. Sizes
are for a paper page: ``PAGE_WIDTH`` inches across, 8-point text, so a figure is readable when
printed at its natural size.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, the same output on every machine

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from entangle_jax.io import atomic_write_bytes  # noqa: E402

CHOSEN = "#0072B2"  # blue
REJECTED = "#D55E00"  # vermillion
MARGIN = "#000000"
#: Colours for a categorical series (regimes, objectives, …), in order; never CHOSEN or REJECTED.
SERIES = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#999999", "#7F3C8D", "#11A579",
          "#F0E442")
#: Background of the gradient-condition cases (1: w↑ l↓, 2: both ↓, 3: both ↑).
CASE_FILL = {1: "#DCEFE4", 2: "#F6DCD0", 3: "#DCE6F3"}
#: Line style of the response shapes.
SHAPE_LINESTYLE = {"single": "-", "short": "--", "long": ":"}

PAGE_WIDTH = 6.75  # inches: a full-width figure on a two-column paper page
DPI = 200  # PNG resolution (PDFs are vector)

RC = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4, "lines.markersize": 3.5,
    "legend.frameon": False, "savefig.dpi": DPI, "figure.dpi": 100,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable, searchable text
}


def series_color(index: int) -> str:
    return SERIES[index % len(SERIES)]


def figure(nrows: int = 1, ncols: int = 1, *, height: float = 2.4, width: float = PAGE_WIDTH,
           **kwargs):
    """A figure of ``nrows × ncols`` panels in the house style (``height`` per row, in inches)."""
    plt.rcParams.update(RC)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), layout="constrained",
                             squeeze=False, **kwargs)
    return fig, axes


def band(ax, x, center, lo, hi, *, color, label=None, **line_kwargs):
    """A line with a shaded interval ``[lo, hi]`` in the same colour."""
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
    return ax.plot(x, center, color=color, label=label, **line_kwargs)


def legend_below(fig, handles=None, labels=None, ncol: int | None = None):
    """One legend for the whole figure, below the panels, where it cannot hide data."""
    if handles is None:
        handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 6))


def panel_title(ax, letter: str, text: str, **kwargs) -> None:
    """A left-aligned panel title "(a) what the panel shows"."""
    ax.set_title(f"({letter}) {text}", loc="left", **kwargs)


def suptitle(fig, text: str, width: int = 90) -> None:
    """The figure's title, each line wrapped to ``width`` characters (fits ``PAGE_WIDTH``)."""
    lines = [wrapped for line in text.splitlines()
             for wrapped in (textwrap.wrap(line, width) or [""])]
    fig.suptitle("\n".join(lines))


def symlog_linthresh(values) -> float:
    """The linear range of a symmetric log scale for ``values`` (signed numbers spanning several
    decades, such as ⟨g_w, g_l⟩ across regimes): their 5% quantile in magnitude."""
    magnitudes = np.abs(np.asarray(values, float))
    magnitudes = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    return max(float(np.quantile(magnitudes, 0.05)) if magnitudes.size else 1.0, 1e-12)


def symlog_ticks(linthresh: float, vmax: float, per_side: int = 3,
                 gap: float = 10.0) -> list[float]:
    """0 and whole decades from ``gap``·linthresh up to ``vmax`` on each side (at most
    ``per_side`` per side), so that no two labels crowd each other near the linear range."""
    decades = [10.0 ** k for k in range(int(np.ceil(np.log10(gap * linthresh))),
                                        int(np.floor(np.log10(max(vmax, linthresh)))) + 1)]
    decades = decades[::-1][::max(1, -(-len(decades) // per_side))][::-1]
    return [-d for d in reversed(decades)] + [0.0] + decades


def symlog_axis(ax, values, axis: str = "y") -> None:
    """A symmetric log scale fitted to ``values``, with ``symlog_ticks``."""
    linthresh = symlog_linthresh(values)
    getattr(ax, f"set_{axis}scale")("symlog", linthresh=linthresh)
    ticks = symlog_ticks(linthresh, float(np.nanmax(np.abs(values))), per_side=4, gap=1.0)
    getattr(ax, f"set_{axis}ticks")(ticks, [f"{t:g}" for t in ticks])
    getattr(ax, f"{axis}axis").set_minor_locator(matplotlib.ticker.NullLocator())


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` into ``out_dir`` (atomically) and close the figure."""
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        # no creation date in the PDF: the same figure gives the same file
        fig.savefig(buffer, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(atomic_write_bytes(Path(out_dir) / f"{stem}.{fmt}", buffer.getvalue()))
    plt.close(fig)
    return paths
