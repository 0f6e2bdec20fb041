"""The report of ``entangle dynamics``: per-pair steps against the first-order prediction, and
one batched step with SGD and Adam, for each objective and response shape (JSON and Markdown)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from entangle_jax.condition import CASES, auto_learning_rate, gradient_condition
from entangle_jax.config import ConfigError
from entangle_jax.data.pairs import Pairs
from entangle_jax.dynamics import batch_update_check, objective_weights, step_check, to_float64
from entangle_jax.gradients import pair_geometry
from entangle_jax.objectives import Objective


def report_pairs(ckpt, suffix_length: int | None, n_pairs: int, data=None) -> Pairs:
    """The first ``n_pairs`` records of ``data`` (a ``PreferenceData``) or of the file a
    checkpoint was trained on (``suffix_length`` None), or else the first ``n_pairs`` eval pairs
    of a sentiment checkpoint with ``suffix_length``."""
    if data is not None or ckpt.user_data is not None:
        from entangle_jax.data.userdata import encode_pairs, load_from_config

        data = load_from_config(ckpt.user_data) if data is None else data
        return encode_pairs(data, ckpt.tokenizer, range(min(n_pairs, len(data.records))),
                            ckpt.model_config.max_len).pairs
    if ckpt.data_config is None:
        raise ConfigError("the checkpoint records no data config; the report needs its pairs")
    from entangle_jax.data.pairs import sentiment_pairs
    from entangle_jax.data.sentiment import make_sentiment_data, response_window

    if not 0 <= suffix_length <= ckpt.data_config.max_suffix_length:
        raise ConfigError(f"suffix length {suffix_length} is invalid: the checkpoint's data "
                          f"allows 0..{ckpt.data_config.max_suffix_length}")
    data = make_sentiment_data(ckpt.data_config)
    return sentiment_pairs(data.eval[:n_pairs], ckpt.tokenizer, suffix_length,
                           ckpt.model_config.max_len, response_window(ckpt.data_config))


def shape_name(suffix_length: int | None) -> str:
    from entangle_jax.data.sentiment import SHAPES

    if suffix_length is None:
        return "data"
    names = {v: k for k, v in SHAPES.items()}
    return names.get(suffix_length, f"L={suffix_length}")


def one_step_report(ckpt, objectives: Sequence[Objective], suffix_lengths: Sequence[int | None],
                    *, n_pairs: int = 32, normalized: bool = False, target_change: float = 0.05,
                    lr: float | None = None, halvings: int = 3, adam_lr: float = 1e-4,
                    float64: bool = True, progress: Callable[[str], None] | None = None,
                    data=None) -> dict:
    """The prediction-vs-actual table of ``entangle dynamics`` (JSON-ready).

    For each suffix length and objective: per-pair steps of size η·2^-k (k = 0..``halvings``; η is
    ``lr`` or the step at which the median pair's larger predicted change is ``target_change``),
    the predicted and measured cases, sign agreement, relative error and fitted error order; and
    one step on all the pairs as one batch, with SGD (rate B·η, so each pair's own term is its
    per-pair step) and with Adam (``adam_lr``), where the per-pair formula's case is compared with
    the real one. ``normalized`` uses the pairwise normalized update ``c = d/‖g‖`` instead (no
    batch rows). ``progress(label)`` is called after each (objective, shape)."""
    if halvings < 0 or n_pairs <= 0:
        raise ConfigError(f"halvings={halvings}, pairs={n_pairs} are invalid: need halvings >= 0 "
                          "and pairs > 0")
    rows = []
    with jax.enable_x64(float64):
        graphdef, params = (to_float64(ckpt.model_config, ckpt.params) if float64
                            else (ckpt.graphdef, ckpt.params))
        for length in suffix_lengths:
            pairs = report_pairs(ckpt, length, n_pairs, data)
            geo = pair_geometry(graphdef, params, pairs)
            logp_w, logp_l = np.asarray(geo.logp_w), np.asarray(geo.logp_l)
            for objective in objectives:
                d_w, d_l = objective_weights(objective, pairs, logp_w, logp_l, logp_w, logp_l)
                c_w, c_l = ((d_w / np.sqrt(geo.sq_norm_w), d_l / np.sqrt(geo.sq_norm_l))
                            if normalized else (d_w, d_l))
                cond = gradient_condition(c_w, c_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
                eta = lr if lr is not None else auto_learning_rate(cond.delta_w, cond.delta_l,
                                                                   target_change)
                lrs = [eta * 0.5 ** k for k in range(halvings + 1)]
                check = step_check(graphdef, params, pairs, c_w, c_l, lrs)
                row = {"objective": objective.name, "hparams": dict(objective.hparams),
                       "normalized": normalized, "shape": shape_name(length),
                       "suffix_length": length, "one_step": check.summary(0),
                       "pairs": {"d_w": d_w.tolist(), "d_l": d_l.tolist(),
                                 "inner": np.asarray(geo.inner).tolist(),
                                 "sq_norm_w": np.asarray(geo.sq_norm_w).tolist(),
                                 "sq_norm_l": np.asarray(geo.sq_norm_l).tolist(),
                                 "predicted_w": check.predicted(0)[0].tolist(),
                                 "predicted_l": check.predicted(0)[1].tolist(),
                                 "actual_w": check.actual_w[0].tolist(),
                                 "actual_l": check.actual_l[0].tolist(),
                                 "margin_w": cond.margin_w.tolist(),
                                 "margin_l": cond.margin_l.tolist()}}
                if not normalized:
                    for name, rate in (("sgd", eta * len(pairs)), ("adam", adam_lr)):
                        batch = batch_update_check(graphdef, params, pairs, objective, name,
                                                   rate, geometry=geo)
                        row[f"batch_{name}"] = {**batch.summary(), "lr": rate,
                                                "disagreeing_pairs": batch.disagreements().tolist()}
                rows.append(row)
                if progress is not None:
                    progress(f"{objective.name} / {shape_name(length)}")
    return {"model_config": dataclasses.asdict(ckpt.model_config), "pairs": n_pairs,
            "float64": float64, "target_change": target_change, "halvings": halvings,
            "adam_lr": adam_lr, "results": rows}


def _fractions(fr: dict) -> str:
    return "/".join(f"{100 * fr.get(f'case_{k}', 0.0):.0f}" for k in CASES)


def format_report(report: dict) -> str:
    """A Markdown table of ``one_step_report``: case fractions in % (cases 1/2/3/4)."""
    lines = ["| objective | shape | η | predicted % 1/2/3/4 | actual % 1/2/3/4 | sign agree w/l "
             "| median rel. err | error order | batch SGD disagree | Adam disagree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        s = row["one_step"]
        name = row["objective"] + (" (normalized)" if row["normalized"] else "")
        sgd = row.get("batch_sgd", {}).get("formula_vs_actual_disagree")
        adam = row.get("batch_adam", {}).get("formula_vs_actual_disagree")
        pct = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        lines.append(f"| {name} | {row['shape']} | {s['lr']:.2e} | {_fractions(s['predicted'])} "
                     f"| {_fractions(s['actual'])} | {s['sign_agreement_w']:.2f}/"
                     f"{s['sign_agreement_l']:.2f} | {s['median_relative_error']:.1e} "
                     f"| {s['error_order']:.2f} | {pct(sgd)} | {pct(adam)} |")
    return "\n".join(lines) + "\n"


__all__ = ["format_report", "one_step_report", "report_pairs", "shape_name"]
