"""Find, load and run the figures (modules ``entangle_jax.figures.paper.figN_<name>``, installed
with the package; the repository's ``figures/figN_<name>.py`` scripts run them one at a time).

A figure module defines three functions:

- ``config(quick: bool)`` → a frozen dataclass (the full or the tiny configuration); a module may
  also (or only) define ``real_config(quick)``, its real-model twin (``FigureContext.real``),
  written as ``<stem>_smollm2``;
- ``compute(config, ctx: FigureContext, run_dir: Path)`` → JSON-ready results (the run: trains and
  measures; may write a log into ``run_dir``); cached by the config's hash;
- ``plot(results, config)`` → ``(matplotlib figure, rows)``, the rows being the plotted numbers.

``run_figure`` writes ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv`` into the output directory.
"""

from __future__ import annotations

import importlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from entangle_jax.config import ConfigError
from entangle_jax.figures import paper, style
from entangle_jax.figures.context import FigureContext
from entangle_jax.figures.tables import write_csv
from entangle_jax.io import atomic_write_bytes

_STEM = re.compile(r"fig(\d+)_\w+")


@dataclass(frozen=True)
class FigureOutput:
    stem: str
    paths: tuple[Path, ...]  # PNG, PDF, CSV
    seconds: float


def discover() -> dict[str, str]:
    """``{stem: module name}`` of the figure modules ``figN_*``, by figure number."""
    found = [p.stem for p in Path(paper.__file__).parent.glob("fig*.py") if _STEM.fullmatch(p.stem)]
    return {stem: f"{paper.__name__}.{stem}"
            for stem in sorted(found, key=lambda stem: int(_STEM.fullmatch(stem)[1]))}


def select(scripts: dict[str, str], only: str | None, real: bool = False) -> dict[str, str]:
    """The scripts named by ``only``: comma-separated numbers (``1,3``), ``fig3`` or full stems;
    of those, the ones with a configuration of the kind asked for (``real``: a real-model twin)."""
    kind = "real_config" if real else "config"
    scripts = {stem: name for stem, name in scripts.items() if hasattr(load(name), kind)}
    if not only:
        return scripts
    chosen = {}
    for item in (part.strip() for part in only.split(",")):
        matches = [stem for stem in scripts
                   if item in (stem, stem.split("_")[0], stem.split("_")[0].removeprefix("fig"))]
        if not matches:
            twin = " with a real-model twin" if real else ""
            raise ConfigError(f"--only {item!r} names no figure{twin}; known: "
                              f"{', '.join(scripts)}")
        chosen.update({stem: scripts[stem] for stem in matches})
    return dict(sorted(chosen.items(), key=lambda kv: list(scripts).index(kv[0])))


def load(name: str) -> ModuleType:
    """Import a figure module by its name (``discover``'s values)."""
    return importlib.import_module(name)


def run_figure(module: ModuleType, ctx: FigureContext, config=None) -> FigureOutput:
    """Compute (or reuse) one figure script's run, then write its PNG, PDF and CSV; ``config``
    replaces the script's own ``config(ctx.quick)`` (``real_config`` with ``ctx.real``)."""
    start = time.perf_counter()
    stem = Path(module.__file__).stem + ("_smollm2" if ctx.real else "")
    if config is None:
        config = (module.real_config if ctx.real else module.config)(ctx.quick)
    results = ctx.cached(stem, config, lambda run_dir: module.compute(config, ctx, run_dir))
    fig, rows = module.plot(results, config)
    csv = write_csv(Path(ctx.out_dir) / f"{stem}.csv", rows)
    paths = [*style.save(fig, ctx.out_dir, stem), csv]
    return FigureOutput(stem, tuple(paths), time.perf_counter() - start)


def gallery_copy(png: str | Path, directory: str | Path, width: int = 1000) -> Path:
    """A smaller copy of a figure's PNG (``width`` pixels, palette-quantized) for the README."""
    from PIL import Image

    with Image.open(png) as image:
        image = image.convert("RGB")
        height = round(image.height * width / image.width)
        small = image.resize((width, height), Image.LANCZOS).quantize(colors=256)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    return atomic_write_bytes(Path(directory) / Path(png).name, buffer.getvalue())

