"""The trained models and preference runs the figures are drawn from, cached.

Models are ``entangle verify``'s regimes (``verify.regimes``), tiny or pretrained: seed ``s`` of a
regime is ``verify.runner.regime_model`` under ``ctx.model_cache``, so the figures and ``entangle
verify`` train each model once between them.
``settings(quick=True)`` shrinks every regime to a tiny model and a few steps (a smoke run and the
tests). Preference runs (``train.preference``) are cached by the hash of the model's configs, the
``PreferenceConfig`` and the data files' configs: the JSONL log and the final parameters, so several
figures share one run. ``real_data`` reads the learning-dynamics files (the real-model twins' DPO
pairs and probe responses) from the repository's ``data/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from entangle_jax.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from entangle_jax.config import DataConfig, ModelConfig
from entangle_jax.data.chat_sentiment import ChatSentimentConfig
from entangle_jax.provenance import cache_key
from entangle_jax.train.preference import PreferenceConfig, read_log, train_preference
from entangle_jax.verify.regimes import REAL_REGIMES, REGIMES, Regime, VerifySettings, real_settings
from entangle_jax.verify.runner import regime_model

QUICK_MODEL = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32)
QUICK_DATA = DataConfig(n_statements=200, n_unused_words=16)
QUICK_STEPS = 20
#: The regime the single-model figures (training dynamics, token Grams, …) are drawn from: the one
#: closest to the paper's pretrained-then-fine-tuned GPT-2.
MAIN_REGIME = "pretrained"


def _quick_regime(regime: Regime) -> Regime:
    sft = dataclasses.replace(regime.sft, steps=min(regime.sft.steps, QUICK_STEPS),
                              pretrain_steps=min(regime.sft.pretrain_steps, QUICK_STEPS),
                              batch_size=16)
    return dataclasses.replace(regime, sft=sft)


def settings(quick: bool) -> VerifySettings:
    """``entangle verify``'s settings (every regime, 3 seeds, 64 pairs), or their tiny version."""
    if not quick:
        return VerifySettings()
    return VerifySettings(model=QUICK_MODEL, data=QUICK_DATA,
                          regimes=tuple(_quick_regime(r) for r in REGIMES), seeds=(0, 1),
                          n_pairs=8, ntk_pairs=1, n_boot=100)


def real_figure_settings(quick: bool, **overrides) -> VerifySettings:
    """``entangle verify --real``'s settings with ``overrides`` (seeds, pairs), or for a smoke run
    SmolLM2 as shipped only (no fine-tuning), 2 pairs and suffixes up to 2 tokens."""
    if not quick:
        return real_settings(**overrides)
    return real_settings(regimes=REAL_REGIMES[:1], seeds=(0,), n_pairs=2, ntk_pairs=1,
                         n_boot=100, long_suffix=2, chat=ChatSentimentConfig(max_suffix_length=2))


def regime_label(name: str) -> str:
    """``uncertain_sft`` → ``uncertain SFT`` (for titles and legends)."""
    return name.replace("_", " ").replace("sft", "SFT")


def shared_training(cfg) -> str:
    """``same <regime> model (seed s) and batches: Adam, lr 0.0001, batch 8``: the setting that
    the runs of one figure (``cfg.runs``) share, for its title."""
    run = cfg.runs[0]
    return (f"same {regime_label(cfg.regime)} model (seed {cfg.seed}) and batches: "
            f"{run.optimizer.capitalize()}, lr {run.learning_rate:g}, batch {run.batch_size}")


def checkpoint(settings: VerifySettings, regime: str, seed: int, ctx) -> Checkpoint:
    """The model of ``regime`` at ``seed`` (trained once, then read from ``ctx.model_cache``)."""
    return regime_model(settings, settings.regime(regime), seed, cache_dir=ctx.model_cache,
                        progress=ctx.progress)


@dataclass(frozen=True)
class PreferenceResult:
    """A finished preference run: its log records, its final parameters and where the log is."""

    records: list[dict]
    params: object
    log_path: Path


def cached_preference(ckpt: Checkpoint, config: PreferenceConfig, ctx, data=None,
                      probe_data=None) -> PreferenceResult:
    """Train ``config`` from ``ckpt`` once (on ``data`` with ``probe_data``, both
    ``PreferenceData``, when given); later calls read the log and the final parameters from
    ``ctx.cache_dir/preference/<hash>/`` (the checkpoint is written after the log is complete,
    so a present checkpoint means a finished run)."""
    key = cache_key(ckpt.model_config, ckpt.data_config, ckpt.sft_config, config,
                    *(None if d is None else d.config for d in (data, probe_data)))
    directory = Path(ctx.cache_dir) / "preference" / key
    log_path = directory / "log.jsonl"
    if ctx.use_stored(str(directory)):
        try:
            final = load_checkpoint(directory / "final")
            return PreferenceResult(read_log(log_path), final.params, log_path)
        except (CheckpointError, FileNotFoundError):
            pass
    run = train_preference(ckpt, config, data=data, probe_data=probe_data, log_path=log_path,
                           progress=ctx.progress)
    save_checkpoint(directory / "final", dataclasses.replace(ckpt, params=run.params))
    ctx.recomputed.add(str(directory))
    return PreferenceResult(run.records, run.params, log_path)


def preference_config(quick: bool, **fields) -> PreferenceConfig:
    """``train.preference``'s defaults (Adam, 100 steps, probes every 10), or a tiny run of 12
    steps for a smoke run; ``fields`` choose the objective, mitigation, shape, …"""
    if quick:
        fields = {"steps": 12, "batch_size": 8, "probe_every": 6, "probe_size": 8, **fields}
    return PreferenceConfig(**fields)


@dataclass(frozen=True)
class RealData:
    """A learning-dynamics file pair of ``data/``: DPO trains on ``train`` and probes the first
    held-out pairs of ``probe`` (with their probe responses), token budgets as ``make dpo-real``."""

    train: str = "learning-dynamics-helpful-base/formal_prob_train.jsonl.gz"
    probe: str = "learning-dynamics-helpful-base/formal_prob_test.jsonl.gz"
    max_prompt_tokens: int = 128
    max_response_tokens: int = 64


def real_data(files: RealData, root: str | Path = "data"):
    """``(train, probe)`` ``PreferenceData`` of ``files`` under ``root`` (records that are not
    valid pairs are skipped, as ``--skip-bad-lines`` does)."""
    from entangle_jax.data.userdata import load_user_data

    return tuple(load_user_data(Path(root) / name, skip_bad_lines=True,
                                max_prompt_tokens=files.max_prompt_tokens,
                                max_response_tokens=files.max_response_tokens)
                 for name in (files.train, files.probe))


def real_dpo_config(quick: bool) -> PreferenceConfig:
    """The DPO run of ``make dpo-real`` (SmolLM2's last 2 blocks, Adam, 60 steps of 8 pairs,
    probes every 10 steps on 8 held-out pairs), or 2 steps of 2 pairs for a smoke run."""
    size = dict(steps=2, batch_size=2, probe_every=1, probe_size=2) if quick else \
        dict(steps=60, batch_size=8, probe_every=10, probe_size=8)
    return PreferenceConfig(objective="dpo", train_params="last:2", learning_rate=2e-5, **size)


def real_dpo_data(quick: bool) -> RealData:
    """The learning-dynamics files with ``make dpo-real``'s budgets, or short ones (smoke run)."""
    return RealData(max_prompt_tokens=24, max_response_tokens=8) if quick else RealData()


def train_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "train"]


def probe_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "probe"]
