"""Training loops: supervised fine-tuning (``sft``)."""

from entangle_jax.train.sft import cached_sft, response_window, train_sft

__all__ = ["cached_sft", "response_window", "train_sft"]
