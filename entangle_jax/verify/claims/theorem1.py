"""Theorem 1 (single token): ⟨g_w, g_l⟩ < 0 when y_w, y_l are the single tokens Positive/Negative.

Hypothesis: the model is *uncertain between the two answers* at the sentiment position. Measured as
two conditions on p = softmax at the position that predicts the sentiment token, taken over the
median pair: the answer mass ``p_w + p_l ≥ 0.5`` (the model answers with one of the two sentiment
tokens) and ``min(p_w, p_l) ≥ 0.01`` (it is not already certain). At random initialization the
first fails (p is near uniform over the vocabulary); after SFT on clean labels the second fails
(p_w → 1, so g_w = J_zᵀ(e_w − p) → 0 and the sign of ⟨g_w, g_l⟩ is set by the leftover mass).

Statistic: the fraction of pairs whose ⟨g_w, g_l⟩ is resolved negative (``|inner| > rtol ·
‖g_w‖‖g_l‖``); rule: the 95% CI lower bound ≥ 0.9. With DPO weights d_w = d_l the first-order
changes are then Δlog π_w ∝ ‖g_w‖² − ⟨g_w,g_l⟩ > 0 and Δlog π_l ∝ ⟨g_w,g_l⟩ − ‖g_l‖² < 0 (case 1);
the detail ``dpo_case1_first_order`` reports that fraction, and the gradient-condition claim tests
it against real steps.

Negative control: the same statistic with the full shared suffix (L = max), where the theorem does
not apply.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.condition import gradient_condition
from entangle_jax.objectives import get_objective
from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column, median
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Condition, Evaluation, Hypothesis, Rule

#: The uncertainty premise (also of the token-wise claim, whose M[0,0] is this same quantity).
ANSWER_MASS_MIN = 0.5
UNCERTAINTY_MIN = 0.01
FRACTION_RULE = Rule("ci_lo", ">=", 0.9)


def uncertainty_hypothesis(per_seed, statement: str) -> Hypothesis:
    p_w, p_l = (np.concatenate(column(per_seed, k)) for k in ("p_w", "p_l"))
    return Hypothesis(statement, (
        Condition("median p_w + p_l at the sentiment position", float(np.median(p_w + p_l)),
                  Rule("value", ">=", ANSWER_MASS_MIN)),
        Condition("median min(p_w, p_l) at the sentiment position",
                  float(np.median(np.minimum(p_w, p_l))), Rule("value", ">=", UNCERTAINTY_MIN))))


def dpo_cases(geo) -> np.ndarray:
    """The first-order case of each pair under one DPO step from the model itself (π_ref = π)."""
    d_w, d_l = get_objective("dpo").weights(geo.logp_w, geo.logp_l, geo.logp_w, geo.logp_l,
                                            1.0, 1.0)
    return gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner).case


def measure(ctx: ModelContext) -> dict:
    single, full = ctx.geometry(0), ctx.geometry(ctx.settings.max_suffix)
    return {"inner": single.inner, "scale": np.sqrt(single.sq_norm_w * single.sq_norm_l),
            "inner_control": full.inner,
            "scale_control": np.sqrt(full.sq_norm_w * full.sq_norm_l),
            "p_w": ctx.output_layer.p_w, "p_l": ctx.output_layer.p_l,
            "dpo_case": dpo_cases(single)}


def evaluate(per_seed, settings) -> Evaluation:
    rtol = settings.resolution
    sign = [stats.resolved_sign(i, s, rtol) for i, s in
            zip(column(per_seed, "inner"), column(per_seed, "scale"))]
    sign_control = [stats.resolved_sign(i, s, rtol) for i, s in
                    zip(column(per_seed, "inner_control"), column(per_seed, "scale_control"))]
    cosine = [i / s for i, s in zip(column(per_seed, "inner"), column(per_seed, "scale"))]
    head = check("fraction of pairs with ⟨g_w,g_l⟩ < 0 (L=0)", stats.fraction_true,
                 [s < 0 for s in sign], FRACTION_RULE, settings)
    control = check(f"fraction of pairs with ⟨g_w,g_l⟩ < 0 (L={settings.max_suffix})",
                    stats.fraction_true, [s < 0 for s in sign_control], FRACTION_RULE, settings)
    hypothesis = uncertainty_hypothesis(
        per_seed, "the model is uncertain between Positive and Negative at the sentiment token")
    details = {
        "median_inner": median(column(per_seed, "inner")),
        "median_cosine": median(cosine),
        "fraction_unresolved": float(np.mean(np.concatenate(sign) == 0)),
        "median_p_w": median(column(per_seed, "p_w")),
        "median_p_l": median(column(per_seed, "p_l")),
        "dpo_case1_first_order": float(np.mean(np.concatenate(column(per_seed, "dpo_case")) == 1)),
    }
    return Evaluation(hypothesis, (head,), len(sign[0]), control,
                      f"the full shared suffix, L={settings.max_suffix}", details)


CLAIM = Claim(
    id="theorem1_single_token",
    statement="Theorem 1: with single-token responses (Positive/Negative), ⟨g_w, g_l⟩ < 0; hence "
              "DPO raises log π_w and lowers log π_l",
    headline_regime="uncertain_sft", measure=measure, evaluate=evaluate)
