"""``entangle dynamics``: one-step prediction vs. actual change of log π_w, log π_l, per objective
and pair shape (docs/design.md §1.2)."""

from __future__ import annotations

import argparse
import math

from entangle_jax.cli.common import (DATA_READING_OPTIONS, add_model_option,
                                     add_pair_file_options, check_output_dir, checkpoint_fields,
                                     given, is_pretrained, locked_outputs, model_from_args,
                                     nonnegative_int, not_applicable, note, parse_hparam_options,
                                     positive_float, positive_int, user_data_from_args)

#: The largest step size accepted (--lr, --adam-lr): a step η·u with η beyond it moves the
#: parameters so far that the measured change is overflow, not dynamics.
MAX_STEP = 1e6


def _step_size(text: str) -> float:
    value = positive_float(text)
    if value > MAX_STEP:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: a step size must lie in "
                                         f"(0, {MAX_STEP:g}]")
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
    add_pair_file_options(parser, "real preference pairs instead of the sentiment task")
    parser.add_argument("--pairs", type=positive_int, default=32,
                        help="eval pairs per shape (default 32)")
    parser.add_argument("--lr", type=_step_size,
                        help="step size η, in (0, %g] (default: per objective and shape, the η at "
                             "which the median pair's larger predicted change is "
                             "--target-change); a step whose measured change is not finite is "
                             "refused" % MAX_STEP)
    parser.add_argument("--target-change", type=positive_float,
                        help="predicted |Δlog π| of the median pair that sets η when --lr is not "
                             "given (default 0.05)")
    parser.add_argument("--halvings", type=nonnegative_int, default=3,
                        help="step sizes η·2^-k, k = 0..N, for the error order (default 3)")
    parser.add_argument("--adam-lr", type=_step_size, default=1e-4,
                        help="learning rate of the batched Adam step, in (0, %g] (default 1e-4; "
                             "no Adam step with --normalized)" % MAX_STEP)
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
    from entangle_jax.objectives import OBJECTIVES, get_objective

    names = [n.strip() for item in (args.objective or []) for n in item.split(",") if n.strip()]
    hparams = parse_hparam_options(args.hparam)
    if hparams and len(names) != 1:
        raise UsageError("--hparam needs exactly one --objective")
    return [get_objective(name, **hparams) for name in names or OBJECTIVES]


#: The measured quantities of a row that must be finite: (where in the row, which step made it).
_MEASURED = (("pairs", ("actual_w", "actual_l", "predicted_w", "predicted_l"), "one_step"),
             ("one_step", ("mean_actual_w", "mean_actual_l"), "one_step"),
             ("batch_sgd", ("mean_actual_w", "mean_actual_l"), "batch_sgd"),
             ("batch_adam", ("mean_actual_w", "mean_actual_l"), "batch_adam"))


def _finite(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(v is None or math.isfinite(v) for v in values)


def check_steps_finite(report: dict, args) -> None:
    """Refuse (``UsageError``) a report in which a step made a non-finite change of a log-prob:
    its row would be nonsense, not dynamics. (``batch_adam``'s cross terms are undefined by
    design and not checked.)"""
    from entangle_jax.cli import UsageError

    for row in report["results"]:
        for part, keys, step in _MEASURED:
            values = row.get(part) or {}
            if all(_finite(values.get(k)) for k in keys):
                continue
            where = f"{row['objective']}, {row['shape']}"
            if step == "batch_adam":
                raise UsageError(f"the batched Adam step of --adam-lr {args.adam_lr:g} gives "
                                 f"non-finite log-probs ({where}); choose a smaller --adam-lr")
            eta = row["one_step"]["lr"]
            which = "batched SGD step" if step == "batch_sgd" else "step"
            cause = ("--lr" if args.lr is not None else
                     f"--target-change (η = {eta:.3g} was set by --target-change "
                     f"{args.target_change or 0.05:g})")
            raise UsageError(f"the {which} of η = {eta:.3g} gives non-finite log-probs "
                             f"({where}); choose a smaller {cause}")


def run(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from entangle_jax.cli import UsageError
    from entangle_jax.config import DataConfig, ModelConfig, SFTConfig
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.dynamics_report import format_report, one_step_report
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.train.sft import cached_sft

    objectives = _objectives(args)
    if args.lr is not None:
        not_applicable(args, ("target_change",),
                       "with --lr: it sets η only when --lr is not given")
    if args.normalized:
        not_applicable(args, ("adam_lr",), "with --normalized: the normalized update has no "
                                           "batched Adam step")
    if not args.data:
        not_applicable(args, DATA_READING_OPTIONS, "without --data FILE (they read that file)")
    if args.out:
        check_output_dir(args.out, "--out", ("dynamics.json", "dynamics.md"))
    ckpt = model_from_args(args)
    if is_pretrained(ckpt) and not args.data:
        raise UsageError(f"--model {args.model} needs --data FILE (real preference pairs)")
    with locked_outputs((args.out, "--out")):
        if ckpt is None:
            ckpt = cached_sft(ModelConfig(), DataConfig(), SFTConfig())
        data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
        use_file = data is not None or ckpt.user_data is not None
        if use_file and given(args, "shape"):
            note(f"--shape {args.shape} is not used: the pairs are those of the data file "
                 f"({args.data or ckpt.user_data.path}), not the sentiment task's")
        lengths = [None] if use_file else parse_suffix_lengths(args.shape)
        total = len(objectives) * len(lengths)
        target_change = 0.05 if args.target_change is None else args.target_change
        with tqdm(total=total, desc="dynamics", leave=False) as bar:
            def progress(label):
                bar.set_postfix_str(label, refresh=False)
                bar.update(1)

            report = one_step_report(ckpt, objectives, lengths, n_pairs=args.pairs,
                                     normalized=args.normalized, target_change=target_change,
                                     lr=args.lr, halvings=args.halvings, adam_lr=args.adam_lr,
                                     float64=not args.float32, progress=progress, data=data)
        check_steps_finite(report, args)
        fields = checkpoint_fields(args, ckpt)
        report["checkpoint"] = fields["checkpoint"] or "default model (cached_sft defaults)"
        report["checkpoint_training"] = fields["checkpoint_training"]
        table = format_report(report)
        print(table, end="")
        if args.out:
            out = Path(args.out)
            atomic_write_json(out / "dynamics.json", report)
            atomic_write_text(out / "dynamics.md", table)
            print(f"wrote {out / 'dynamics.json'} and {out / 'dynamics.md'}")
    return 0
