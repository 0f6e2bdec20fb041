"""``entangle train``: supervised fine-tuning of a small transformer; writes a checkpoint."""

from __future__ import annotations

from entangle_jax.cli.common import (DATA_READING_OPTIONS, add_data_options, add_model_option,
                                     add_resume_options, add_sft_options, check_output_dir,
                                     configs_from_args, locked_outputs, not_applicable,
                                     user_data_from_args, warn)
from entangle_jax.cli.preference import (PREFERENCE_OPTIONS, add_preference_options,
                                         resolve_sft_defaults, run_preference)

#: What an SFT run writes into --out.
CHECKPOINT_FILES = ("config.json", "params.npz", "train_state.npz", "metrics.jsonl")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune a small transformer on the sentiment task, write a checkpoint",
        description="Supervised fine-tuning (optax AdamW) on prompt + true-sentiment response. "
                    "Writes OUT/config.json and OUT/params.npz, the resumable OUT/train_state.npz "
                    "and the per-step log OUT/metrics.jsonl. With --objective: preference "
                    "training from --checkpoint instead, logged to a JSONL file.")
    parser.add_argument("--out", default="runs/sft", help="checkpoint directory (default runs/sft)")
    add_model_option(parser, "with --objective: the starting policy and frozen reference")
    add_sft_options(parser)
    add_data_options(parser)
    add_resume_options(parser)
    add_preference_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.objective:
        return run_preference(args)
    if args.model:
        from entangle_jax.cli import UsageError

        raise UsageError("--model is the starting policy of preference training: give --objective "
                         "(supervised fine-tuning trains a tiny model from scratch)")
    not_applicable(args, PREFERENCE_OPTIONS, "to supervised fine-tuning: they are options of "
                                             "preference training (give --objective NAME)")
    if args.data:
        not_applicable(args, ("suffix",), "with --data: the sentiment task's suffix; a data "
                                          "file's responses are trained as they are")
    else:
        not_applicable(args, DATA_READING_OPTIONS, "without --data FILE (they read that file)")
    resolve_sft_defaults(args)
    from entangle_jax.data.sentiment import make_sentiment_data
    from entangle_jax.train.sft import saved_progress, train_sft

    model_config, data_config, sft_config = configs_from_args(args)
    check_output_dir(args.out, "--out", CHECKPOINT_FILES)
    data = user_data_from_args(args, model_config) or make_sentiment_data(data_config)
    with locked_outputs((args.out, "--out")):
        if args.resume and saved_progress(args.out) is None:
            warn(f"--resume: no saved training state in {args.out}; starting from step 0")
        train_sft(model_config, data, sft_config, out_dir=args.out,
                  checkpoint_every=args.checkpoint_every, resume=args.resume)
    print(f"wrote checkpoint {args.out} ({sft_config.steps} SFT steps)")
    return 0
