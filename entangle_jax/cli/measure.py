"""``entangle measure``: ⟨g_w,g_l⟩, norms, cosines and token-wise Grams at several suffix lengths."""

from __future__ import annotations

from entangle_jax.cli.common import add_sft_options, configs_from_args, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure the chosen/rejected gradient geometry, write measure.json",
        description="Loads --checkpoint (or trains the default model, cached under .cache/models) "
                    "and measures eval pairs at each suffix length. Prints a table and writes "
                    "OUT/measure.json and OUT/measure.md.")
    parser.add_argument("--checkpoint", help="checkpoint directory written by `entangle train`")
    parser.add_argument("--suffix-lengths", default="single,short,long",
                        help="comma-separated suffix lengths or shapes single/short/long "
                             "(default single,short,long = 0,2,6)")
    parser.add_argument("--pairs", type=positive_int, default=64,
                        help="number of eval pairs (default 64)")
    parser.add_argument("--out", default="reports", help="output directory (default reports)")
    add_sft_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from entangle_jax.checkpoint import load_checkpoint
    from entangle_jax.config import MAX_SUFFIX_LENGTH
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.measure import format_table, measure
    from entangle_jax.train.sft import cached_sft

    lengths = parse_suffix_lengths(args.suffix_lengths, MAX_SUFFIX_LENGTH)
    configs = configs_from_args(args)  # validated even when a checkpoint is given
    ckpt = load_checkpoint(args.checkpoint) if args.checkpoint else cached_sft(*configs)
    report = measure(ckpt, lengths, n_pairs=args.pairs, seed=args.seed)
    table = format_table(report)
    out = Path(args.out)
    atomic_write_json(out / "measure.json", report)
    atomic_write_text(out / "measure.md", table + "\n")
    print(table)
    print(f"wrote {out / 'measure.json'} and {out / 'measure.md'}")
    return 0
