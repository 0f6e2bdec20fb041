"""Training loops: supervised fine-tuning (``sft``)."""

from entangle_jax.train.preference import PreferenceConfig, train_preference
from entangle_jax.train.sft import cached_sft, train_sft

__all__ = ["PreferenceConfig", "cached_sft", "train_preference", "train_sft"]
