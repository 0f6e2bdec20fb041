"""Checkpoints without pickle: ``config.json`` (configs + vocabulary) and ``params.npz`` (arrays keyed
by their parameter path), both written atomically."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from entangle_jax.config import ConfigError, DataConfig, ModelConfig, SFTConfig
from entangle_jax.data.vocab import Vocab
from entangle_jax.io import atomic_write_bytes, atomic_write_json
from entangle_jax.model import init_model

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


@dataclass(frozen=True)
class Checkpoint:
    graphdef: nnx.GraphDef
    params: nnx.State
    model_config: ModelConfig
    vocab: Vocab
    data_config: DataConfig | None = None
    sft_config: SFTConfig | None = None


def _path_key(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def save_checkpoint(directory: str | Path, ckpt: Checkpoint) -> Path:
    directory = Path(directory)
    arrays = {_path_key(p): np.asarray(x)
              for p, x in jax.tree_util.tree_flatten_with_path(ckpt.params)[0]}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(directory / "params.npz", buffer.getvalue())
    meta = {"format_version": FORMAT_VERSION,
            "model_config": _asdict(ckpt.model_config),
            "data_config": _asdict(ckpt.data_config),
            "sft_config": _asdict(ckpt.sft_config),
            "vocab": list(ckpt.vocab.words)}
    atomic_write_json(directory / "config.json", meta)
    return directory


def _asdict(config):
    return None if config is None else {f.name: getattr(config, f.name) for f in fields(config)}


def _build(cls, raw, what: str):
    if raw is None:
        return None
    try:
        return cls(**raw)
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{what} is invalid: {err}") from None


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Load a checkpoint; a missing, corrupt or mismatched one raises ``CheckpointError``."""
    directory = Path(directory)
    if not (directory / "config.json").is_file() or not (directory / "params.npz").is_file():
        raise CheckpointError(f"no checkpoint at {directory} (expected config.json and params.npz)")
    try:
        meta = json.loads((directory / "config.json").read_text("utf-8"))
        model_config = _build(ModelConfig, meta["model_config"], f"{directory}/config.json")
        vocab = Vocab(meta["vocab"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"corrupt checkpoint config {directory / 'config.json'}: {err}") \
            from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {directory} has format_version "
                              f"{meta.get('format_version')!r}; expected {FORMAT_VERSION}")
    if len(vocab) != model_config.vocab_size:
        raise CheckpointError(f"checkpoint {directory}: vocabulary of {len(vocab)} words but "
                              f"model vocab_size={model_config.vocab_size}")
    graphdef, template = nnx.split(init_model(model_config))
    try:
        with np.load(directory / "params.npz", allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"corrupt parameter file {directory / 'params.npz'}: {err}") from None
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {_path_key(p): x for p, x in leaves}
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise CheckpointError(f"checkpoint {directory} does not match its model config: "
                              f"missing {missing[:3]}, unexpected {extra[:3]}")
    for key, ref in expected.items():
        if arrays[key].shape != ref.shape or arrays[key].dtype != ref.dtype:
            raise CheckpointError(f"checkpoint {directory}: parameter {key} has shape "
                                  f"{arrays[key].shape} {arrays[key].dtype}; the config expects "
                                  f"{ref.shape} {ref.dtype}")
    params = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(arrays[_path_key(p)])
                                                    for p, _ in leaves])
    return Checkpoint(graphdef, params, model_config, vocab,
                      _build(DataConfig, meta.get("data_config"), "data_config"),
                      _build(SFTConfig, meta.get("sft_config"), "sft_config"))
