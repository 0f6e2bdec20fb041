"""Beyond the paper: a batched DPO run follows the empirical-NTK prediction over its batches.

The paper's gradient condition describes one pair's own step. In a batched run every pair also
moves through the other pairs' gradients (the empirical-NTK cross terms), so a pair's direction is
decided by the batches actually drawn, not by its own condition. The claim: the first-order
prediction from the run's start over its realized batches (``entangle_jax.predict``: SGD's sum of
per-pair terms with their draw counts; Adam's steps with the preconditioner it builds from the
start's batch gradients) matches each pair's real Δlog π_w and Δlog π_l after a short run.

Run (fixed here and in ``VerifySettings``): DPO from the regime model, ``run_steps`` steps of
``run_batch`` training pairs at the long suffix, the parameters ``run_train_params``; SGD at the
step size of the gradient-condition claim (the median pair's larger one-step change 0.05), Adam
at the step size whose predicted run moves the median held-out pair as much as the SGD run's
prediction does (both chosen from predictions only, before the runs). Pairs: the eval pairs
(held out: they move only through cross terms) and as many training pairs that the run drew
(trained: own and cross terms).

Checks, all must pass (rules fixed here), for SGD and for Adam, held-out and trained pairs:
the fraction of responses whose real change has the predicted sign, 95% CI lower bound ≥ 0.9;
the median relative error |real − predicted| / |predicted|, 95% CI upper bound ≤ 0.1.
Negative control: the pair's own term alone (the per-pair condition's signs, the old check of a
short run) on the held-out pairs of the SGD run, which the cross terms overrule.

Reported, descriptively: the class imbalance of each seed's drawn batches (the share of pairs
whose chosen answer is Positive, minus ½) and the fraction of each class's held-out pairs whose
log π_w falls; and the same with class-balanced batches (``PreferenceConfig.stratify``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from entangle_jax.logprob import sequence_logps
from entangle_jax.predict import (own_term_signs, planned_update, predicted_changes,
                                  run_start)
from entangle_jax.train.preference import (PreferenceConfig, draw_batches, preference_pairs,
                                           train_preference)
from entangle_jax.verify.claims.base import Claim, check, column
from entangle_jax.verify.claims.gradient_condition import AGREEMENT_RULE, dpo_step_size
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Evaluation, Hypothesis, Rule

ERROR_RULE = Rule("ci_hi", "<=", 0.1)
SETTINGS = ("sgd", "adam")
SETS = ("held_out", "trained")


def _run(ctx: ModelContext, optimizer: str, step_size, stratify: bool = False):
    """One DPO run from the regime model and what ``predict`` said of it beforehand:
    ``{set: (predicted [2n], real [2n])}`` over chosen then rejected responses, the batches and
    the run's training pairs. The prediction is linear in the learning rate (SGD and Adam alike:
    Adam's step is η·m̂/(√v̂+ε)), so it is made at η = 1 and ``step_size(unit predictions)``
    then picks η before the run."""
    length = ctx.settings.long_suffix
    settings = ctx.settings
    config = PreferenceConfig(objective="dpo", optimizer=optimizer, learning_rate=1.0,
                              steps=settings.run_steps, batch_size=settings.run_batch,
                              suffix_length=length, probe_every=0, seed=ctx.seed,
                              train_params=settings.run_train_params, stratify=stratify)
    ckpt = dataclasses.replace(ctx.ckpt, graphdef=ctx.graphdef, params=ctx.params)
    sets = preference_pairs(ckpt, config, task=ctx.data)
    batches = draw_batches(len(sets.train), config, sets.labels)
    drawn = np.unique(batches)
    pairs = {"held_out": ctx.pairs(length), "trained": sets.train[drawn[:settings.n_pairs]]}
    # the plan needs the drawn pairs only: the same sum over their draws
    used = sets.train[drawn]
    start = run_start(ctx.graphdef, ctx.params, config, used)
    update = planned_update(start, config, used, np.searchsorted(drawn, batches))
    unit = {k: np.concatenate([predicted_changes(start, p.chosen, update),
                               predicted_changes(start, p.rejected, update)])
            for k, p in pairs.items()}
    lr = step_size(unit["held_out"])
    before = {k: sequence_logps(ctx.graphdef, start.params, p) for k, p in pairs.items()}
    run = train_preference(ckpt, dataclasses.replace(config, learning_rate=lr), task=ctx.data,
                           progress=False)
    out = {}
    for name, p in pairs.items():
        after = sequence_logps(ctx.graphdef, run.params, p)
        real = np.concatenate([a - b for a, b in zip(after, before[name])])
        out[name] = (lr * unit[name], real)
    return out, batches, sets.labels


def _median_move(predicted: np.ndarray) -> float:
    """The median pair's larger predicted |Δlog π| (``predicted``: chosen then rejected)."""
    return float(np.median(np.abs(_pair_rows(predicted)).max(1)))


def _relative_error(predicted, real):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(real - predicted) / np.abs(predicted)


def _pair_rows(x: np.ndarray) -> np.ndarray:
    """``[2n]`` (chosen then rejected) → ``[n, 2]`` rows of one pair each."""
    return x.reshape(2, -1).T


def measure(ctx: ModelContext) -> dict:
    length = ctx.settings.long_suffix
    eta, d_w, d_l = dpo_step_size(ctx, length)
    out = {}
    move = None
    for optimizer in SETTINGS:
        step_size = ((lambda unit: eta) if optimizer == "sgd"
                     else (lambda unit: move / _median_move(unit)))
        runs, batches, labels = _run(ctx, optimizer, step_size)
        if optimizer == "sgd":
            move = _median_move(runs["held_out"][0])
        for name, (predicted, real) in runs.items():
            out[f"{optimizer}_{name}_agree"] = _pair_rows(np.sign(predicted) == np.sign(real))
            out[f"{optimizer}_{name}_error"] = _pair_rows(_relative_error(predicted, real))
        if optimizer == "sgd":
            geo = ctx.geometry(length)
            own = np.concatenate(own_term_signs(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l,
                                                geo.inner))
            real = runs["held_out"][1]
            out["own_term_agree"] = _pair_rows(own == np.sign(real))
            out["imbalance"] = np.full(len(geo.inner), np.mean(labels[batches]) - 0.5)
            out["falls_w"] = real[:len(geo.inner)] < 0
            out["positive"] = np.asarray([s.positive for s in
                                          ctx.data.eval[:ctx.settings.n_pairs]])
    stratified, _, _ = _run(ctx, "sgd", lambda unit: eta, stratify=True)
    out["stratified_falls_w"] = stratified["held_out"][1][:ctx.settings.n_pairs] < 0
    return out


def _fraction_of_responses(samples: np.ndarray) -> np.ndarray:
    return samples.reshape(samples.shape[0], -1).mean(1)


def _median_of_responses(samples: np.ndarray) -> np.ndarray:
    return np.nanmedian(samples.reshape(samples.shape[0], -1), axis=1)


def _falling_by_class(falls, positive) -> dict:
    falls, positive = np.asarray(falls), np.asarray(positive)
    return {"positive": float(np.mean(falls[positive])) if positive.any() else None,
            "negative": float(np.mean(falls[~positive])) if (~positive).any() else None}


def evaluate(per_seed, settings) -> Evaluation:
    checks = []
    for optimizer in SETTINGS:
        for name in SETS:
            label = f"{optimizer.upper()}, {name.replace('_', '-')} pairs"
            checks.append(check(f"fraction of responses whose real change has the predicted sign "
                                f"({label})", _fraction_of_responses,
                                column(per_seed, f"{optimizer}_{name}_agree"), AGREEMENT_RULE,
                                settings))
            checks.append(check(f"median relative error of the prediction ({label})",
                                _median_of_responses, column(per_seed, f"{optimizer}_{name}_error"),
                                ERROR_RULE, settings))
    control = check("fraction of held-out responses whose real change has the sign of the "
                    "pair's own term (SGD)", _fraction_of_responses,
                    column(per_seed, "own_term_agree"), AGREEMENT_RULE, settings)
    details = {"seeds": [
        {"seed": seed, "batch_imbalance_positive_minus_half": float(m["imbalance"][0]),
         "held_out_log_pi_w_falls_by_class": _falling_by_class(m["falls_w"], m["positive"]),
         "stratified_held_out_log_pi_w_falls_by_class":
             _falling_by_class(m["stratified_falls_w"], m["positive"])}
        for seed, m in zip(settings.seeds, per_seed)]}
    hypothesis = Hypothesis(
        f"a short batched DPO run ({settings.run_steps} steps of {settings.run_batch} pairs, "
        f"parameters '{settings.run_train_params}'), small steps from the regime model")
    return Evaluation(hypothesis, tuple(checks), settings.n_pairs, control,
                      "the pair's own term alone (the per-pair gradient condition)", details)


CLAIM = Claim(
    id="batched_dynamics",
    statement="[beyond the paper] In a short batched DPO run (SGD and Adam) every pair, trained "
              "or held out, moves as the first-order empirical-NTK prediction over the realized "
              "batches says, not as its own per-pair condition says",
    headline_regime="pretrained", measure=measure, evaluate=evaluate)
