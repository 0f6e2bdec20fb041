"""The preference branch of ``entangle train``: ``--objective NAME --checkpoint DIR`` trains a
policy from a checkpoint (the frozen reference) and writes the JSONL log.

``--steps``, ``--learning-rate``, ``--batch-size`` and ``--seed`` serve both branches; left unset
they take the defaults of the branch that runs (``resolve_sft_defaults`` for SFT, the
``PreferenceConfig`` defaults here)."""

from __future__ import annotations

import argparse

from entangle_jax.cli.common import (load_data_file, model_from_args, nonnegative_int,
                                     positive_int, user_data_from_args)

#: Options shared with SFT whose default depends on the branch.
SHARED = ("steps", "learning_rate", "batch_size")


def add_preference_options(parser: argparse.ArgumentParser) -> None:
    from entangle_jax.objectives import OBJECTIVES
    from entangle_jax.train.preference import PreferenceConfig

    d = PreferenceConfig()
    g = parser.add_argument_group(
        "preference training (with --objective)",
        f"Train from --checkpoint with a preference objective. --steps (default {d.steps}), "
        f"--learning-rate (default {d.learning_rate:g}), --batch-size (default {d.batch_size}) "
        "and --seed set this run; model and SFT options do not apply.")
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
    g.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer,
                   help=f"(default {d.optimizer})")
    g.add_argument("--shape", default="long",
                   help="pair shape or suffix length: single, short, long or 0..12 "
                        "(default long; ignored for a --data checkpoint)")
    g.add_argument("--mitigation", choices=("none", "normalized", "token_mask"),
                   default=d.mitigation, help="pairwise normalized gradient or sparsity-"
                                              "regularized token masking (default none)")
    g.add_argument("--balanced", action="store_true",
                   help="normalized: use (d_w + d_l)/2 on both sides (case 1 for any objective)")
    g.add_argument("--mask-l1", type=float, default=d.mask_l1,
                   help=f"token_mask: the L1 weight λ (default {d.mask_l1:g})")
    g.add_argument("--mask-lr", type=float, default=d.mask_learning_rate,
                   help=f"token_mask: the mask's step size (default {d.mask_learning_rate:g})")
    g.add_argument("--probe-every", type=nonnegative_int, default=d.probe_every,
                   help=f"gradient probes every N steps, 0: none (default {d.probe_every})")
    g.add_argument("--probe-size", type=positive_int, default=d.probe_size,
                   help=f"probe pairs from the eval split (default {d.probe_size})")
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
    from pathlib import Path

    from entangle_jax.checkpoint import save_checkpoint
    from entangle_jax.cli import UsageError
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.objectives import parse_hparams
    from entangle_jax.train.preference import PreferenceConfig, train_preference

    ckpt = model_from_args(args)
    if ckpt is None:
        raise UsageError("--objective needs --model NAME|DIR or --checkpoint DIR (the starting "
                         "policy)")
    if args.probe_data and not args.data:
        raise UsageError("--probe-data needs --data (the training pairs)")
    lengths = parse_suffix_lengths(args.shape)
    if len(lengths) != 1:
        raise UsageError(f"--shape {args.shape!r}: give one shape or suffix length")
    given = {name: getattr(args, name) for name in SHARED if getattr(args, name) is not None}
    config = PreferenceConfig(
        objective=args.objective, hparams=parse_hparams(args.hparam),
        mitigation=args.mitigation, balanced=args.balanced, mask_l1=args.mask_l1,
        mask_learning_rate=args.mask_lr, optimizer=args.optimizer, suffix_length=lengths[0],
        probe_every=args.probe_every, probe_size=args.probe_size, train_params=args.train_params,
        seed=args.seed, **given)
    data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
    probe_data = (load_data_file(args, args.probe_data, ckpt.model_config, ckpt.tokenizer)
                  if args.probe_data else None)
    log = Path(args.log or f"runs/preference/{config.make_method().name}.jsonl")
    run = train_preference(ckpt, config, data=data, probe_data=probe_data, log_path=log)
    last = next(r for r in reversed(run.records) if r["kind"] == "train")
    print(f"wrote {log} ({config.steps} steps; last: logps/chosen {last['logps/chosen']:.3f}, "
          f"logps/rejected {last['logps/rejected']:.3f}, "
          f"rewards/accuracies {last['rewards/accuracies']:.2f})")
    if args.save:
        import dataclasses

        save_checkpoint(args.save, dataclasses.replace(ckpt, params=run.params))
        print(f"wrote checkpoint {args.save}")
    return 0
