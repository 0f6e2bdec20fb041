"""Token-wise: at the sentiment token's index i, ⟨g_w^i, g_l^i⟩ < 0 even when ⟨g_w, g_l⟩ > 0.

With the token-wise Gram ``M[i, j] = ⟨g_w^i, g_l^j⟩`` of a pair at the paper's long suffix
(``VerifySettings.long_suffix``, 6), the sequence inner product is ``Σ_ij M[i, j]`` and M splits into blocks:
sentiment × sentiment ``M[0,0]``, the suffix diagonal ``Σ_{i≥1} M[i,i]``, the suffix off-diagonal
``Σ_{i≠j≥1} M[i,j]`` and sentiment × suffix ``Σ_{j≥1} M[0,j] + M[j,0]``. By causality M[0,0] is the
single-token inner product of Theorem 1, so the claim shares its premise (uncertainty at the
sentiment token), plus a second one: some pairs (≥ 10%) have ⟨g_w, g_l⟩ > 0 at that suffix.

Statistic: among pairs with ⟨g_w, g_l⟩ resolved positive, the fraction with M[0,0] resolved negative
(relative to √(⟨g_w^0,g_w^0⟩⟨g_l^0,g_l^0⟩)); rule: 95% CI lower bound ≥ 0.9. Negative control:
the first suffix token's diagonal entry M[1,1] (a shared token) in place of M[0,0]. The details
report each block's mean (with CI), how often it is positive, and its share of the positive mass.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column, mean_ci
from entangle_jax.verify.claims.theorem1 import FRACTION_RULE, uncertainty_hypothesis
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Condition, Evaluation, Hypothesis, Rule

POSITIVE_PAIRS_MIN = 0.1
BLOCKS = ("sentiment_x_sentiment", "suffix_diagonal", "suffix_off_diagonal",
          "sentiment_x_suffix")


def gram_blocks(cross: np.ndarray) -> dict[str, np.ndarray]:
    """The four block sums ``[B]`` of token-wise Grams ``[B, R, R]`` (slot 0 = sentiment token;
    padded slots are 0, so they add nothing)."""
    suffix = cross[:, 1:, 1:]
    diagonal = np.trace(suffix, axis1=1, axis2=2)
    return {"sentiment_x_sentiment": cross[:, 0, 0], "suffix_diagonal": diagonal,
            "suffix_off_diagonal": suffix.sum((1, 2)) - diagonal,
            "sentiment_x_suffix": cross[:, 0, 1:].sum(1) + cross[:, 1:, 0].sum(1)}


def measure(ctx: ModelContext) -> dict:
    length = ctx.settings.long_suffix
    grams, geo = ctx.grams(length), ctx.geometry(length)
    cross = np.asarray(grams.cross)
    # ‖g_w^i‖ ‖g_l^i‖ of the first two slots: the scale that resolves the sign of M[i, i]
    scale_token = np.sqrt(np.diagonal(grams.chosen, axis1=1, axis2=2)[:, :2]
                          * np.diagonal(grams.rejected, axis1=1, axis2=2)[:, :2])
    return {"m00": cross[:, 0, 0], "m11": cross[:, 1, 1], "scale_00": scale_token[:, 0],
            "scale_11": scale_token[:, 1], "inner": geo.inner,
            "scale": np.sqrt(geo.sq_norm_w * geo.sq_norm_l),
            **{f"block_{k}": v for k, v in gram_blocks(cross).items()},
            "sum_error": np.abs(cross.sum((1, 2)) - geo.inner) / np.sqrt(geo.sq_norm_w
                                                                          * geo.sq_norm_l),
            "p_w": ctx.output_layer.p_w, "p_l": ctx.output_layer.p_l}


def evaluate(per_seed, settings) -> Evaluation:
    rtol = settings.resolution

    def sign(value, scale):
        return [stats.resolved_sign(v, s, rtol)
                for v, s in zip(column(per_seed, value), column(per_seed, scale))]

    positive = [s > 0 for s in sign("inner", "scale")]
    head = check("fraction with M[0,0] < 0 among pairs with ⟨g_w,g_l⟩ > 0 "
                 f"(L={settings.long_suffix})", stats.conditional_fraction,
                 [np.stack([s < 0, p], -1) for s, p in zip(sign("m00", "scale_00"), positive)],
                 FRACTION_RULE, settings)
    control = check("fraction with M[1,1] < 0 among the same pairs", stats.conditional_fraction,
                    [np.stack([s < 0, p], -1) for s, p in zip(sign("m11", "scale_11"), positive)],
                    FRACTION_RULE, settings)
    base = uncertainty_hypothesis(per_seed, "the model is uncertain at the sentiment token, and "
                                  "some pairs have a positive sequence-level ⟨g_w,g_l⟩")
    hypothesis = Hypothesis(base.statement, (*base.conditions, Condition(
        f"fraction of pairs with ⟨g_w,g_l⟩ > 0 (L={settings.long_suffix})",
        float(np.mean(np.concatenate(positive))), Rule("value", ">=", POSITIVE_PAIRS_MIN))))
    blocks = {k: column(per_seed, f"block_{k}") for k in BLOCKS}
    positive_mass = {k: float(np.sum(np.maximum(np.concatenate(v), 0))) for k, v in blocks.items()}
    total = sum(positive_mass.values())
    details = {
        "blocks": {k: {**mean_ci(v, settings),
                       "fraction_positive": float(np.mean(np.concatenate(v) > 0)),
                       "share_of_positive_mass": positive_mass[k] / total if total > 0 else None}
                   for k, v in blocks.items()},
        "max_relative_error_sum_M_vs_inner": float(np.max(np.concatenate(
            column(per_seed, "sum_error")))),
    }
    return Evaluation(hypothesis, (head,), len(positive[0]), control,
                      "M[1,1], the first shared suffix token", details)


CLAIM = Claim(
    id="tokenwise_sentiment_negative",
    statement="Token-wise: at the sentiment token's index, ⟨g_w^i, g_l^i⟩ < 0 even for pairs "
              "whose sequence-level ⟨g_w, g_l⟩ is positive; the positive mass sits in the "
              "shared-suffix blocks of M",
    headline_regime="pretrained", measure=measure, evaluate=evaluate)
