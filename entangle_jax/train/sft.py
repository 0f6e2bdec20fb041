"""Supervised fine-tuning (SFT) of the transformer on the sentiment task, with optax AdamW.

The loss is the mean next-token negative log-likelihood of ``<bos> x y`` (``logprob.lm_loss``). The
options reach each regime of the theorems: ``label_flip`` keeps the model uncertain between Positive
and Negative; ``suffix="fixed"`` makes the suffix deterministic; ``steps=0`` keeps the random
initialization; ``pretrain_steps`` first trains on statements followed by random vocabulary words.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from entangle_jax.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from entangle_jax.config import DataConfig, ModelConfig, SFTConfig, config_hash
from entangle_jax.data.pairs import Responses, encode_responses
from entangle_jax.data.sentiment import (SentimentData, make_sentiment_data, response_window,
                                         response_words)
from entangle_jax.data.vocab import SPECIAL_TOKENS
from entangle_jax.logprob import lm_loss
from entangle_jax.model import init_model


def sft_batch(data: SentimentData, config: SFTConfig, seq_len: int,
              rng: np.random.Generator) -> Responses:
    """A batch of prompt + response sequences: the true sentiment (flipped with probability
    ``label_flip``) followed by a suffix of random (``varied``) or maximal (``fixed``) length."""
    max_l = data.config.max_suffix_length
    statements = [data.train[i] for i in rng.integers(0, len(data.train), config.batch_size)]
    flips = rng.random(config.batch_size) < config.label_flip
    lengths = (rng.integers(0, max_l + 1, config.batch_size) if config.suffix == "varied"
               else np.full(config.batch_size, max_l))
    responses = [response_words(s.positive != bool(f), int(n))
                 for s, f, n in zip(statements, flips, lengths)]
    return encode_responses(data.vocab, [s.prompt for s in statements], responses, seq_len,
                            response_window(data.config))


def pretrain_batch(data: SentimentData, config: SFTConfig, seq_len: int,
                   rng: np.random.Generator) -> Responses:
    """Statements followed by 1..window random vocabulary words: varied continuations, so that
    no continuation becomes deterministic (the regime closest to a pretrained LM)."""
    words = [w for w in data.vocab.words if w not in SPECIAL_TOKENS]
    window = response_window(data.config)
    statements = [data.train[i] for i in rng.integers(0, len(data.train), config.batch_size)]
    responses = [[words[j] for j in rng.integers(0, len(words), rng.integers(1, window + 1))]
                 for _ in statements]
    return encode_responses(data.vocab, [s.prompt for s in statements], responses, seq_len, window)


def train_sft(model_config: ModelConfig, data: SentimentData, config: SFTConfig, *,
              progress: bool = True) -> Checkpoint:
    """Train from the initialization of ``config.seed``; returns the trained checkpoint."""
    model_config = _with_vocab(model_config, data)
    graphdef, params = nnx.split(init_model(model_config, seed=config.seed))
    tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: lm_loss(graphdef, p, batch))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng([config.seed, 1])
    phases = [("pretrain", config.pretrain_steps, pretrain_batch), ("sft", config.steps, sft_batch)]
    for name, steps, make_batch in phases:
        bar = tqdm(range(steps), desc=name, disable=not progress or steps == 0, leave=False)
        for _ in bar:
            params, opt_state, loss = step(params, opt_state,
                                           make_batch(data, config, model_config.max_len, rng))
            bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
    return Checkpoint(graphdef, params, model_config, data.vocab, data.config, config)


def _with_vocab(model_config: ModelConfig, data: SentimentData) -> ModelConfig:
    return dataclasses.replace(model_config, vocab_size=len(data.vocab))


def cached_sft(model_config: ModelConfig, data_config: DataConfig, sft_config: SFTConfig, *,
               cache_dir: str | Path = ".cache/models", progress: bool = True) -> Checkpoint:
    """Train (or reuse from ``cache_dir``, keyed by the configs' hash) an SFT checkpoint."""
    data = make_sentiment_data(data_config)
    model_config = _with_vocab(model_config, data)
    directory = Path(cache_dir) / config_hash(model_config, data_config, sft_config)
    try:
        return load_checkpoint(directory)
    except CheckpointError:
        pass
    ckpt = train_sft(model_config, data, sft_config, progress=progress)
    save_checkpoint(directory, ckpt)
    return ckpt
