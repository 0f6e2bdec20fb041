"""The trained models and preference runs the figures are drawn from, cached.

Models are ``entangle verify``'s regimes (``verify.regimes``): seed ``s`` of a regime is
``cached_sft(settings.model, settings.data_config(s), regime.sft_config(s))`` under
``ctx.model_cache``, so the figures and ``entangle verify`` train each model once between them.
``settings(quick=True)`` shrinks every regime to a tiny model and a few steps (a smoke run and the
tests). Preference runs (``train.preference``) are cached by the hash of the model's configs and the
``PreferenceConfig``: the JSONL log and the final parameters, so several figures share one run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from entangle_jax.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from entangle_jax.config import DataConfig, ModelConfig
from entangle_jax.provenance import cache_key
from entangle_jax.train.preference import PreferenceConfig, read_log, train_preference
from entangle_jax.train.sft import cached_sft
from entangle_jax.verify.regimes import REGIMES, Regime, VerifySettings

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
    return cached_sft(settings.model, settings.data_config(seed),
                      settings.regime(regime).sft_config(seed), cache_dir=ctx.model_cache,
                      progress=ctx.progress)


@dataclass(frozen=True)
class PreferenceResult:
    """A finished preference run: its log records, its final parameters and where the log is."""

    records: list[dict]
    params: object
    log_path: Path


def cached_preference(ckpt: Checkpoint, config: PreferenceConfig, ctx) -> PreferenceResult:
    """Train ``config`` from ``ckpt`` once; later calls read the log and the final parameters
    from ``ctx.cache_dir/preference/<hash>/`` (the checkpoint is written after the log is
    complete, so a present checkpoint means a finished run)."""
    key = cache_key(ckpt.model_config, ckpt.data_config, ckpt.sft_config, config)
    directory = Path(ctx.cache_dir) / "preference" / key
    log_path = directory / "log.jsonl"
    if ctx.use_stored(str(directory)):
        try:
            final = load_checkpoint(directory / "final")
            return PreferenceResult(read_log(log_path), final.params, log_path)
        except (CheckpointError, FileNotFoundError):
            pass
    run = train_preference(ckpt, config, log_path=log_path, progress=ctx.progress)
    save_checkpoint(directory / "final", dataclasses.replace(ckpt, params=run.params))
    ctx.recomputed.add(str(directory))
    return PreferenceResult(run.records, run.params, log_path)


def preference_config(quick: bool, **fields) -> PreferenceConfig:
    """``train.preference``'s defaults (Adam, 100 steps, probes every 10), or a tiny run of 12
    steps for a smoke run; ``fields`` choose the objective, mitigation, shape, …"""
    if quick:
        fields = {"steps": 12, "batch_size": 8, "probe_every": 6, "probe_size": 8, **fields}
    return PreferenceConfig(**fields)


def train_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "train"]


def probe_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "probe"]
