"""Shared tiny fixtures: a small model and a briefly fine-tuned checkpoint."""

import os

import pytest
from hypothesis import settings

from entangle_jax.config import DataConfig, ModelConfig, SFTConfig
from entangle_jax.data import make_sentiment_data, response_window, sentiment_pairs
from entangle_jax.train import train_sft

# Property tests draw the same examples on every run, so a CI result is reproducible
# (HYPOTHESIS_PROFILE=explore draws fresh ones).
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))

# The commands the tests call through `main` would turn on JAX's persistent compilation cache for
# the rest of the session; writing a CPU executable into it crashed a clean-clone run once
# (segfault in jax's put_executable_and_time, test_verify_cli). The suite runs without it; the
# cache's own tests set the variable themselves.
os.environ.setdefault("ENTANGLE_JAX_COMPILATION_CACHE", "off")

TINY_MODEL = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32)
TINY_DATA = DataConfig(n_statements=200, n_unused_words=16)


@pytest.fixture(scope="session")
def tiny_data():
    return make_sentiment_data(TINY_DATA)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_data):
    """A tiny model after a few SFT steps with label noise (uncertain at the sentiment token)."""
    return train_sft(TINY_MODEL, tiny_data, SFTConfig(steps=20, batch_size=16, label_flip=0.3),
                     progress=False)


@pytest.fixture(scope="session")
def make_pairs(tiny_data, tiny_ckpt):
    def make(suffix_length, n=6):
        return sentiment_pairs(tiny_data.eval[:n], tiny_data.vocab, suffix_length,
                               tiny_ckpt.model_config.max_len, response_window(tiny_data.config))
    return make


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, converted from its GGUF once into the cache (ENTANGLE_JAX_CACHE)."""
    from entangle_jax.pretrained import load_pretrained

    return load_pretrained()
