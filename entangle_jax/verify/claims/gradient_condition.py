"""The gradient condition (docs/design.md §1.2) against real DPO steps of each pair alone.

For each pair of the paper's three shapes (L = 0, 2, 6: single, short, long; ``VerifySettings.
shapes``) the DPO update of that
pair alone, ``u = d_w g_w − d_l g_l`` (π_ref = the model itself, so d_w = d_l = β/2), predicts

    Δlog π_w ≈ η (d_w‖g_w‖² − d_l⟨g_w,g_l⟩),   Δlog π_l ≈ η (d_w⟨g_w,g_l⟩ − d_l‖g_l‖²).

``dynamics.step_check`` takes real steps of η, η/2, η/4, η/8, with η set so that the median
pair's larger predicted change is 0.05 (``condition.auto_learning_rate``). Checks, all of which must
pass (rules fixed here):

1. the real step's case (sign pattern) equals the predicted case: fraction of pairs, CI lower
   bound ≥ 0.9 (the headline statistic);
2. the median relative error |actual − predicted|/|predicted| at η: CI upper bound ≤ 0.1;
3. the error is O(η²): each pair's slope of log error against log η (over the four steps), median
   with CI inside [1.8, 2.2];
4. case 4 (w↓ l↑) never happens, predicted or real: fraction of pairs ≤ 0;
5. the DPO margin never falls to first order: fraction of pairs whose predicted Δ(log π_w −
   log π_l) = η d ‖g_w − g_l‖² is resolved negative ≤ 0.

The condition is a statement about one pair's own step. How pairs move in a batched run, where
the other pairs' terms act too, is the claim ``batched_dynamics``.

Negative control: a real step of the reversed update (ascent on the DPO loss: step size −η, from
the same gradients), on which check 4 must fail — case 4 is then the rule, which shows the check
can see it.
"""

from __future__ import annotations


import numpy as np

from entangle_jax.condition import auto_learning_rate, gradient_condition
from entangle_jax.dynamics import step_check
from entangle_jax.objectives import get_objective
from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Evaluation, Hypothesis, Rule

TARGET_CHANGE = 0.05
HALVINGS = 3
AGREEMENT_RULE = Rule("ci_lo", ">=", 0.9)
NEVER = Rule("value", "<=", 0.0)


def dpo_step_size(ctx: ModelContext, suffix_length: int) -> tuple[float, np.ndarray, np.ndarray]:
    """``(η, d_w, d_l)``: DPO weights of every pair (π_ref = π) and the step size at which the
    median pair's larger first-order change is ``TARGET_CHANGE``."""
    geo = ctx.geometry(suffix_length)
    d_w, d_l = get_objective("dpo").weights(geo.logp_w, geo.logp_l, geo.logp_w, geo.logp_l,
                                            1.0, 1.0)
    d_w, d_l = np.asarray(d_w), np.asarray(d_l)
    cond = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    return auto_learning_rate(cond.delta_w, cond.delta_l, TARGET_CHANGE), d_w, d_l


def dpo_one_step(ctx: ModelContext, suffix_length: int):
    """``(steps, reverse, d_w, d_l)``: real DPO steps of η·2^-k (k = 0..HALVINGS) on every pair
    alone, and the reversed step of −η (ascent on the DPO loss: the negative control), all from
    one computation of each pair's gradients. Computed once per model and shared with the
    mitigation claim's control."""
    def compute():
        eta, d_w, d_l = dpo_step_size(ctx, suffix_length)
        lrs = np.append(eta * 2.0 ** -np.arange(HALVINGS + 1), -eta)
        step = step_check(ctx.graphdef, ctx.params, ctx.pairs(suffix_length), d_w, d_l, lrs)
        return step.select(slice(0, HALVINGS + 1)), step.select([HALVINGS + 1]), d_w, d_l
    return ctx.memo(("dpo_one_step", suffix_length), compute)


def error_orders(step) -> np.ndarray:
    """Per pair, the least-squares slope of log(|err_w| + |err_l|) against log η."""
    errors = np.stack([sum(step.errors(k)) for k in range(len(step.lrs))])  # [K, B]
    x = np.log(step.lrs) - np.log(step.lrs).mean()
    with np.errstate(divide="ignore"):
        y = np.log(errors)
    return (x[:, None] * (y - y.mean(0))).sum(0) / (x * x).sum()


def measure(ctx: ModelContext) -> dict:
    rows = {k: [] for k in ("agree", "relative_error", "order", "case4", "margin_falls",
                            "control_case4", "pooled_order")}
    for length in ctx.settings.shapes:
        step, reverse, d_w, d_l = dpo_one_step(ctx, length)
        predicted, actual = step.predicted_case, step.actual_case(0)
        rel = step.relative_error(0).reshape(2, -1)
        margin_rate = step.rate_w - step.rate_l
        margin_scale = d_w * (step.sq_norm_w + step.sq_norm_l + 2 * np.abs(step.inner))
        rows["agree"].append(predicted == actual)
        rows["relative_error"].append(np.nanmax(rel, 0))  # the worse of the pair's two responses
        rows["order"].append(error_orders(step))
        rows["case4"].append((predicted == 4) | (actual == 4))
        rows["margin_falls"].append(
            stats.resolved_sign(margin_rate, margin_scale, ctx.resolution) < 0)
        rows["control_case4"].append(reverse.actual_case(0) == 4)
        rows["pooled_order"].append(np.full(len(d_w), step.error_order()))
    return {k: np.concatenate(v) for k, v in rows.items()}


def evaluate(per_seed, settings) -> Evaluation:
    def col(name):
        return column(per_seed, name)

    checks = (
        check("fraction of pairs whose real step has the predicted case "
              f"(L={','.join(map(str, settings.shapes))})",
              stats.fraction_true, col("agree"), AGREEMENT_RULE, settings),
        check("median relative error of the predicted Δlog π at η", _median,
              col("relative_error"), Rule("ci_hi", "<=", 0.1), settings),
        check("median per-pair error order in η", _median, col("order"),
              Rule("ci_lo", ">=", 1.8), settings),
        check("median per-pair error order in η (upper)", _median, col("order"),
              Rule("ci_hi", "<=", 2.2), settings),
        check("fraction of pairs in case 4 (predicted or real)", stats.fraction_true,
              col("case4"), NEVER, settings),
        check("fraction of pairs whose DPO margin falls to first order", stats.fraction_true,
              col("margin_falls"), NEVER, settings),
    )
    control = check("fraction of pairs in case 4 under the reversed update", stats.fraction_true,
                    col("control_case4"), NEVER, settings)
    details = {
        "pooled_error_order_by_seed_and_shape": [float(o) for a in col("pooled_order")
                                                 for o in a[::settings.n_pairs]],
    }
    hypothesis = Hypothesis("DPO: d_w = d_l > 0 (by construction), plain gradient steps")
    return Evaluation(hypothesis, checks, settings.n_pairs, control,
                      "the reversed update (ascent on the DPO loss)", details)


def _median(samples: np.ndarray) -> np.ndarray:
    return np.nanmedian(samples, axis=1)


CLAIM = Claim(
    id="gradient_condition",
    statement="The gradient condition: first-order Δlog π_w, Δlog π_l match a real small step "
              "(signs, relative error, O(η²) error); case 4 never happens; the DPO margin never "
              "falls to first order",
    headline_regime="pretrained", measure=measure, evaluate=evaluate)
