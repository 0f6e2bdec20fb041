"""``entangle dynamics``: one-step prediction vs. actual change of log π_w, log π_l, per objective
and pair shape (docs/design.md §1.2)."""

from __future__ import annotations

import argparse

from entangle_jax.cli.common import (add_model_option, is_pretrained, model_from_args,
                                     nonnegative_int, positive_int, user_data_from_args)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "dynamics", help="one gradient step per pair: predicted vs. measured Δlog π_w, Δlog π_l",
        description="For each objective and pair shape: per-pair gradient steps of size η, η/2, "
                    "η/4, η/8 against the first-order prediction η(d_w‖g_w‖² − d_l⟨g_w,g_l⟩), "
                    "η(d_w⟨g_w,g_l⟩ − d_l‖g_l‖²): predicted and measured case fractions "
                    "(1: w↑ l↓, 2: both ↓, 3: both ↑, 4: w↓ l↑), sign agreement, relative error "
                    "and the fitted order of the error in η; and one batched SGD and Adam step, "
                    "where the per-pair formula's case is compared with the real one. Default: "
                    "every objective of the zoo, shapes single, short, long, on the default model.")
    parser.add_argument("--objective", action="append", metavar="NAME",
                        help="an objective (repeatable or comma-separated; TRL loss_type names "
                             "accepted); default: the whole zoo")
    parser.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                        help="objective hyperparameter, e.g. beta=0.5 (only with one --objective)")
    parser.add_argument("--shape", default="single,short,long",
                        help="pair shapes or suffix lengths, e.g. single,short,long or 0,2,6 "
                             "(default single,short,long; ignored for a --data checkpoint)")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="a checkpoint from `entangle train` (default: the default model, "
                             "trained once and cached in .cache/models)")
    add_model_option(parser, "the model (instead of --checkpoint; a pretrained model needs "
                             "--data)")
    parser.add_argument("--data", metavar="FILE",
                        help="real preference pairs (formats: docs/user-data.md) instead of the "
                             "sentiment task; read with --skip-bad-lines and the token budgets")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="skip records that are not valid pairs (each is reported)")
    parser.add_argument("--max-prompt-tokens", type=positive_int,
                        help="a longer prompt keeps its last tokens (default: 128 for a "
                             "pretrained model)")
    parser.add_argument("--max-response-tokens", type=positive_int,
                        help="a longer response keeps its first tokens (default: 64 for a "
                             "pretrained model)")
    parser.add_argument("--pairs", type=positive_int, default=32,
                        help="eval pairs per shape (default 32)")
    parser.add_argument("--lr", type=_positive_float,
                        help="step size η (default: per objective and shape, the η at which the "
                             "median pair's larger predicted change is --target-change)")
    parser.add_argument("--target-change", type=_positive_float, default=0.05,
                        help="predicted |Δlog π| of the median pair that sets η (default 0.05)")
    parser.add_argument("--halvings", type=nonnegative_int, default=3,
                        help="step sizes η·2^-k, k = 0..N, for the error order (default 3)")
    parser.add_argument("--adam-lr", type=_positive_float, default=1e-4,
                        help="learning rate of the batched Adam step (default 1e-4)")
    parser.add_argument("--normalized", action="store_true",
                        help="use the pairwise normalized update d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖")
    parser.add_argument("--float32", action="store_true",
                        help="compute in float32 (default float64, so the O(η²) error stands "
                             "above rounding)")
    parser.add_argument("--out", metavar="DIR",
                        help="write DIR/dynamics.json and DIR/dynamics.md")
    parser.set_defaults(run=run)


def _objectives(args):
    from entangle_jax.cli import UsageError
    from entangle_jax.objectives import OBJECTIVES, get_objective, parse_hparams

    names = [n.strip() for item in (args.objective or []) for n in item.split(",") if n.strip()]
    hparams = parse_hparams(args.hparam)
    if hparams and len(names) != 1:
        raise UsageError("--hparam needs exactly one --objective")
    return [get_objective(name, **hparams) for name in names or OBJECTIVES]


def run(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from entangle_jax.cli import UsageError
    from entangle_jax.config import DataConfig, ModelConfig, SFTConfig
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.dynamics import format_report, one_step_report
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.train.sft import cached_sft

    objectives = _objectives(args)
    ckpt = model_from_args(args) or cached_sft(ModelConfig(), DataConfig(), SFTConfig())
    if is_pretrained(ckpt) and not args.data:
        raise UsageError(f"--model {args.model} needs --data FILE (real preference pairs)")
    data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
    use_file = data is not None or ckpt.user_data is not None
    lengths = [None] if use_file else parse_suffix_lengths(args.shape)
    total = len(objectives) * len(lengths)
    with tqdm(total=total, desc="dynamics", leave=False) as bar:
        def progress(label):
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        report = one_step_report(ckpt, objectives, lengths, n_pairs=args.pairs,
                                 normalized=args.normalized, target_change=args.target_change,
                                 lr=args.lr, halvings=args.halvings, adam_lr=args.adam_lr,
                                 float64=not args.float32, progress=progress, data=data)
    report["checkpoint"] = (args.model or args.checkpoint
                            or "default model (cached_sft defaults)")
    table = format_report(report)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "dynamics.json", report)
        atomic_write_text(out / "dynamics.md", table)
        print(f"wrote {out / 'dynamics.json'} and {out / 'dynamics.md'}")
    return 0
