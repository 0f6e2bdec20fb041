"""Which parameters a preference run trains: all of them, the last k blocks, or LoRA adapters.

A subset is a pair of pure functions over the parameter state, as an optax transformation is a
pair (``init``, ``update``)::

    trainable = subset.init(params, key)           the pytree the optimizer updates
    params    = subset.apply(base, trainable)      what the model runs with

The frozen parameters are closed over, never differentiated: the gradient is taken with respect to
``trainable`` only, so a run on the last blocks backpropagates no further than they reach, and a
LoRA run forms no gradient of a frozen weight matrix (cheaper than masking the updates of a full
gradient with ``optax.masked``, which computes them all first).

- ``AllParams``: ``trainable = params``.
- ``LastBlocks(k)``: the leaves of the last ``k`` blocks and of the head (final norm; the tied
  embedding stays frozen).
- ``LoRA(rank, alpha)`` (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
  arXiv 2106.09685): every dense kernel ``K [n, m]`` of the blocks becomes ``K + (α/r) A B`` with
  ``A [n, r] ~ N(0, 1/n)`` and ``B [r, m] = 0``, so training starts at the base model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from entangle_jax.config import ConfigError
from entangle_jax.pytrees import leaf_keys


def _by_key(params) -> dict:
    return dict(zip(leaf_keys(params), jax.tree.leaves(params)))


def _replace(params, values: dict):
    """``params`` with the leaves whose keys are in ``values`` replaced."""
    keys = leaf_keys(params)
    leaves = [values.get(k, x) for k, x in zip(keys, jax.tree.leaves(params))]
    return jax.tree.unflatten(jax.tree.structure(params), leaves)


def _n_blocks(keys) -> int:
    return 1 + max((int(k.split("/")[1]) for k in keys if k.startswith("blocks/")), default=-1)


@dataclass(frozen=True)
class AllParams:
    name = "all"

    def init(self, params, key=None):
        return params

    def apply(self, base, trainable):
        return trainable


@dataclass(frozen=True)
class LastBlocks:
    k: int

    @property
    def name(self) -> str:
        return f"last:{self.k}"

    def keys(self, params) -> list[str]:
        keys = leaf_keys(params)
        first = _n_blocks(keys) - self.k
        if first < 0:
            raise ConfigError(f"train_params={self.name!r} is invalid: the model has only "
                              f"{_n_blocks(keys)} blocks")
        return [k for k in keys if k.startswith("ln_f/")
                or (k.startswith("blocks/") and int(k.split("/")[1]) >= first)]

    def init(self, params, key=None):
        values = _by_key(params)
        return {k: values[k] for k in self.keys(params)}

    def apply(self, base, trainable):
        return _replace(base, trainable)


@dataclass(frozen=True)
class LoRA:
    rank: int
    alpha: float = 16.0

    @property
    def name(self) -> str:
        return f"lora:{self.rank}"

    @staticmethod
    def kernels(params) -> list[str]:
        return [k for k in leaf_keys(params) if k.startswith("blocks/") and k.endswith("/kernel")]

    def init(self, params, key):
        values, adapters = _by_key(params), {}
        for k, key_k in zip(self.kernels(params), jax.random.split(key, len(self.kernels(params)))):
            n, m = values[k].shape
            if self.rank > min(n, m):
                raise ConfigError(f"train_params={self.name!r} is invalid: rank exceeds the "
                                  f"{n}×{m} kernel {k}")
            dtype = values[k].dtype
            adapters[k] = {"a": jax.random.normal(key_k, (n, self.rank), dtype) / jnp.sqrt(n),
                           "b": jnp.zeros((self.rank, m), dtype)}
        return adapters

    def apply(self, base, trainable):
        values = _by_key(base)
        scale = self.alpha / self.rank
        return _replace(base, {k: values[k] + scale * (ab["a"] @ ab["b"])
                               for k, ab in trainable.items()})


def parse_subset(text: str):
    """``all``, ``last:K`` (the last K blocks and the final norm) or ``lora:R`` (rank R)."""
    match = re.fullmatch(r"(all)|(last|lora):([1-9][0-9]*)", str(text).strip())
    if match is None:
        raise ConfigError(f"train_params={text!r} is invalid: one of all, last:K, lora:R "
                          "(K blocks, rank R: positive integers)")
    if match.group(1):
        return AllParams()
    kind, number = match.group(2), int(match.group(3))
    return LastBlocks(number) if kind == "last" else LoRA(number)
