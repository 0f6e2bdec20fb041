"""Checkpoints without pickle: ``config.json`` (the architecture, configs and tokenizer) and
``params.npz`` (arrays keyed by their parameter path), both written atomically. One format serves
the tiny transformer (word vocabulary) and the Llama port (byte-level BPE tokenizer).

A training run also keeps ``train_state.npz``, everything a resumed run needs in one atomically
written file: the parameters, the optimizer state, the step, the host RNG state and the hash of
the configs that made it (a resumed run with other configs is refused)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from entangle_jax.config import ConfigError, DataConfig, SFTConfig
from entangle_jax.data.bpe import ChatTokenizer
from entangle_jax.data.userdata import UserDataConfig
from entangle_jax.data.vocab import Vocab
from entangle_jax.io import atomic_write_json, atomic_write_npz
from entangle_jax.models import abstract_model, architecture, config_class
from entangle_jax.pytrees import path_key

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


@dataclass(frozen=True)
class Checkpoint:
    """A model (either architecture) with its tokenizer and the configs that made it."""

    graphdef: nnx.GraphDef
    params: nnx.State
    model_config: Any  # ModelConfig or LlamaConfig
    tokenizer: Vocab | ChatTokenizer
    data_config: DataConfig | None = None
    sft_config: SFTConfig | None = None
    user_data: UserDataConfig | None = None  # set instead of data_config for a user's file
    #: ``{"step", "steps"}`` as the training run recorded it (``save_checkpoint(training=)``):
    #: ``step < steps`` for a run that was interrupted; None when the checkpoint records none.
    training: dict | None = None


#: Tokenizer kind (as ``config.json`` records it) → class.
TOKENIZERS = {Vocab.kind: Vocab, ChatTokenizer.kind: ChatTokenizer}


def _flat_arrays(tree, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + path_key(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _stored_key(key: str) -> str:
    """Keys written before the ``.value`` step of a Variable was dropped from names end in it."""
    return key[:-len("/value")] if key.endswith("/value") else key


def save_checkpoint(directory: str | Path, ckpt: Checkpoint, *,
                    training: dict | None = None) -> Path:
    """Write ``params.npz`` then ``config.json``; ``training`` (e.g. ``{"step", "steps"}`` of an
    unfinished run) is recorded in ``config.json`` for the reader."""
    directory = Path(directory)
    atomic_write_npz(directory / "params.npz", _flat_arrays(ckpt.params))
    meta = {"format_version": FORMAT_VERSION,
            "architecture": architecture(ckpt.model_config),
            "model_config": _asdict(ckpt.model_config),
            "data_config": _asdict(ckpt.data_config),
            "sft_config": _asdict(ckpt.sft_config),
            "tokenizer": ckpt.tokenizer.to_dict()}
    if ckpt.user_data is not None:
        meta["user_data"] = _asdict(ckpt.user_data)
    if training is not None:
        meta["training"] = training
    atomic_write_json(directory / "config.json", meta)
    return directory


def _asdict(config):
    return None if config is None else {f.name: getattr(config, f.name) for f in fields(config)}


def _training(raw) -> dict | None:
    """``config.json``'s ``training`` record as ``{"step", "steps"}`` (None if absent or not
    two integers >= 0)."""
    if not isinstance(raw, dict):
        return None
    step, steps = raw.get("step"), raw.get("steps")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (step, steps)):
        return None
    return {"step": step, "steps": steps}


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
        config_cls = config_class(meta.get("architecture", "tiny"))
        model_config = _build(config_cls, meta["model_config"], f"{directory}/config.json")
        stored_tokenizer = meta.get("tokenizer") or {"kind": Vocab.kind, "words": meta["vocab"]}
        tokenizer_cls = TOKENIZERS[stored_tokenizer["kind"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"corrupt checkpoint config {directory / 'config.json'}: {err}") \
            from None
    try:
        tokenizer = tokenizer_cls.from_dict(stored_tokenizer)
    except Exception as err:  # the tokenizers package raises its own exception types
        raise CheckpointError(f"corrupt tokenizer in {directory / 'config.json'}: {err}") \
            from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {directory} has format_version "
                              f"{meta.get('format_version')!r}; expected {FORMAT_VERSION}")
    if len(tokenizer) != model_config.vocab_size:
        raise CheckpointError(f"checkpoint {directory}: vocabulary of {len(tokenizer)} tokens but "
                              f"model vocab_size={model_config.vocab_size}")
    graphdef, template = nnx.split(abstract_model(model_config))
    try:
        with np.load(directory / "params.npz", allow_pickle=False) as stored:
            arrays = {_stored_key(k): stored[k] for k in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"corrupt parameter file {directory / 'params.npz'}: {err}") from None
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {path_key(p): x for p, x in leaves}
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise CheckpointError(f"checkpoint {directory} does not match its model config: "
                              f"missing {missing[:3]}, unexpected {extra[:3]}")
    for key, ref in expected.items():
        if arrays[key].shape != ref.shape or arrays[key].dtype != ref.dtype:
            raise CheckpointError(f"checkpoint {directory}: parameter {key} has shape "
                                  f"{arrays[key].shape} {arrays[key].dtype}; the config expects "
                                  f"{ref.shape} {ref.dtype}")
    params = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(arrays[path_key(p)])
                                                    for p, _ in leaves])
    return Checkpoint(graphdef, params, model_config, tokenizer,
                      _build(DataConfig, meta.get("data_config"), "data_config"),
                      _build(SFTConfig, meta.get("sft_config"), "sft_config"),
                      _build(UserDataConfig, meta.get("user_data"), "user_data"),
                      _training(meta.get("training")))


# ------------------------------------------------------------------------------------------------
# Resumable training state
# ------------------------------------------------------------------------------------------------

TRAIN_STATE = "train_state.npz"


@dataclass(frozen=True)
class TrainState:
    """A training run after ``step`` updates. ``rng_state`` is numpy's ``bit_generator.state``;
    ``configs`` (plain dicts) and their ``config_hash`` identify the run."""

    step: int
    params: Any
    opt_state: Any
    rng_state: dict
    configs: dict
    config_hash: str


def save_train_state(directory: str | Path, state: TrainState) -> Path:
    """Write ``directory/train_state.npz`` atomically (one file, so it is always consistent)."""
    meta = {"format_version": FORMAT_VERSION, "step": state.step, "rng_state": state.rng_state,
            "configs": state.configs, "config_hash": state.config_hash}
    arrays = {**_flat_arrays(state.params, "params/"), **_flat_arrays(state.opt_state, "opt/"),
              "meta": np.asarray(json.dumps(meta, sort_keys=True))}
    return atomic_write_npz(Path(directory) / TRAIN_STATE, arrays)


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} → {b!r}")
    return out


def _restore(stored: dict, prefix: str, template, path: Path):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for p, ref in leaves:
        key = prefix + path_key(p)
        ref = np.asarray(ref)
        if key not in stored or stored[key].shape != ref.shape or stored[key].dtype != ref.dtype:
            raise CheckpointError(f"{path}: {key} is missing or has another shape/dtype than "
                                  "this run expects")
        restored.append(jax.numpy.asarray(stored[key]))
    return jax.tree_util.tree_unflatten(treedef, restored)


def load_train_state(directory: str | Path, params_template, opt_template, configs: dict,
                     config_hash: str) -> TrainState | None:
    """The saved state of the run in ``directory`` (None when there is none). A corrupt file, or
    one written by a run with other configs, raises ``CheckpointError`` listing the differences."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {_stored_key(k): npz[k] for k in npz.files}
        meta = json.loads(str(stored.pop("meta")))
        step, rng_state = int(meta["step"]), meta["rng_state"]
        saved_configs, saved_hash = meta["configs"], meta["config_hash"]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"corrupt training state {path}: {err}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {meta.get('format_version')!r}; "
                              f"expected {FORMAT_VERSION}")
    if saved_hash != config_hash:
        diff = _differences(saved_configs, configs) or ["(configs equal, hash differs)"]
        raise CheckpointError(f"{path} was written by a run with other settings (config hash "
                              f"{saved_hash} ≠ {config_hash}): {'; '.join(diff[:4])}")
    return TrainState(step, _restore(stored, "params/", params_template, path),
                      _restore(stored, "opt/", opt_template, path), rng_state, saved_configs,
                      saved_hash)
