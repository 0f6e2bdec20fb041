"""Supervised fine-tuning's steps (the tiny models' and the pretrained model's): one compiled program
for every rate, each run stepping by its own."""

import jax
import numpy as np
from flax import nnx

from entangle_jax.config import SFTConfig
from entangle_jax.data.chat_sentiment import ChatSentimentConfig, make_chat_sentiment_data
from entangle_jax.models import init_model
from entangle_jax.train import sft as sft_module
from entangle_jax.train.sft import finetune, train_sft
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


def test_finetuning_steps_its_subset_only_and_reuses_the_compiled_step(smollm2):
    """The pretrained model's fine-tuning (``entangle verify --real``'s ``smollm2_sft``): one step
    moves the last block only, a second rate reuses the compiled step, and from the same start
    the first AdamW step (no decay) is linear in the rate."""
    data = make_chat_sentiment_data(ChatSentimentConfig(), smollm2.tokenizer)

    def tuned(lr):
        config = SFTConfig(steps=1, batch_size=2, learning_rate=lr, weight_decay=0.0)
        ckpt = finetune(smollm2, data, config, "last:1", progress=False)
        return [np.asarray(x) for x in jax.tree.leaves(ckpt.params)]

    one = tuned(1e-4)
    compiled = sft_module._finetune_step._cache_size()
    two = tuned(2e-4)
    assert sft_module._finetune_step._cache_size() == compiled
    base = [np.asarray(x) for x in jax.tree.leaves(smollm2.params)]
    moved = [not np.array_equal(a, t) for a, t in zip(one, base)]
    assert 0 < sum(moved) < len(base) // 4  # the last block's leaves, not the embedding or others
    for a, b, t, m in zip(one, two, base, moved):
        if m:
            np.testing.assert_allclose(b - t, 2 * (a - t), atol=4 * 1.2e-7 * np.abs(t).max())
        else:
            np.testing.assert_array_equal(b, t)
