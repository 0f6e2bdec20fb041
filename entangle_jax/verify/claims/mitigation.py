"""Mitigation: the pairwise-normalized update gives case 1 (log π_w ↑, log π_l ↓) for every pair.

The update of one pair is ``u = d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖`` (``mitigations.
normalized_coefficients``). With DPO's d_w = d_l = d, to first order
``Δlog π_w = η d ‖g_w‖ (1 − cos) ≥ 0`` and ``Δlog π_l = −η d ‖g_l‖ (1 − cos) ≤ 0``: case 1 whatever
the entanglement. Measured on the pairs of the three shapes (L = 0, 2, 6) with one real step of
size η (the median pair's larger first-order change 0.05), through ``dynamics.step_check``.

Checks: (1, headline) the fraction of pairs whose *real* step is in case 1, CI lower bound ≥ 0.9;
(2) the fraction of pairs whose first-order case, from the measured rates ⟨g, u⟩, is 1 — every
pair (value ≥ 1). Negative control: the plain DPO step on the same pairs (from the gradient-
condition claim's one-step check) judged by rule (1); where DPO itself already gives case 1 the
control passes and the report flags that the mitigation has nothing to fix there.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.condition import auto_learning_rate, gradient_condition
from entangle_jax.dynamics import step_check
from entangle_jax.mitigations import normalized_coefficients
from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column
from entangle_jax.verify.claims.gradient_condition import TARGET_CHANGE, dpo_one_step
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Evaluation, Hypothesis, Rule

CASE1_RULE = Rule("ci_lo", ">=", 0.9)
EVERY_PAIR = Rule("value", ">=", 1.0)


def measure(ctx: ModelContext) -> dict:
    rows = {"real_case1": [], "first_order_case1": [], "dpo_real_case1": []}
    for length in ctx.settings.shapes:
        geo = ctx.geometry(length)
        dpo_step, _, d_w, d_l = dpo_one_step(ctx, length)
        c_w, c_l = (np.asarray(c) for c in
                    normalized_coefficients(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l))
        rates = gradient_condition(c_w, c_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
        eta = auto_learning_rate(rates.delta_w, rates.delta_l, TARGET_CHANGE)
        step = step_check(ctx.graphdef, ctx.params, ctx.pairs(length), c_w, c_l, [eta])
        rows["real_case1"].append(step.actual_case(0) == 1)
        rows["first_order_case1"].append(step.predicted_case == 1)
        rows["dpo_real_case1"].append(dpo_step.actual_case(0) == 1)
    return {k: np.concatenate(v) for k, v in rows.items()}


def evaluate(per_seed, settings) -> Evaluation:
    checks = (
        check("fraction of pairs in case 1 after one real normalized step "
              f"(L={','.join(map(str, settings.shapes))})",
              stats.fraction_true, column(per_seed, "real_case1"), CASE1_RULE, settings),
        check("fraction of pairs in case 1 to first order", stats.fraction_true,
              column(per_seed, "first_order_case1"), EVERY_PAIR, settings),
    )
    control = check("fraction of pairs in case 1 after one real plain DPO step",
                    stats.fraction_true, column(per_seed, "dpo_real_case1"), CASE1_RULE,
                    settings)
    def by_shape(name):  # rows are the pairs of each shape in turn
        x = np.stack([a.reshape(len(settings.shapes), -1) for a in column(per_seed, name)])
        return {f"L={L}": float(v) for L, v in zip(settings.shapes, x.mean((0, 2)))}

    details = {"normalized_real_case1_by_L": by_shape("real_case1"),
               "dpo_real_case1_by_L": by_shape("dpo_real_case1")}
    hypothesis = Hypothesis("DPO weights d_w = d_l (by construction)")
    return Evaluation(hypothesis, checks, settings.n_pairs, control,
                      "the plain DPO step on the same pairs", details)


CLAIM = Claim(
    id="normalized_mitigation",
    statement="Mitigation: the pairwise-normalized update d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖ gives "
              "case 1 (log π_w ↑, log π_l ↓) for every pair",
    headline_regime="pretrained", measure=measure, evaluate=evaluate)
