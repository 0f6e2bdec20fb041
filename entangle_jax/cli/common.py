"""Argument types and options shared by the subcommands."""

from __future__ import annotations

import argparse

from entangle_jax.config import DataConfig, ModelConfig, SFTConfig


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be an integer >= 0")
    return value


def add_sft_options(parser: argparse.ArgumentParser) -> None:
    """Options that choose the model size and the SFT regime (defaults: the default model)."""
    d = SFTConfig()
    m = ModelConfig()
    g = parser.add_argument_group("model and supervised fine-tuning")
    g.add_argument("--steps", type=nonnegative_int, default=d.steps,
                   help=f"SFT steps; 0 keeps the random initialization (default {d.steps})")
    g.add_argument("--label-flip", type=float, default=d.label_flip,
                   help="fraction of training labels flipped, keeps the model uncertain "
                        f"(default {d.label_flip})")
    g.add_argument("--suffix", choices=("varied", "fixed"), default=d.suffix,
                   help="suffix length per training example: varied (random) or fixed (the full "
                        f"suffix, which becomes deterministic) (default {d.suffix})")
    g.add_argument("--pretrain-steps", type=nonnegative_int, default=d.pretrain_steps,
                   help="steps on varied random continuations before SFT (default 0)")
    g.add_argument("--learning-rate", type=float, default=d.learning_rate)
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    g.add_argument("--layers", type=positive_int, default=m.n_layers)
    g.add_argument("--width", type=positive_int, default=m.d_model)
    g.add_argument("--heads", type=positive_int, default=m.n_heads)
    g.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the initialization, the SFT batches and the eval sample")


def configs_from_args(args) -> tuple[ModelConfig, DataConfig, SFTConfig]:
    """The configs the options describe (validated: a bad value raises ConfigError)."""
    model = ModelConfig(d_model=args.width, n_layers=args.layers, n_heads=args.heads,
                        d_mlp=4 * args.width)
    sft = SFTConfig(steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, label_flip=args.label_flip,
                    suffix=args.suffix, pretrain_steps=args.pretrain_steps, seed=args.seed)
    return model, DataConfig(), sft
