"""Supervised fine-tuning's step: one compiled program for every rate, each run stepping by its own."""

import jax
import numpy as np
from flax import nnx

from entangle_jax.config import SFTConfig
from entangle_jax.models import init_model
from entangle_jax.train import sft as sft_module
from entangle_jax.train.sft import train_sft
from tests.conftest import TINY_MODEL


def test_runs_at_other_rates_reuse_the_compiled_step(tiny_data):
    """The learning rate and weight decay are traced (in the AdamW state): a new value does not
    recompile, and each run takes its own step. From θ₀ one AdamW step is
    −lr·(m̂/(√v̂ + ε) + wd·θ₀) on the same batch, so the step is linear in lr, and two decays
    differ by −lr·(wd₁ − wd₂)·θ₀."""
    def step(lr, weight_decay):
        config = SFTConfig(steps=1, batch_size=8, learning_rate=lr, weight_decay=weight_decay)
        ckpt = train_sft(TINY_MODEL, tiny_data, config, progress=False)
        start = nnx.split(init_model(ckpt.model_config, seed=config.seed))[1]
        return ([np.asarray(x) for x in jax.tree.leaves(ckpt.params)],
                [np.asarray(x) for x in jax.tree.leaves(start)])

    one, theta0 = step(1e-3, 0.01)
    compiled = sft_module._sft_step._cache_size()
    two, _ = step(2e-3, 0.01)
    decayed, _ = step(1e-3, 0.5)
    assert sft_module._sft_step._cache_size() == compiled
    for a, b, d, t in zip(one, two, decayed, theta0):
        np.testing.assert_allclose(b - t, 2 * (a - t), atol=4e-7)  # a few float32 ulps of θ ≈ 1
        np.testing.assert_allclose(d - a, -1e-3 * 0.49 * t, atol=4e-7)  # a few float32 ulps of θ ≈ 1
