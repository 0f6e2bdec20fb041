"""``entangle measure``: ⟨g_w,g_l⟩, norms, cosines and token-wise Grams at several suffix lengths."""

from __future__ import annotations

from entangle_jax.cli.common import (DATA_READING_OPTIONS, SFT_OPTIONS, add_data_options,
                                     add_model_option, add_sft_options, check_output_dir,
                                     checkpoint_fields, configs_from_args, count_or_all, given,
                                     is_pretrained, locked_outputs, model_from_args,
                                     nonnegative_int, not_applicable, note, report_user_data,
                                     user_data_from_args, warn)

#: Pairs of a pretrained model that get token-wise Grams by default (about a minute each at a
#: 64-token response on 2 CPU cores).
PRETRAINED_TOKEN_GRAMS = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure the chosen/rejected gradient geometry, write measure.json",
        description="Loads --checkpoint (or trains the default model, cached under .cache/models) "
                    "and measures eval pairs at each suffix length. With --data FILE it fine-tunes "
                    "on the file's prompt + chosen (cached) and measures its pairs, grouped by "
                    "their shared suffix length (L = 0 split by whether the responses share a "
                    "prefix) and, with --group-by, by a field of the records. Prints a table and "
                    "writes OUT/measure.json and OUT/measure.md. Model and SFT options set the "
                    "model measure trains; with --checkpoint/--model they are refused.")
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
    parser.add_argument("--pairs", type=count_or_all, metavar="N|all",
                        help="pairs to measure, drawn with --seed: N or all (default: every record "
                             "of --data, or eval statement, up to 64; more than there are is "
                             "refused)")
    parser.add_argument("--group-by", metavar="FIELD",
                        help="with --data: also summarize the pairs per value of FIELD, a field "
                             "of the records besides prompt, chosen and rejected (e.g. a source "
                             "or category column)")
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
    from entangle_jax.data.sentiment import make_sentiment_data, parse_suffix_lengths
    from entangle_jax.data.userdata import load_from_config
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.measure import (duplicate_records, format_table, measure,
                                      measure_user_data, record_fields, resolve_pairs)
    from entangle_jax.models import in_precision
    from entangle_jax.train.sft import cached_sft, cached_sft_on

    if args.data and args.suffix_lengths:
        raise UsageError("--suffix-lengths applies to the sentiment task; with --data the pairs "
                         "are grouped by the length of their shared suffix")
    lengths = parse_suffix_lengths(args.suffix_lengths or "single,short,long", MAX_SUFFIX_LENGTH)
    configs = configs_from_args(args)  # validated even when a checkpoint is given
    out = Path(args.out)
    check_output_dir(out, "--out", ("measure.json", "measure.md"))
    given_model = "--model" if args.model else "--checkpoint" if args.checkpoint else None
    if given_model:
        not_applicable(args, SFT_OPTIONS, f"with {given_model}: they set the model measure trains "
                                          "itself; a given model is measured as it was trained")
    ckpt = model_from_args(args)
    pretrained = is_pretrained(ckpt)
    data_checkpoint = ckpt is not None and not pretrained and ckpt.user_data is not None
    if pretrained and not args.data:
        raise UsageError(f"--model {args.model} measures real pairs: give --data FILE (for "
                         "example data/learning-dynamics-helpful-base/formal_prob_test.jsonl.gz "
                         "with --skip-bad-lines)")
    if not args.data:
        not_applicable(args, DATA_READING_OPTIONS,
                       "without --data (they read that file; a checkpoint trained on a file "
                       "rereads it as it was recorded)" if data_checkpoint
                       else "without --data FILE (they read that file)")
    if pretrained:
        not_applicable(args, ("vocab_size",), f"to --model {args.model}: a pretrained model reads "
                                              "text with its own tokenizer")
    if not (args.data or data_checkpoint):
        not_applicable(args, ("token_grams", "group_by"),
                       "to the sentiment task: they apply to the pairs of --data FILE (every "
                       "sentiment pair gets its token-wise Gram)")
    if data_checkpoint and args.suffix_lengths:
        raise UsageError(f"--suffix-lengths applies to the sentiment task; {args.checkpoint} was "
                         "trained on a data file, whose pairs are grouped by the length of their "
                         "shared suffix")
    if pretrained:
        data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
    else:
        data = user_data_from_args(args, configs[0])
    if data is None and data_checkpoint:  # trained on a file: measure that file
        data = load_from_config(ckpt.user_data)
        report_user_data(data, ckpt.model_config)
    # how many pairs, of how many: settled before any training
    if data is not None:
        n_records, source = len(data.records), f"{data.config.path} holds only"
    else:
        data_config = configs[1] if ckpt is None else ckpt.data_config
        n_records = None if data_config is None else len(make_sentiment_data(data_config).eval)
        source = "the eval split holds only"
    if n_records is not None:
        if isinstance(args.pairs, int) and args.pairs > n_records:
            raise UsageError(f"--pairs {args.pairs}: {source} {n_records} usable pairs; give "
                             "--pairs all, or a smaller number")
        n_pairs = resolve_pairs(args.pairs, n_records, source)
    else:  # a checkpoint without data: measure() says so
        n_pairs = None if args.pairs == "all" else args.pairs
    if given_model and n_records is not None and n_pairs == n_records and given(args, "seed"):
        note(f"--seed {args.seed} is not used: all {n_records} pairs are measured (no sample is "
             f"drawn) and the model of {given_model} is not trained")
    if data is not None:
        if args.group_by is not None and args.group_by not in record_fields(data.records):
            fields = record_fields(data.records)
            raise UsageError(f"--group-by {args.group_by}: no record of {data.config.path} has "
                             f"that field (" + (f"their fields: {', '.join(fields)}" if fields else
                                               "they have none besides prompt, chosen, rejected")
                             + ")")
        repeats = duplicate_records(data.records)
        if repeats:
            k, first = repeats[0]
            warn(f"{len(repeats)} of {n_records} records of {data.config.path} repeat an earlier "
                 f"pair (same prompt, chosen and rejected; first: {data.records[k].where} = "
                 f"{data.records[first].where}); each copy is measured as a pair of its own "
                 "(counted in duplicate_pairs)")
    token_grams = args.token_grams
    if token_grams is None and pretrained:
        token_grams = PRETRAINED_TOKEN_GRAMS
    with locked_outputs((out, "--out")):
        if ckpt is None:
            ckpt = (cached_sft(*configs) if data is None
                    else cached_sft_on(configs[0], data, configs[2]))
        with jax.enable_x64(args.float64):
            if args.float64:
                config, graphdef, params = in_precision(ckpt.model_config, ckpt.params, "float64")
                ckpt = dataclasses.replace(ckpt, model_config=config, graphdef=graphdef,
                                           params=params)
            report = (measure(ckpt, lengths, n_pairs=n_pairs, seed=args.seed) if data is None else
                      measure_user_data(ckpt, data, n_pairs=n_pairs, seed=args.seed,
                                        token_gram_pairs=token_grams, group_by=args.group_by))
        report.update(checkpoint_fields(args, ckpt))
        table = format_table(report)
        atomic_write_json(out / "measure.json", report)
        atomic_write_text(out / "measure.md", table + "\n")
    print(table)
    what = (f"records of {data.config.path}" if data is not None
            else "eval statements, at each suffix length")
    print(f"measured {report['n_measured']} of {report['n_records']} {what}")
    print(f"wrote {out / 'measure.json'} and {out / 'measure.md'}")
    return 0
