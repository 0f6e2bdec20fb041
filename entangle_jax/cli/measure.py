"""``entangle measure``: ⟨g_w,g_l⟩, norms, cosines and token-wise Grams at several suffix lengths."""

from __future__ import annotations

from entangle_jax.cli.common import (add_data_options, add_model_option, add_sft_options,
                                     configs_from_args, is_pretrained, model_from_args,
                                     nonnegative_int, positive_int, report_user_data,
                                     user_data_from_args)

#: Pairs of a pretrained model that get token-wise Grams by default (about a minute each at a
#: 64-token response on 2 CPU cores).
PRETRAINED_TOKEN_GRAMS = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure the chosen/rejected gradient geometry, write measure.json",
        description="Loads --checkpoint (or trains the default model, cached under .cache/models) "
                    "and measures eval pairs at each suffix length. With --data FILE it fine-tunes "
                    "on the file's prompt + chosen (cached) and measures its pairs, grouped by "
                    "their shared suffix length. Prints a table and writes OUT/measure.json and "
                    "OUT/measure.md.")
    parser.add_argument("--checkpoint", help="checkpoint directory written by `entangle train`")
    add_model_option(parser, "the model to measure (with --data for a pretrained model)")
    parser.add_argument("--float64", action="store_true",
                        help="compute in float64 (default float32)")
    parser.add_argument("--token-grams", type=nonnegative_int, metavar="N",
                        help="with --data: token-wise Grams for the first N pairs only (one backward "
                             "pass per response token; default: every pair for a tiny model, "
                             f"{PRETRAINED_TOKEN_GRAMS} for a pretrained one)")
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
    import dataclasses
    from pathlib import Path

    import jax

    from entangle_jax.cli import UsageError
    from entangle_jax.config import MAX_SUFFIX_LENGTH
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.data.userdata import load_from_config
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.measure import format_table, measure, measure_user_data
    from entangle_jax.models import in_precision
    from entangle_jax.train.sft import cached_sft, cached_sft_on

    if args.data and args.suffix_lengths:
        raise UsageError("--suffix-lengths applies to the sentiment task; with --data the pairs "
                         "are grouped by the length of their shared suffix")
    lengths = parse_suffix_lengths(args.suffix_lengths or "single,short,long", MAX_SUFFIX_LENGTH)
    configs = configs_from_args(args)  # validated even when a checkpoint is given
    ckpt = model_from_args(args)
    if is_pretrained(ckpt):
        if not args.data:
            raise UsageError(f"--model {args.model} measures real pairs: give --data FILE (for "
                             "example data/learning-dynamics-helpful-base/formal_prob_test.jsonl.gz "
                             "with --skip-bad-lines)")
        data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
    else:
        data = user_data_from_args(args, configs[0])
    if ckpt is not None and not is_pretrained(ckpt):
        if data is None and ckpt.user_data is not None:  # trained on a file: measure that file
            data = load_from_config(ckpt.user_data)
            report_user_data(data, ckpt.model_config)
    elif ckpt is None:
        ckpt = cached_sft(*configs) if data is None else cached_sft_on(configs[0], data, configs[2])
    token_grams = args.token_grams
    if token_grams is None and is_pretrained(ckpt):
        token_grams = PRETRAINED_TOKEN_GRAMS
    with jax.enable_x64(args.float64):
        if args.float64:
            config, graphdef, params = in_precision(ckpt.model_config, ckpt.params, "float64")
            ckpt = dataclasses.replace(ckpt, model_config=config, graphdef=graphdef,
                                       params=params)
        report = (measure(ckpt, lengths, n_pairs=args.pairs, seed=args.seed) if data is None else
                  measure_user_data(ckpt, data, n_pairs=args.pairs, seed=args.seed,
                                    token_gram_pairs=token_grams))
    table = format_table(report)
    out = Path(args.out)
    atomic_write_json(out / "measure.json", report)
    atomic_write_text(out / "measure.md", table + "\n")
    print(table)
    print(f"wrote {out / 'measure.json'} and {out / 'measure.md'}")
    return 0
