"""The paper's mitigations of gradient entanglement, as update rules a preference loop can train.

An update rule ("method") turns a batch of pairs into per-token coefficients ``c_w, c_l [B, W]``;
the update direction is their gradient-weighted sum (``dynamics`` module docstring)

    u = (1/B) Σ_b Σ_i c_w,bi g_w,b^i − c_l,bi g_l,b^i,

which a loop descends through any optax optimizer, so every method composes with SGD, Adam and
the probes of ``dynamics.step_check``. Three methods:

- ``Plain(objective)``: ``c = d`` on every token — the objective's own gradient.
- ``PairwiseNormalized(objective)`` (docs/design.md §1.4): ``u_b = d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖``, so
  to first order ``Δlog π_w = η ‖g_w‖ (d_w − d_l cos)`` and ``Δlog π_l = −η ‖g_l‖ (d_l − d_w cos)``:
  case 1 iff ``cos < min(d_w/d_l, d_l/d_w)`` — for every pair when ``d_w = d_l`` (DPO, IPO, R-DPO,
  SimPO with equal lengths), where ``Δlog π_w ∝ ‖g_w‖(1 − cos) ≥ 0`` and
  ``Δlog π_l ∝ −‖g_l‖(1 − cos) ≤ 0``. ``balanced=True`` uses ``(d_w + d_l)/2`` on both sides, which
  gives case 1 for every objective.
- ``TokenMask(objective, l1)``: sparsity-regularized token masking. Weights ``m ∈ [0, 1]^W`` on
  the response positions, shared by chosen and rejected, replace each sequence log-prob (policy and
  reference) by ``Σ_i m_i log π(y_i | …)``; the loss is the objective on these masked log-probs plus
  ``λ Σ_i m_i`` (the L1 norm on the box). m is learned jointly with the model by projected
  gradient descent (an exact proximal step for this penalty). Because ``m_i`` multiplies both
  responses, ``∂ℓ/∂m_i ∝ −(r_w,i − r_l,i)``: only positions whose token-level log-ratios separate
  chosen from rejected can pay for their weight, the shared suffix tokens fade. The mask is indexed
  by position, which assumes aligned responses (true of the sentiment pairs: position 0 is the
  sentiment token, the rest the shared suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from entangle_jax.config import ConfigError
from entangle_jax.data.pairs import Pairs
from entangle_jax.gradients import token_grams
from entangle_jax.logprob import pair_token_logprobs, sequence_logprob
from entangle_jax.objectives import Objective

#: The update rules a preference run can train with (``make_method``).
Mitigation = Literal["none", "normalized", "token_mask"]
MITIGATIONS = get_args(Mitigation)


class UpdateRule(Protocol):
    """What a preference loop needs of a method: its per-token coefficients for a batch and the
    side state (``extra``: None, or the token mask) it carries from step to step."""

    objective: Objective

    @property
    def name(self) -> str: ...

    def init_extra(self, window: int): ...

    def coefficients(self, graphdef, params, extra, pairs: Pairs, ref_tok_w, ref_tok_l):
        """``(c_w [B, W], c_l [B, W], outputs)`` for a batch; traceable."""

    def update_extra(self, extra, outputs: dict, ref_tok_w, ref_tok_l, len_w, len_l): ...


def pair_lengths(pairs: Pairs):
    """``(|y_w|, |y_l|)`` ``[B]`` as floats."""
    return pairs.chosen.length.astype(jnp.float32), pairs.rejected.length.astype(jnp.float32)


def _outputs(tok_w, tok_l, ref_tok_w, ref_tok_l, d_w, d_l,
             loss):
    """The per-pair quantities every method reports (unmasked sequence log-probs)."""
    return {"logp_w": tok_w.sum(-1), "logp_l": tok_l.sum(-1), "ref_w": ref_tok_w.sum(-1),
            "ref_l": ref_tok_l.sum(-1), "d_w": d_w, "d_l": d_l, "loss": loss,
            "tok_w": tok_w, "tok_l": tok_l}


@dataclass(frozen=True)
class Plain:
    """The objective's own gradient: ``c = d`` on every token."""

    objective: Objective

    @property
    def name(self) -> str:
        return self.objective.name

    def init_extra(self, window: int):
        return None

    def coefficients(self, graphdef, params, extra, pairs: Pairs, ref_tok_w, ref_tok_l):
        """``(c_w, c_l, outputs)`` for a batch; traceable (call it inside ``jax.jit``)."""
        tok_w, tok_l = pair_token_logprobs(graphdef, params, pairs)
        args = (tok_w.sum(-1), tok_l.sum(-1), ref_tok_w.sum(-1), ref_tok_l.sum(-1),
                *pair_lengths(pairs))
        d_w, d_l = self.objective.weights(*args)
        out = _outputs(tok_w, tok_l, ref_tok_w, ref_tok_l, d_w, d_l,
                       self.objective.loss(*args))
        return _on_tokens(d_w, tok_w), _on_tokens(d_l, tok_l), out

    def update_extra(self, extra, outputs: dict, ref_tok_w, ref_tok_l, len_w, len_l):
        return extra


def _on_tokens(d, tok):
    return jnp.broadcast_to(d[:, None], tok.shape)


def normalized_coefficients(d_w, d_l, sq_norm_w, sq_norm_l, *, balanced: bool = False):
    """``(d_w/‖g_w‖, d_l/‖g_l‖)``, with ``(d_w + d_l)/2`` for both d's when ``balanced``."""
    if balanced:
        d_w = d_l = (d_w + d_l) / 2
    return d_w / sq_norm_w ** 0.5, d_l / sq_norm_l ** 0.5  # numpy or jax in, the same out


@dataclass(frozen=True)
class PairwiseNormalized:
    """The pairwise normalized gradient update ``d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖`` per pair."""

    objective: Objective
    balanced: bool = False

    @property
    def name(self) -> str:
        return f"{self.objective.name}+normalized" + ("-balanced" if self.balanced else "")

    def init_extra(self, window: int):
        return None

    def coefficients(self, graphdef, params, extra, pairs: Pairs, ref_tok_w, ref_tok_l):
        c_w, c_l, out = Plain(self.objective).coefficients(graphdef, params, extra, pairs,
                                                          ref_tok_w, ref_tok_l)
        sq_w, sq_l = _sq_grad_norms(graphdef, params, pairs)
        n_w, n_l = normalized_coefficients(out["d_w"], out["d_l"], sq_w, sq_l,
                                           balanced=self.balanced)
        return _on_tokens(n_w, c_w), _on_tokens(n_l, c_l), out

    def update_extra(self, extra, outputs: dict, ref_tok_w, ref_tok_l, len_w, len_l):
        return extra


def _sq_grad_norms(graphdef, params, pairs: Pairs):
    """``(‖g_w‖², ‖g_l‖²)`` ``[B]`` from per-example gradients, contracted leaf by leaf."""
    grad = jax.grad(partial(sequence_logprob, graphdef))

    def one(pair: Pairs):
        g_w, g_l = grad(params, pair.chosen), grad(params, pair.rejected)
        return optax.tree.vdot(g_w, g_w), optax.tree.vdot(g_l, g_l)

    return jax.lax.stop_gradient(jax.vmap(one)(pairs))


def masked_logps(mask, tok):
    """``Σ_i m_i log π(y_i | …)`` ``[B]`` for per-token log-probs ``[B, W]`` (pads are 0)."""
    return tok @ mask


@dataclass(frozen=True)
class TokenMask:
    """Sparsity-regularized token masking on the response positions (see the module docstring).

    ``l1`` is λ, ``mask_learning_rate`` the step of the mask's projected gradient descent,
    ``init`` the initial weight of every position. The data term's gradient on the mask starts at
    zero (the policy equals its reference), so λ · mask_learning_rate must leave the rewards time
    to separate: with λ = 0.05 the default model's mask reached zero everywhere in 20 steps, which
    also stops the policy, whatever the data."""

    objective: Objective
    l1: float = 0.005
    mask_learning_rate: float = 1.0
    init: float = 1.0

    def __post_init__(self):
        for name, ok, rule in (("l1", self.l1 >= 0, ">= 0"),
                               ("mask_learning_rate", self.mask_learning_rate > 0, "> 0"),
                               ("init", 0 <= self.init <= 1, "in [0, 1]")):
            if not ok:
                raise ConfigError(f"TokenMask.{name}={getattr(self, name)!r} is invalid: "
                                  f"must be {rule}")

    @property
    def name(self) -> str:
        return f"{self.objective.name}+token_mask"

    def init_extra(self, window: int):
        return jnp.full(window, self.init, jnp.float32)

    def loss(self, mask, tok_w, tok_l, ref_tok_w, ref_tok_l, len_w, len_l):
        """Mean masked objective loss of the batch plus ``λ Σ_i m_i``."""
        data = self.objective.loss(masked_logps(mask, tok_w), masked_logps(mask, tok_l),
                                   masked_logps(mask, ref_tok_w), masked_logps(mask, ref_tok_l),
                                   len_w, len_l)
        return data.mean() + self.l1 * jnp.sum(mask)  # = λ‖m‖₁ on the box m ≥ 0

    def coefficients(self, graphdef, params, mask, pairs: Pairs, ref_tok_w, ref_tok_l):
        tok_w, tok_l = pair_token_logprobs(graphdef, params, pairs)
        args = (masked_logps(mask, tok_w), masked_logps(mask, tok_l),
                masked_logps(mask, ref_tok_w), masked_logps(mask, ref_tok_l), *pair_lengths(pairs))
        d_w, d_l = self.objective.weights(*args)
        out = _outputs(tok_w, tok_l, ref_tok_w, ref_tok_l, d_w, d_l,
                       self.objective.loss(*args) + self.l1 * jnp.sum(mask))
        return d_w[:, None] * mask, d_l[:, None] * mask, out

    def update_extra(self, mask, outputs: dict, ref_tok_w, ref_tok_l, len_w, len_l):
        """One projected gradient step on the mask, the per-token log-probs ``outputs["tok_w"]``,
        ``outputs["tok_l"]`` ``[B, W]`` held fixed: ``m ← clip(m − η_m ∇_m(ℓ + λ Σ m), 0, 1)``."""
        grad = jax.grad(self.loss)(mask, jax.lax.stop_gradient(outputs["tok_w"]),
                                   jax.lax.stop_gradient(outputs["tok_l"]), ref_tok_w, ref_tok_l,
                                   len_w, len_l)
        return jnp.clip(mask - self.mask_learning_rate * grad, 0.0, 1.0)


#: ``Mitigation`` → its update rule, from the objective and the options of ``make_method``.
_RULES = {
    "none": lambda objective, balanced, mask_l1, mask_lr: Plain(objective),
    "normalized": lambda objective, balanced, mask_l1, mask_lr: PairwiseNormalized(objective,
                                                                                    balanced),
    "token_mask": lambda objective, balanced, mask_l1, mask_lr: TokenMask(objective, mask_l1,
                                                                          mask_lr),
}


def make_method(objective: Objective, mitigation: Mitigation = "none", *, balanced: bool = False,
                mask_l1: float = TokenMask.l1,
                mask_learning_rate: float = TokenMask.mask_learning_rate) -> UpdateRule:
    """The update rule ``mitigation`` (one of ``MITIGATIONS``) for ``objective``."""
    if mitigation not in _RULES:
        raise ConfigError(f"mitigation={mitigation!r} is invalid: one of {', '.join(MITIGATIONS)}")
    return _RULES[mitigation](objective, balanced, mask_l1, mask_learning_rate)


def mask_report(graphdef, params, mask, pairs: Pairs) -> dict:
    """How a position mask reshapes the gradient geometry of ``pairs`` (all of one length n).

    ``sentiment_share`` = m_0 / Σ_{i<n} m_i, the mask's weight on the sentiment token; with the
    token-wise Grams ``M = ⟨g_w^i, g_l^j⟩``, ``C``, ``R`` the masked inner product is ``mᵀ M m``
    (unmasked: ``1ᵀ M 1``) and the masked cosine ``mᵀMm / √(mᵀCm · mᵀRm)``; means over pairs."""
    lengths = np.unique(np.asarray(pairs.chosen.length))
    if len(lengths) != 1:
        raise ConfigError(f"mask_report needs pairs of one response length, got {lengths}")
    n = int(lengths[0])
    m = np.asarray(mask, np.float64)[:n]
    grams = token_grams(graphdef, params, pairs)
    cross, chosen, rejected = (np.asarray(g, np.float64)[:, :n, :n]
                               for g in (grams.cross, grams.chosen, grams.rejected))
    ones = np.ones(n)

    def quad(g, v):
        return np.einsum("i,bij,j->b", v, g, v)

    cos = quad(cross, ones) / np.sqrt(quad(chosen, ones) * quad(rejected, ones))
    masked_cos = quad(cross, m) / np.sqrt(quad(chosen, m) * quad(rejected, m))
    return {"mask": m.tolist(), "sentiment_share": float(m[0] / m.sum()) if m.sum() > 0 else 0.0,
            "inner": float(quad(cross, ones).mean()), "masked_inner": float(quad(cross, m).mean()),
            "sentiment_token_inner": float(cross[:, 0, 0].mean()),
            "cosine": float(cos.mean()), "masked_cosine": float(np.nanmean(masked_cos))}


__all__ = ["MITIGATIONS", "Mitigation", "PairwiseNormalized", "Plain", "TokenMask", "UpdateRule",
           "make_method", "mask_report", "masked_logps", "pair_lengths",
           "normalized_coefficients"]
