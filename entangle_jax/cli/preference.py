"""The preference branch of ``entangle train``: ``--objective NAME --checkpoint DIR`` trains a
policy from a checkpoint (the frozen reference) and writes the JSONL log.

``--steps``, ``--learning-rate``, ``--batch-size`` and ``--seed`` serve both branches; left unset
they take the defaults of the branch that runs (``resolve_sft_defaults`` for SFT, the
``PreferenceConfig`` defaults here)."""

from __future__ import annotations

import argparse

from entangle_jax.cli.common import (DATA_READING_OPTIONS, check_output_dir, check_output_file,
                                     is_pretrained, load_data_file, locked_outputs,
                                     model_from_args, nonnegative_int, not_applicable, note,
                                     parse_hparam_options, positive_int, user_data_from_args)
from entangle_jax.cli.common import given as given_options

#: Options shared with SFT whose default depends on the branch.
SHARED = ("steps", "learning_rate", "batch_size")
#: The ``dest`` of the options only preference training reads (``--objective`` aside).
PREFERENCE_OPTIONS = ("checkpoint", "probe_data", "train_params", "hparam", "optimizer", "shape",
                      "mitigation", "balanced", "mask_l1", "mask_lr", "probe_every",
                      "probe_size", "stratify", "log", "save")
#: SFT and model options preference training does not read: the model is the checkpoint's.
MODEL_OPTIONS = ("label_flip", "suffix", "pretrain_steps", "layers", "width", "heads", "max_len")


def add_preference_options(parser: argparse.ArgumentParser) -> None:
    from typing import get_args

    from entangle_jax.optimizers import Optimizer
    from entangle_jax.mitigations import Mitigation
    from entangle_jax.objectives import OBJECTIVES
    from entangle_jax.train.preference import PreferenceConfig

    d = PreferenceConfig()
    g = parser.add_argument_group(
        "preference training (with --objective)",
        f"Train from --checkpoint with a preference objective. --steps (default {d.steps}), "
        f"--learning-rate (default {d.learning_rate:g}), --batch-size (default {d.batch_size}) "
        "and --seed set this run; model and SFT options (and --out, --resume, "
        "--checkpoint-every) are refused.")
    g.add_argument("--objective", metavar="NAME",
                   help=f"{', '.join(OBJECTIVES)} (or another TRL loss_type name such as "
                        "sigmoid, hinge, sppo_hard)")
    g.add_argument("--checkpoint", metavar="DIR", help="the starting policy and frozen reference "
                                                       "(or --model)")
    g.add_argument("--probe-data", metavar="FILE",
                   help="held-out pairs for the probes (their prompts, chosen, rejected and probe "
                        "responses), read with the --data options; default: a sample of --data")
    g.add_argument("--train-params", default=d.train_params, metavar="SUBSET",
                   help="the trained parameters: all, last:K (the last K blocks and the final "
                        "norm) or lora:R (rank-R adapters on every block's dense kernels) "
                        f"(default {d.train_params})")
    g.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                   help="objective hyperparameter, e.g. beta=0.1 (repeatable)")
    g.add_argument("--optimizer", choices=get_args(Optimizer), default=d.optimizer,
                   help=f"(default {d.optimizer})")
    g.add_argument("--shape", default="long",
                   help="pair shape or suffix length: single, short, long or 0..12 "
                        "(default long; with --data or a checkpoint trained on a file the "
                        "pairs are the file's, and a given --shape is noted as unused)")
    g.add_argument("--mitigation", choices=get_args(Mitigation),
                   default=d.mitigation, help="pairwise normalized gradient or sparsity-"
                                              "regularized token masking (default none)")
    g.add_argument("--balanced", action="store_true",
                   help="normalized: use (d_w + d_l)/2 on both sides (case 1 for any objective)")
    g.add_argument("--stratify", action="store_true",
                   help="class-balanced batches: as many pairs whose chosen answer is Positive as "
                        "Negative in every step (the sentiment task only; plain draws follow the "
                        "sample's imbalance, which decides which held-out class falls)")
    g.add_argument("--mask-l1", type=float, default=d.mask_l1,
                   help=f"token_mask: the L1 weight λ (default {d.mask_l1:g})")
    g.add_argument("--mask-lr", type=float, default=d.mask_learning_rate,
                   help=f"token_mask: the mask's step size (default {d.mask_learning_rate:g})")
    g.add_argument("--probe-every", type=nonnegative_int, default=d.probe_every,
                   help=f"gradient probes every N steps, 0: none (default {d.probe_every})")
    g.add_argument("--probe-size", type=positive_int, default=d.probe_size,
                   help=f"probe pairs from the eval split, --probe-data or a sample of --data "
                        f"(default {d.probe_size}; at most as many as there are)")
    g.add_argument("--log", metavar="FILE",
                   help="JSONL log (default runs/preference/<method>.jsonl)")
    g.add_argument("--save", metavar="DIR", help="also save the trained policy as a checkpoint")
    parser.set_defaults(**{name: None for name in SHARED})


def resolve_sft_defaults(args) -> None:
    """Fill the shared options left unset with the SFT defaults (the SFT branch)."""
    from entangle_jax.config import SFTConfig

    defaults = SFTConfig()
    for name in SHARED:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(defaults, name))


def run_preference(args) -> int:
    import dataclasses
    from pathlib import Path

    from entangle_jax.checkpoint import save_checkpoint
    from entangle_jax.cli import UsageError
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.train.preference import PreferenceConfig, train_preference

    not_applicable(args, MODEL_OPTIONS, "with --objective: preference training starts from the "
                                        "--checkpoint/--model as it is")
    not_applicable(args, ("out", "resume", "checkpoint_every"),
                   "with --objective: preference training writes --log FILE (and --save DIR)")
    not_applicable(args, ("vocab_size",), "with --objective: the pairs are read with the "
                                          "checkpoint's own vocabulary or tokenizer")
    if not args.data:
        not_applicable(args, DATA_READING_OPTIONS, "without --data FILE (they read that file)")
    if args.probe_data and not args.data:
        raise UsageError("--probe-data needs --data (the training pairs)")
    if args.mitigation != "token_mask":
        not_applicable(args, ("mask_l1", "mask_lr"), "without --mitigation token_mask")
    if args.mitigation != "normalized":
        not_applicable(args, ("balanced",), "without --mitigation normalized")
    if args.probe_every == 0:
        not_applicable(args, ("probe_size", "probe_data"), "with --probe-every 0 (no probes)")
    lengths = parse_suffix_lengths(args.shape)
    if len(lengths) != 1:
        raise UsageError(f"--shape {args.shape!r}: give one shape or suffix length")
    given = {name: getattr(args, name) for name in SHARED if getattr(args, name) is not None}
    config = PreferenceConfig(
        objective=args.objective, hparams=parse_hparam_options(args.hparam),
        mitigation=args.mitigation, balanced=args.balanced, mask_l1=args.mask_l1,
        mask_learning_rate=args.mask_lr, optimizer=args.optimizer, suffix_length=lengths[0],
        probe_every=args.probe_every, probe_size=args.probe_size, train_params=args.train_params,
        stratify=args.stratify, seed=args.seed, **given)
    log = Path(args.log or f"runs/preference/{config.make_method().name}.jsonl")
    check_output_file(log, "--log")
    if args.save:
        check_output_dir(args.save, "--save", ("config.json", "params.npz"))
    ckpt = model_from_args(args)
    if ckpt is None:
        raise UsageError("--objective needs --model NAME|DIR or --checkpoint DIR (the starting "
                         "policy)")
    data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
    probe_data = (load_data_file(args, args.probe_data, ckpt.model_config, ckpt.tokenizer)
                  if args.probe_data else None)
    from_file = data is not None or (not is_pretrained(ckpt) and ckpt.user_data is not None)
    if from_file and given_options(args, "shape"):
        note(f"--shape {args.shape} is not used: the pairs are those of the data file "
             f"({args.data or ckpt.user_data.path}), not the sentiment task's")
    if config.probe_every:
        available, where = _probe_pairs_available(ckpt, data, probe_data)
        if available is not None and config.probe_size > available:
            note(f"--probe-size {config.probe_size} is more than the {available} pairs of "
                 f"{where}: the probes use all {available}")
    with locked_outputs((log, "--log", "file"), (args.save, "--save")):
        run = train_preference(ckpt, config, data=data, probe_data=probe_data, log_path=log)
        last = next(r for r in reversed(run.records) if r["kind"] == "train")
        print(f"wrote {log} ({config.steps} steps; last: logps/chosen "
              f"{last['logps/chosen']:.3f}, logps/rejected {last['logps/rejected']:.3f}, "
              f"rewards/accuracies {last['rewards/accuracies']:.2f})")
        if args.save:
            save_checkpoint(args.save, dataclasses.replace(ckpt, params=run.params))
            print(f"wrote checkpoint {args.save}")
        if any("probe/pairs/logps_chosen" in r for r in run.records):
            _write_probe_report(run.records, log)
    return 0


def _write_probe_report(records, log) -> None:
    """``<log>.report.md`` and ``.report.json``: what the run did to the probes; the verdict
    lines are printed."""
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.train.probe_report import format_probe_report, probe_report

    report = probe_report(records)
    text = format_probe_report(report)
    atomic_write_json(log.with_suffix(".report.json"), report)
    atomic_write_text(log.with_suffix(".report.md"), text + "\n")
    print("\n".join(line for line in text.splitlines() if line.startswith("- ")))
    print(f"wrote {log.with_suffix('.report.md')} and .report.json")


def _probe_pairs_available(ckpt, data, probe_data) -> tuple[int | None, str]:
    """How many probe pairs the run can draw from, and from where (``preference_pairs``)."""
    from entangle_jax.data.sentiment import make_sentiment_data
    from entangle_jax.data.userdata import load_from_config

    if probe_data is not None:
        return len(probe_data.records), f"--probe-data {probe_data.config.path}"
    if data is None and not is_pretrained(ckpt) and ckpt.user_data is not None:
        data = load_from_config(ckpt.user_data)
    if data is not None:
        return len(data.records), f"the training set {data.config.path}"
    if ckpt.data_config is None:
        return None, ""
    return len(make_sentiment_data(ckpt.data_config).eval), "the sentiment task's eval split"
