"""``entangle measure``: ⟨g_w,g_l⟩, norms, cosines and token-wise Grams at several suffix lengths."""

from __future__ import annotations

from entangle_jax.cli.common import (add_data_options, add_sft_options, configs_from_args,
                                     positive_int, report_user_data, user_data_from_args)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure the chosen/rejected gradient geometry, write measure.json",
        description="Loads --checkpoint (or trains the default model, cached under .cache/models) "
                    "and measures eval pairs at each suffix length. With --data FILE it fine-tunes "
                    "on the file's prompt + chosen (cached) and measures its pairs, grouped by "
                    "their shared suffix length. Prints a table and writes OUT/measure.json and "
                    "OUT/measure.md.")
    parser.add_argument("--checkpoint", help="checkpoint directory written by `entangle train`")
    parser.add_argument("--suffix-lengths",
                        help="comma-separated suffix lengths or shapes single/short/long "
                             "(default single,short,long = 0,2,6; not with --data)")
    parser.add_argument("--pairs", type=positive_int, default=64,
                        help="number of eval pairs (default 64)")
    parser.add_argument("--out", default="reports", help="output directory (default reports)")
    add_sft_options(parser)
    add_data_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from entangle_jax.checkpoint import load_checkpoint
    from entangle_jax.cli import UsageError
    from entangle_jax.config import MAX_SUFFIX_LENGTH
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.data.userdata import load_from_config
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.measure import format_table, measure, measure_user_data
    from entangle_jax.train.sft import cached_sft, cached_sft_on

    if args.data and args.suffix_lengths:
        raise UsageError("--suffix-lengths applies to the sentiment task; with --data the pairs "
                         "are grouped by the length of their shared suffix")
    lengths = parse_suffix_lengths(args.suffix_lengths or "single,short,long", MAX_SUFFIX_LENGTH)
    configs = configs_from_args(args)  # validated even when a checkpoint is given
    data = user_data_from_args(args, configs[0])
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        if data is None and ckpt.user_data is not None:  # trained on a file: measure that file
            data = load_from_config(ckpt.user_data)
            report_user_data(data, ckpt.model_config)
    else:
        ckpt = cached_sft(*configs) if data is None else cached_sft_on(configs[0], data, configs[2])
    report = (measure(ckpt, lengths, n_pairs=args.pairs, seed=args.seed) if data is None else
              measure_user_data(ckpt, data, n_pairs=args.pairs, seed=args.seed))
    table = format_table(report)
    out = Path(args.out)
    atomic_write_json(out / "measure.json", report)
    atomic_write_text(out / "measure.md", table + "\n")
    print(table)
    print(f"wrote {out / 'measure.json'} and {out / 'measure.md'}")
    return 0
