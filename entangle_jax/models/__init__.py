"""The models, behind one interface (``models.base.CausalLM``): the tiny GPT-2-shaped transformer
the toolkit trains itself (``tiny.Transformer``, ``config.ModelConfig``) and the Llama port that
carries pretrained SmolLM2 weights (``llama.Llama``, ``config.LlamaConfig``).

Every function downstream takes ``(graphdef, params)`` of either and never asks which it is.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from entangle_jax.config import ConfigError, LlamaConfig, ModelConfig
from entangle_jax.models.base import CausalLM
from entangle_jax.models.llama import Llama
from entangle_jax.models.tiny import Transformer

#: Architecture name (as checkpoints record it) → (config class, model class).
ARCHITECTURES = {"tiny": (ModelConfig, Transformer), "llama": (LlamaConfig, Llama)}


def architecture(config) -> str:
    """The architecture name of a model config."""
    for name, (config_cls, _) in ARCHITECTURES.items():
        if type(config) is config_cls:
            return name
    raise ConfigError(f"{type(config).__name__} is not a model config; known: "
                      f"{', '.join(c.__name__ for c, _ in ARCHITECTURES.values())}")


def config_class(name: str):
    if name not in ARCHITECTURES:
        raise ConfigError(f"architecture {name!r} is unknown; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name][0]


def init_model(config, seed: int = 0) -> CausalLM:
    """A randomly initialized model of ``config`` (either architecture)."""
    return ARCHITECTURES[architecture(config)][1](config, nnx.Rngs(params=seed))


def abstract_model(config) -> CausalLM:
    """The model's structure without allocating its parameters (``nnx.eval_shape``)."""
    return nnx.eval_shape(lambda: init_model(config))


def in_precision(config, params, precision: str):
    """``(config, graphdef, params)`` of the same model with parameters in ``precision``
    ("float32" or "float64"; call inside ``jax.enable_x64(True)`` for float64). The graphdef is
    rebuilt too: layers such as ``nnx.Embed`` keep their compute dtype in it."""
    config = dataclasses.replace(config, param_dtype=precision)
    graphdef = nnx.split(abstract_model(config))[0]
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    return config, graphdef, jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


__all__ = ["ARCHITECTURES", "CausalLM", "Llama", "Transformer", "abstract_model", "architecture",
           "config_class", "count_params", "in_precision", "init_model"]
