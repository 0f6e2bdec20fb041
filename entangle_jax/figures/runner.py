"""Find, load and run the figure scripts of ``figures/``.

A figure script ``figures/figN_<name>.py`` defines three functions:

- ``config(quick: bool)`` → a frozen dataclass (the full or the tiny configuration);
- ``compute(config, ctx: FigureContext, run_dir: Path)`` → JSON-ready results (the run: trains and
  measures; may write a log into ``run_dir``); cached by the config's hash;
- ``plot(results, config)`` → ``(matplotlib figure, rows)``, the rows being the plotted numbers.

``run_figure`` writes ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv`` into the output directory.
Each script ends with ``sys.exit(script_main(__file__))`` so that it also runs on its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from entangle_jax.config import ConfigError
from entangle_jax.figures import style
from entangle_jax.figures.context import FigureContext, add_context_options, context_from_args
from entangle_jax.figures.tables import write_csv
from entangle_jax.io import atomic_write_bytes

#: The repository's ``figures/`` folder (the scripts are not installed with the package).
SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "figures"
_STEM = re.compile(r"fig(\d+)_\w+")


@dataclass(frozen=True)
class FigureOutput:
    stem: str
    paths: tuple[Path, ...]  # PNG, PDF, CSV
    seconds: float


def discover(scripts_dir: str | Path = SCRIPTS_DIR) -> dict[str, Path]:
    """``{stem: path}`` of the figure scripts ``figN_*.py`` in ``scripts_dir``, by figure number."""
    scripts_dir = Path(scripts_dir)
    if not scripts_dir.is_dir():
        raise FileNotFoundError(f"no figure scripts: {scripts_dir} is not a directory (run from "
                                "a source checkout of entangle_jax)")
    found = [p for p in scripts_dir.glob("fig*.py") if _STEM.fullmatch(p.stem)]
    return {p.stem: p for p in sorted(found, key=lambda p: int(_STEM.fullmatch(p.stem)[1]))}


def select(scripts: dict[str, Path], only: str | None) -> dict[str, Path]:
    """The scripts named by ``only``: comma-separated numbers (``1,3``), ``fig3`` or full stems."""
    if not only:
        return scripts
    chosen = {}
    for item in (part.strip() for part in only.split(",")):
        matches = [stem for stem in scripts
                   if item in (stem, stem.split("_")[0], stem.split("_")[0].removeprefix("fig"))]
        if not matches:
            raise ConfigError(f"--only {item!r} names no figure; known: {', '.join(scripts)}")
        chosen.update({stem: scripts[stem] for stem in matches})
    return dict(sorted(chosen.items(), key=lambda kv: list(scripts).index(kv[0])))


def load(path: str | Path) -> ModuleType:
    """Import a figure script by its path."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"entangle_figures.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def run_figure(module: ModuleType, ctx: FigureContext, config=None) -> FigureOutput:
    """Compute (or reuse) one figure script's run, then write its PNG, PDF and CSV; ``config``
    replaces the script's own ``config(ctx.quick)``."""
    start = time.perf_counter()
    stem = Path(module.__file__).stem
    config = module.config(ctx.quick) if config is None else config
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


def script_main(path: str | Path, argv: list[str] | None = None) -> int:
    """``python figures/figN_name.py [--quick] [--out DIR]``: run that one figure."""
    module = load(path)
    parser = argparse.ArgumentParser(prog=Path(path).name, description=module.__doc__)
    add_context_options(parser)
    output = run_figure(module, context_from_args(parser.parse_args(argv)))
    print(f"{output.stem}: {output.seconds:.1f} s → " + ", ".join(map(str, output.paths)))
    return 0
