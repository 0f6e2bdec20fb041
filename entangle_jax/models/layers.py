"""Layers that expose their own intermediate values, for the structured gradient products.

Under ``nnx.capture`` a tapped layer records its input with ``sow`` and adds a zero perturbation to
its output with ``perturb``: the gradient of a scalar ``f`` with respect to that perturbation is the
output cotangent ``g_t = ∂f/∂y_t``. A dense layer ``y_t = x_t K + b`` then has

    ∇_K f = Σ_t x_t ⊗ g_t,

so its gradient is a sum of outer products of two recorded factors, which each layer declares as
``gradient_terms()``: ``{parameter name: (Term(shared, rowed, shared_left), …)}``. An embedding is
the same with one-hot inputs (its recorded input is the integer ids). Outside a capture a tapped
layer is a plain layer: nothing is recorded and nothing is added.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

INPUT, OUTPUT = "input", "output"


class Term(NamedTuple):
    """One ``Σ_t u_t ⊗ v_t`` term of a parameter's gradient. ``shared`` names the recorded factor
    that is the same for every differentiated row (a layer input, or integer ids of one-hot rows),
    ``rowed`` the perturbation whose cotangent is the per-row factor; ``shared_left`` says which
    factor indexes the parameter's first axis. Names are tap paths relative to the declaring
    module (joined with its path by ``ghost``)."""

    shared: str
    rowed: str
    shared_left: bool


def param_dtype(config):
    """The parameter dtype a model config asks for (``param_dtype`` "float32" or "float64")."""
    return jnp.float64 if config.param_dtype == "float64" else jnp.float32


def causal_softmax(scores):
    """Softmax over the last (key) axis of ``[..., q, k]`` scores, keys after the query masked."""
    t = scores.shape[-1]
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def capturing(module: nnx.Module) -> bool:
    """Whether ``module`` runs under ``nnx.capture`` (which installs ``__captures__`` on every
    module it records). Outside one, ``sow``/``perturb`` would create state, so taps are skipped."""
    return hasattr(module, "__captures__")


def record(module: nnx.Module, name: str, value):
    """``sow`` the last value under ``name`` (no tuple of calls) while capturing."""
    if capturing(module):
        module.sow(nnx.Intermediate, name, value, reduce_fn=lambda _, v: v, init_fn=lambda: None)
    return value


def perturbed(module: nnx.Module, name: str, value):
    """``value`` plus the zero perturbation ``name`` while capturing, else ``value`` itself."""
    return module.perturb(name, value) if capturing(module) else value


class Dense(nnx.Linear):
    """``nnx.Linear`` (same parameters ``kernel``, ``bias``) that taps its input and output."""

    def __call__(self, x):
        return perturbed(self, OUTPUT, super().__call__(record(self, INPUT, x)))

    def gradient_terms(self) -> dict[str, tuple[Term, ...]]:
        # the bias is a small leaf: its per-row gradient is formed exactly
        return {"kernel": (Term(INPUT, OUTPUT, True),)}


class Embedding(nnx.Embed):
    """``nnx.Embed`` (parameter ``embedding``) that taps its integer ids and its output."""

    def __call__(self, ids):
        return perturbed(self, OUTPUT, super().__call__(record(self, INPUT, ids)))

    def gradient_terms(self) -> dict[str, tuple[Term, ...]]:
        return {"embedding": (Term(INPUT, OUTPUT, True),)}


class RMSNorm(nnx.Module):
    """``x / √(mean(x²) + ε) · scale`` over the last axis (Llama's RMSNorm, no mean subtraction)."""

    def __init__(self, dim: int, *, eps: float, param_dtype):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x):
        inv = 1.0 / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return x * inv * self.scale[...]
