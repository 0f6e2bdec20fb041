"""Supervised fine-tuning (SFT) of the transformer on the sentiment task, with optax AdamW.

The loss is the mean next-token negative log-likelihood of ``<bos> x y`` (``logprob.lm_loss``). The
options reach each regime of the theorems: ``label_flip`` keeps the model uncertain between Positive
and Negative; ``suffix="fixed"`` makes the suffix deterministic; ``steps=0`` keeps the random
initialization; ``pretrain_steps`` first trains on statements followed by random vocabulary words.

A user's preference file (``PreferenceData``) trains the same way on prompt + chosen (``label_flip``
swaps in the rejected response; ``suffix`` does not apply).

With ``out_dir`` the run is resumable: every ``checkpoint_every`` steps and at the end it writes
``train_state.npz`` and the checkpoint atomically, and each step appends one line to
``metrics.jsonl`` (``{"step", "phase", "loss", "grad_norm"}``). ``resume=True`` continues from the
saved step with the saved optimizer and RNG state and cuts the log back to that step, so a run
killed and resumed ends with the same parameters and log as one never interrupted. A NaN or Inf
in the loss, the gradient or the updated parameters stops the run (``NonFiniteError`` naming the
step) before anything is saved, so the last checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from functools import partial
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from entangle_jax.checkpoint import (TRAIN_STATE, Checkpoint, CheckpointError, TrainState,
                                     load_checkpoint, load_train_state, save_checkpoint,
                                     save_train_state)
from entangle_jax.config import DataConfig, ModelConfig, SFTConfig, to_dict
from entangle_jax.data import userdata
from entangle_jax.data.pairs import Responses, encode_responses
from entangle_jax.data.sentiment import (SentimentData, make_sentiment_data, response_window,
                                         response_words)
from entangle_jax.data.vocab import SPECIAL_TOKENS
from entangle_jax.guards import check_finite, finite_flags
from entangle_jax.io import atomic_write_text
from entangle_jax.logprob import lm_loss, response_nll
from entangle_jax.models import init_model
from entangle_jax.optimizers import make_adamw
from entangle_jax.provenance import cache_key, json_hash

METRICS = "metrics.jsonl"


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


def _batch_makers(data):
    """(pretrain, sft) batch functions ``(config, seq_len, rng) -> Responses`` for ``data``."""
    if isinstance(data, userdata.PreferenceData):
        return (lambda c, t, rng: userdata.pretrain_batch(data, c.batch_size, t, rng),
                lambda c, t, rng: userdata.sft_batch(data, c.label_flip, c.batch_size, t, rng))
    return (lambda c, t, rng: pretrain_batch(data, c, t, rng),
            lambda c, t, rng: sft_batch(data, c, t, rng))


def run_configs(model_config: ModelConfig, data, config: SFTConfig) -> dict:
    """The settings that identify a run (model, data, SFT), as plain dicts."""
    return {"model": to_dict(model_config), "data": to_dict(data.config), "sft": to_dict(config)}


def _kept_metrics(path: Path, step: int) -> str:
    """The complete lines of the metrics log up to ``step`` (a killed run may have written more,
    or half a line)."""
    if not path.is_file():
        return ""
    kept = []
    for line in path.read_text("utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not line.endswith("\n") or record["step"] > step:
            break
        kept.append(line)
    return "".join(kept)


def saved_progress(directory: str | Path) -> tuple[int, int] | None:
    """``(step, steps)`` of the training state saved in ``directory``: how far its run got and
    how long that run is (None when there is no saved state)."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
        sft = meta["configs"]["sft"]
        return int(meta["step"]), int(sft["pretrain_steps"]) + int(sft["steps"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"corrupt training state {path}: {err}") from None


# Module-level jits with the graph definition (and parameter subset) static: every model of one
# architecture trains with one compiled step, whatever its rates, which ``opt_state`` carries.
@partial(jax.jit, static_argnames=("graphdef",))
def _sft_step(params, opt_state, batch, *, graphdef):
    """One AdamW step on the mean next-token NLL of ``batch``."""
    loss, grads = jax.value_and_grad(lambda p: lm_loss(graphdef, p, batch))(params)
    updates, opt_state = make_adamw(1.0, 0.0).update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    flags = finite_flags(loss=loss, gradient=grads, parameters=new_params)
    return new_params, opt_state, loss, optax.tree.norm(grads), flags


@partial(jax.jit, static_argnames=("graphdef", "subset"))
def _finetune_step(trainable, opt_state, batch, base, *, graphdef, subset):
    """One AdamW step on the response NLL of ``batch``, training the ``subset`` of ``base``."""
    loss, grads = jax.value_and_grad(
        lambda t: response_nll(graphdef, subset.apply(base, t), batch))(trainable)
    updates, opt_state = make_adamw(1.0, 0.0).update(grads, opt_state, trainable)
    new = optax.apply_updates(trainable, updates)
    return new, opt_state, loss, finite_flags(loss=loss, gradient=grads, parameters=new)


def train_sft(model_config: ModelConfig, data, config: SFTConfig, *, progress: bool = True,
              out_dir: str | Path | None = None, checkpoint_every: int = 0,
              resume: bool = False) -> Checkpoint:
    """Train from the initialization of ``config.seed`` on ``data`` (``SentimentData`` or
    ``PreferenceData``); returns the trained checkpoint. See the module docstring for
    ``out_dir``, ``checkpoint_every`` and ``resume``."""
    model_config = _with_vocab(model_config, data)
    graphdef, params = nnx.split(init_model(model_config, seed=config.seed))
    opt_state = make_adamw(config.learning_rate, config.weight_decay).init(params)
    rng = np.random.default_rng([config.seed, 1])
    total = config.pretrain_steps + config.steps
    configs = run_configs(model_config, data, config)
    start, out, log = 0, None if out_dir is None else Path(out_dir), None
    if out is not None:
        progress_on_disk = saved_progress(out)
        if resume and progress_on_disk is not None:
            state = load_train_state(out, params, opt_state, configs, json_hash(configs))
            params, opt_state, start = state.params, state.opt_state, state.step
            rng.bit_generator.state = state.rng_state
        elif progress_on_disk is not None and progress_on_disk[0] < progress_on_disk[1]:
            raise CheckpointError(f"{out} holds an unfinished run (step {progress_on_disk[0]} of "
                                  f"{progress_on_disk[1]}); pass --resume to continue it or "
                                  "choose another --out")
        atomic_write_text(out / METRICS, _kept_metrics(out / METRICS, start))
        log = open(out / METRICS, "a", encoding="utf-8")

    def checkpoint(p) -> Checkpoint:
        user = isinstance(data, userdata.PreferenceData)
        return Checkpoint(graphdef, p, model_config, data.vocab, None if user else data.config,
                          config, data.config if user else None)

    pretrain, sft = _batch_makers(data)
    last_saved = start if start > 0 else None
    bar = tqdm(range(start, total), initial=start, total=total, desc="sft",
               disable=not progress or total == 0, leave=False)
    try:
        for k in bar:
            phase, make_batch = ("pretrain", pretrain) if k < config.pretrain_steps else ("sft", sft)
            new = _sft_step(params, opt_state, make_batch(config, model_config.max_len, rng),
                            graphdef=graphdef)
            kept = ("" if out is None else f"; no checkpoint was saved yet in {out}"
                    if last_saved is None else f"; last good checkpoint: {out} (step {last_saved})")
            check_finite(k + 1, new[4], context=kept)
            params, opt_state, loss, grad_norm = new[:4]
            bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            if log is not None:
                log.write(json.dumps({"step": k + 1, "phase": phase, "loss": float(loss),
                                      "grad_norm": float(grad_norm)}) + "\n")
                log.flush()
                if (checkpoint_every and (k + 1) % checkpoint_every == 0) or k + 1 == total:
                    save_train_state(out, TrainState(k + 1, params, opt_state,
                                                     rng.bit_generator.state, configs,
                                                     json_hash(configs)))
                    save_checkpoint(out, checkpoint(params), training={"step": k + 1,
                                                                       "steps": total})
                    last_saved = k + 1
    finally:
        bar.close()
        if log is not None:
            log.close()
    if out is not None and total == 0:
        save_checkpoint(out, checkpoint(params), training={"step": 0, "steps": 0})
    return checkpoint(params)


def _with_vocab(model_config: ModelConfig, data: SentimentData) -> ModelConfig:
    return dataclasses.replace(model_config, vocab_size=len(data.vocab))


def cached_sft(model_config: ModelConfig, data_config: DataConfig, sft_config: SFTConfig, *,
               cache_dir: str | Path = ".cache/models", progress: bool = True) -> Checkpoint:
    """Train (or reuse from ``cache_dir``, keyed by the configs, the package versions and the
    code: ``provenance.cache_key``) an SFT checkpoint."""
    return cached_sft_on(model_config, make_sentiment_data(data_config), sft_config,
                         cache_dir=cache_dir, progress=progress)


def cached_sft_on(model_config: ModelConfig, data, sft_config: SFTConfig, *,
                  cache_dir: str | Path = ".cache/models", progress: bool = True) -> Checkpoint:
    """``cached_sft`` for built data (``SentimentData`` or ``PreferenceData``: a user file is keyed
    by its content hash too)."""
    data_config = data.config
    model_config = _with_vocab(model_config, data)
    directory = Path(cache_dir) / cache_key(model_config, data_config, sft_config)
    try:
        return load_checkpoint(directory)
    except CheckpointError:
        pass
    ckpt = train_sft(model_config, data, sft_config, progress=progress)
    save_checkpoint(directory, ckpt)
    return ckpt


def finetune(base: Checkpoint, data, config: SFTConfig, train_params: str = "all", *,
             progress: bool = True) -> Checkpoint:
    """Supervised fine-tuning of a pretrained chat model on the chat sentiment task (``data``: a
    ``ChatSentimentData``): ``config.steps`` AdamW steps on the response tokens of prompt +
    true sentiment (flipped with probability ``label_flip``) with a random suffix, training the
    parameter subset ``train_params`` (``train.subsets``). Deterministic for ``config.seed``."""
    from entangle_jax.data.chat_sentiment import chat_seq_len, chat_sft_batch
    from entangle_jax.train.subsets import parse_subset

    subset = parse_subset(train_params)
    graphdef, tokenizer = base.graphdef, base.tokenizer
    trainable = subset.init(base.params, jax.random.key(config.seed))
    opt_state = make_adamw(config.learning_rate, config.weight_decay).init(trainable)
    rng = np.random.default_rng([config.seed, 5])
    seq_len = chat_seq_len(data, tokenizer)

    bar = tqdm(range(config.steps), desc="finetune", disable=not progress, leave=False)
    for k in bar:
        batch = chat_sft_batch(data, tokenizer, config.label_flip, config.batch_size, seq_len,
                               rng)
        trainable, opt_state, loss, flags = _finetune_step(trainable, opt_state, batch,
                                                           base.params, graphdef=graphdef,
                                                           subset=subset)
        check_finite(k + 1, flags)
        bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
    return dataclasses.replace(base, params=subset.apply(base.params, trainable),
                               sft_config=config)


def cached_finetune(base: Checkpoint, base_id: str, data, config: SFTConfig,
                    train_params: str = "all", *, cache_dir: str | Path = ".cache/models",
                    progress: bool = True) -> Checkpoint:
    """``finetune``, reused from ``cache_dir`` when the same base (``base_id``), task, SFT
    config and subset were trained before by the same code and package versions."""
    key = cache_key({"base": base_id, "task": to_dict(data.config), "sft": to_dict(config),
                     "train_params": train_params})
    directory = Path(cache_dir) / f"finetune-{key}"
    try:
        return load_checkpoint(directory)
    except CheckpointError:
        pass
    ckpt = finetune(base, data, config, train_params, progress=progress)
    save_checkpoint(directory, ckpt)
    return ckpt
