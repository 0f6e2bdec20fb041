"""``entangle train``: supervised fine-tuning of a small transformer; writes a checkpoint."""

from __future__ import annotations

from entangle_jax.cli.common import add_sft_options, configs_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune a small transformer on the sentiment task, write a checkpoint",
        description="Supervised fine-tuning (optax AdamW) on prompt + true-sentiment response. "
                    "Writes OUT/config.json and OUT/params.npz.")
    parser.add_argument("--out", default="runs/sft", help="checkpoint directory (default runs/sft)")
    add_sft_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from entangle_jax.checkpoint import save_checkpoint
    from entangle_jax.data.sentiment import make_sentiment_data
    from entangle_jax.train.sft import train_sft

    model_config, data_config, sft_config = configs_from_args(args)
    ckpt = train_sft(model_config, make_sentiment_data(data_config), sft_config)
    save_checkpoint(args.out, ckpt)
    print(f"wrote checkpoint {args.out} ({sft_config.steps} SFT steps)")
    return 0
