"""Training loops: supervised fine-tuning (``sft``)."""

from entangle_jax.train.sft import cached_sft, train_sft

__all__ = ["cached_sft", "train_sft"]
