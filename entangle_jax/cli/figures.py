"""``entangle figures``: regenerate the paper's figures and the toolkit's own
(``entangle_jax.figures.paper``)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from entangle_jax.figures.context import add_context_options

    parser = subparsers.add_parser(
        "figures", help="regenerate every figure (PNG, PDF and the plotted numbers as CSV)",
        description="Runs the figures (fig1 … fig7): trains or reuses the models and runs "
                    "they need (cached under --cache-dir), then "
                    "writes OUT/<figure>.png, .pdf and .csv, and OUT/figures.json (timings); "
                    "--real: the real-model twins (figN_<name>_smollm2) and figures.json's "
                    "twin, figures_smollm2.json.")
    parser.add_argument("--only", help="comma-separated figures to run: numbers (1,3), fig3 or "
                                       "full names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("--gallery", metavar="DIR",
                        help="also write small copies of the PNGs into DIR (docs/gallery)")
    add_context_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from entangle_jax.cli.common import check_output_dir, given, locked_outputs, note
    from entangle_jax.figures.context import context_from_args
    from entangle_jax.figures.runner import discover, gallery_copy, load, run_figure, select
    from entangle_jax.io import atomic_write_json

    scripts = select(discover(), args.only, args.real)
    if args.list:
        unused = given(args, "quick", "out", "cache_dir", "recompute", "gallery")
        if unused:
            note(f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used: --list "
                 "only lists the figures")
        for stem, path in scripts.items():
            summary = " ".join((load(path).__doc__ or "").split("\n\n")[0].split())
            print(f"{stem:24s} {summary[:100] + ('…' if len(summary) > 100 else '')}")
        return 0
    ctx = context_from_args(args)
    summary_name = "figures_smollm2.json" if ctx.real else "figures.json"
    check_output_dir(ctx.out_dir, "--out", (summary_name,))
    check_output_dir(ctx.cache_dir, "--cache-dir")
    if args.gallery:
        check_output_dir(args.gallery, "--gallery")
    with locked_outputs((ctx.out_dir, "--out")):
        start = time.perf_counter()
        summary = {}
        bar = tqdm(scripts.items(), desc="figures", unit="figure")
        for stem, path in bar:
            bar.set_postfix_str(stem)
            output = run_figure(load(path), ctx)
            summary[output.stem] = {"seconds": round(output.seconds, 2),
                                    "files": [str(p) for p in output.paths]}
            if args.gallery:
                summary[output.stem]["gallery"] = str(gallery_copy(output.paths[0], args.gallery))
            tqdm.write(f"{output.stem:28s} {output.seconds:7.1f} s  → "
                       f"{Path(output.paths[0]).with_suffix('')}.{{png,pdf,csv}}")
        total = time.perf_counter() - start
        atomic_write_json(Path(ctx.out_dir) / summary_name,
                          {"quick": ctx.quick, "real": ctx.real, "total_seconds": round(total, 2),
                           "figures": summary})
    print(f"{len(summary)} figure(s) in {total:.1f} s; wrote {Path(ctx.out_dir) / summary_name}")
    return 0
