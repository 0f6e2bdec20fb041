"""``entangle predict``: which pairs will DPO push the chosen log-prob down for, said before
training by several predictors, then scored against a real run.

Per pair, from the starting model only (no training):

- ``gradient_condition``: the paper's per-pair one-step change
  Δlog π_w = η(d_w‖g_w‖² − d_l⟨g_w,g_l⟩) (and Δlog π_l = η(d_w⟨g_w,g_l⟩ − d_l‖g_l‖²));
  risk −Δlog π_w;
- ``cosine``: cos(g_w, g_l); risk: itself;
- ``ches``, ``ln_ches``: CHES and length-normalized CHES of the last hidden states (Razin et al.
  2024, arXiv 2410.08847; ``entangle_jax.ches``); risk: themselves;
- ``edit_distance``: between the chosen and rejected tokens (their baseline); risk −distance;
- ``entk_full``: the first-order empirical-NTK change of log π_w with every training pair at its
  expected draw count (no batch order; ``entangle_jax.predict``); risk −Δ;
- ``entk_realized``: the same over the batches the planned run draws (its seed); risk −Δ.

Targets: "Δlog π_w < 0" after 1 step, after K (``--steps``) steps and after one epoch
(⌈N/B⌉ steps), each a separate run from the same start with the same seed (a run of T steps draws
the first T batches of any longer one). The two eNTK predictors are made for each target's number
of steps. Scores per predictor × target, for the trained pairs and the held-out pairs: AUROC with
a bootstrap 95% interval, precision among the 10% highest-risk pairs, sign agreement (predictors
that predict a change) and Spearman's ρ between risk and −Δlog π_w (``entangle_jax.scoring``).

Probe responses (a data file with Ren & Sutherland's probe fields: rephrasings of the chosen and
rejected responses, irrelevant and non-language responses): for each field, the same two eNTK
predictions of every held-out prompt's probe response, Δlog π(y) ≈ ⟨∇log π(y), U⟩, scored the same
way against its real change, with the mean real and predicted change per field (the
"squeezing" of Ren & Sutherland shows as most responses falling).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time

from entangle_jax.cli.common import (DATA_READING_OPTIONS, add_model_option,
                                     add_pair_file_options, check_output_dir, checkpoint_fields,
                                     given, is_pretrained, locked_outputs, model_from_args,
                                     nonnegative_int, not_applicable, note, positive_float,
                                     positive_int, user_data_from_args)

#: Without --lr: the longest run's largest move of a training pair's log π_w or log π_l if all
#: its steps pushed the way its first does: η = TARGET_CHANGE / (T · max |Δlog π| of step 1),
#: from the realized-batch prediction, before any run. (Per step, not over the run: the steps'
#: pushes can cancel in the sum, and a step size set from a cancelled sum is far too large.)
TARGET_CHANGE = 0.1
#: The share of pairs flagged by each predictor for the precision score.
TOP_FRACTION = 0.1
#: name → (what it is, whether it predicts a signed change of log π_w).
PREDICTORS = {
    "gradient_condition": ("per-pair one-step condition: risk −Δlog π_w", True),
    "cosine": ("cos(g_w, g_l)", False),
    "ches": ("CHES (Razin et al. 2024)", False),
    "ln_ches": ("length-normalized CHES (Razin et al. 2024)", False),
    "edit_distance": ("token edit distance: risk −distance", False),
    "entk_full": ("eNTK, every pair at its expected count: risk −Δlog π_w", True),
    "entk_realized": ("eNTK over the run's realized batches: risk −Δlog π_w", True),
}
NOTES = (("cosine shares its cost with gradient_condition (one pair geometry), ln_ches with ches "
          "(one forward pass per response); the eNTK costs include the start's log-probs and "
          "objective weights"),
         ("the eNTK predictions are made for each target's number of steps; the other "
          "predictors are the same for every target"))
ADAM_NOTE = ("adam: entk_full takes the plain gradient direction (Adam's preconditioner follows "
             "the batch order, which it does not know)")
ENTK_PREDICTORS = ("entk_full", "entk_realized")
#: Predictors whose flagged pairs the filtering experiment drops (and the best one of the run).
FILTER_PREDICTORS = ("ches", "entk_full", "entk_realized")
FILTER_NOTE = ("filtering: on the kept training pairs a predictor's removal is partly selection "
               "(the pairs it dropped are not counted any more); the held-out pairs and the probes "
               "carry no such effect. A predictor drops the same pairs for every seed (flagged "
               "from the start, for the planned run's seed); random drops a new draw per seed")
TARGETS = ("step_1", "steps_K", "epoch")
SETS = ("trained", "held_out")
FILES = ("predict.json", "predict.md", "roc.png", "roc.pdf")


def add_parser(subparsers) -> None:
    from typing import get_args

    from entangle_jax.optimizers import Optimizer

    parser = subparsers.add_parser(
        "predict", help="predict, before DPO, which pairs' chosen log-prob falls; score it",
        description="Before training: per pair, the per-pair gradient condition, cos(g_w, g_l), "
                    "CHES and length-normalized CHES, the token edit distance and the first-order "
                    "eNTK predictions (full batch; over the planned run's batches). Then DPO runs "
                    "of 1 step, --steps steps and one epoch, and every predictor scored against "
                    "\"Δlog π_w < 0\": AUROC with a bootstrap 95% interval, precision among the "
                    "10% highest-risk pairs, sign agreement and Spearman's ρ, for trained and "
                    "held-out pairs. Writes DIR/predict.json, DIR/predict.md and DIR/roc.png.")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="a checkpoint from `entangle train` (default: the default model, "
                             "trained once and cached in .cache/models)")
    add_model_option(parser, "the model (instead of --checkpoint; a pretrained model needs "
                             "--data)")
    add_pair_file_options(parser, "real preference pairs instead of the sentiment task: the "
                                  "first --pairs records train, the next --held-out are held out")
    parser.add_argument("--shape", default="long",
                        help="sentiment task: pair shape or suffix length (default long)")
    parser.add_argument("--pairs", type=positive_int, default=96,
                        help="training pairs N (default 96)")
    parser.add_argument("--held-out", type=nonnegative_int, default=64,
                        help="held-out pairs, never trained on (default 64)")
    parser.add_argument("--steps", type=positive_int, default=4,
                        help="K, the steps of the planned run (default 4)")
    parser.add_argument("--batch", type=positive_int, default=8,
                        help="pairs per step B (default 8); one epoch is ⌈N/B⌉ steps")
    parser.add_argument("--lr", type=positive_float,
                        help="learning rate (default: the one at which the predicted first step "
                             "moves no training pair's log π_w or log π_l by more than "
                             f"{TARGET_CHANGE}/T, T the longest run's steps)")
    parser.add_argument("--optimizer", choices=get_args(Optimizer), default="adam",
                        help="(default adam)")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="seed of the run's batches and of the bootstrap (default 0)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000,
                        help="bootstrap resamples of the AUROC interval (default 1000)")
    parser.add_argument("--filter-seeds", type=nonnegative_int, default=3,
                        help="filtering experiment: an epoch of DPO without the 10%% of "
                             "training pairs each of several predictors flags, against dropping "
                             "a random 10%% and dropping nothing, for seeds 0..N-1; 0 skips it "
                             "(default 3)")
    parser.add_argument("--out", metavar="DIR", default="runs/predict",
                        help="write DIR/predict.json, predict.md, roc.png (default runs/predict)")
    parser.set_defaults(run=run)


def progress(message: str) -> None:
    print(f"predict: {message}", file=sys.stderr, flush=True)


class _Timer:
    """``with timer("name"):`` adds the block's wall seconds to ``timer.costs["name"]``."""

    def __init__(self):
        self.costs: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.costs[name] = self.costs.get(name, 0.0) + time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------------

def _pair_sets(args, ckpt, data, config):
    """``(train_sets, held_out, probes, source)``: the run's ``PreferenceSets`` (built by
    ``preference_pairs`` from what ``train_preference`` is given: ``source``, a dict of its
    ``data``/``task`` arguments), the held-out ``Pairs`` (None when there are none) and the probe
    responses of the held-out prompts (``{field: Responses}``, empty without them)."""
    from entangle_jax.cli import UsageError
    from entangle_jax.data.tasks import make_task_data, task_pairs
    from entangle_jax.data.userdata import encode_pairs, encode_probes, load_from_config
    from entangle_jax.train.preference import preference_pairs

    if data is None and ckpt.user_data is not None and not is_pretrained(ckpt):
        data = load_from_config(ckpt.user_data)
    if data is not None:
        n = len(data.records)
        if args.pairs >= n and args.held_out:
            raise UsageError(f"--pairs {args.pairs} leaves no held-out pair: the data has {n} "
                             "records (give fewer --pairs or --held-out 0)")
        train = dataclasses.replace(data, records=data.records[:args.pairs])
        rest = range(args.pairs, min(n, args.pairs + args.held_out))
        encoded = (encode_pairs(data, ckpt.tokenizer, rest, ckpt.model_config.max_len)
                   if len(rest) else None)
        held = None if encoded is None else encoded.pairs
        probes = {} if encoded is None else {
            field: probe_set.responses for field, probe_set in
            encode_probes(data, ckpt.tokenizer, encoded, ckpt.model_config.max_len).items()}
        source = {"data": train}
    else:
        if ckpt.data_config is None:
            raise UsageError("the checkpoint records no data config; give --data FILE")
        task = make_task_data(ckpt.data_config, ckpt.tokenizer)
        for option, want, have in (("--pairs", args.pairs, len(task.train)),
                                   ("--held-out", args.held_out, len(task.eval))):
            if want > have:
                raise UsageError(f"{option} {want} is more than the task's {have} pairs")
        source = {"task": dataclasses.replace(task, train=task.train[:args.pairs])}
        held = (task_pairs(task, ckpt.tokenizer, task.eval[:args.held_out],
                           config.suffix_length, ckpt.model_config.max_len)
                if args.held_out else None)
        probes = {}
    sets = preference_pairs(ckpt, config, **source)
    return sets, held, probes, source


# ------------------------------------------------------------------------------------------------
# Predictors (before training) and targets (real runs)
# ------------------------------------------------------------------------------------------------

def _static_predictors(ckpt, pairs, d_w, d_l, implementation, timer) -> dict:
    """The predictors that do not depend on the number of steps, at unit step size:
    ``{name: [B] value}`` plus ``gradient_condition_l`` (Δlog π_l of the condition)."""
    import numpy as np

    from entangle_jax.ches import pair_ches, pair_edit_distances
    from entangle_jax.condition import gradient_condition
    from entangle_jax.gradients import pair_geometry

    with timer("gradient_condition"):
        geo = pair_geometry(ckpt.graphdef, ckpt.params, pairs, implementation=implementation)
        cond = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    with timer("ches"):
        ches, ln_ches = pair_ches(ckpt.graphdef, ckpt.params, pairs)
    with timer("edit_distance"):
        distance = pair_edit_distances(pairs)
    return {"gradient_condition": cond.delta_w, "gradient_condition_l": cond.delta_l,
            "cosine": np.asarray(geo.cosine), "ches": ches, "ln_ches": ln_ches,
            "edit_distance": distance}


def _entk_predictions(start, config, train, pairs_by_set, probes, labels, horizons,
                      timer) -> tuple[dict, dict]:
    """``({(name, T): {set: (Δlog π_w, Δlog π_l)}}, {(name, T): {probe field: Δlog π}})`` of
    both eNTK predictors at unit step size for each horizon T (SGD: linear in η; Adam too, its
    step being η·m̂/(√v̂+ε)). Adam's full-batch prediction takes the plain gradient direction:
    its preconditioner follows the batch order."""
    import numpy as np

    from entangle_jax.data.pairs import stack_responses
    from entangle_jax.predict import draw_batches, planned_update, predicted_changes

    pair_out, probe_out = {}, {}
    # every response in one padded batch: one compiled jvp, not one per set and probe width
    every = {**{(name, side): getattr(pairs, side) for name, pairs in pairs_by_set.items()
                for side in ("chosen", "rejected")},
             **{("probe", field): responses for field, responses in probes.items()}}
    stacked, ends = stack_responses(list(every.values()))

    def predict(key, update):
        parts = dict(zip(every, np.split(predicted_changes(start, stacked, update), ends[:-1])))
        pair_out[key] = {name: (parts[name, "chosen"], parts[name, "rejected"])
                         for name in pairs_by_set}
        probe_out[key] = {field: parts["probe", field] for field in probes}

    for steps in horizons:
        at = dataclasses.replace(config, steps=steps)
        with timer("entk_full"):
            predict(("entk_full", steps),
                    planned_update(start, dataclasses.replace(at, optimizer="sgd"), train))
        with timer("entk_realized"):
            batches = draw_batches(len(train), at, labels)  # exactly the run's batches
            predict(("entk_realized", steps), planned_update(start, at, train, batches))
        progress(f"eNTK predictions for {steps} step(s) done")
    return pair_out, probe_out


def _real_changes(ckpt, config, source, pairs_by_set, probes, horizons,
                  timer) -> tuple[dict, dict]:
    """``({T: {set: Δlog π_w}}, {T: {probe field: Δlog π}})`` after a real run of T steps from
    the start (each a separate run of ``train_preference``, the same seed)."""
    import numpy as np

    from entangle_jax.data.pairs import stack_responses
    from entangle_jax.logprob import response_logprobs, sequence_logps
    from entangle_jax.train.preference import train_preference

    fields = list(probes)
    stacked, ends = stack_responses([probes[f] for f in fields]) if fields else (None, None)

    def logps(params):
        return ({name: sequence_logps(ckpt.graphdef, params, pairs)[0]
                 for name, pairs in pairs_by_set.items()},
                {} if not fields else dict(zip(fields, np.split(
                    response_logprobs(ckpt.graphdef, params, stacked), ends[:-1]))))

    before = logps(ckpt.params)
    pair_out, probe_out = {}, {}
    for steps in horizons:
        with timer("training"):
            run = train_preference(ckpt, dataclasses.replace(config, steps=steps),
                                   progress=False, **source)
        after = logps(run.params)
        pair_out[steps], probe_out[steps] = (
            {name: after[k][name] - before[k][name] for name in before[k]} for k in (0, 1))
        progress(f"DPO run of {steps} step(s) done ({timer.costs['training']:.1f} s so far)")
    return pair_out, probe_out


def _filtering(args, ckpt, config, source, pairs_by_set, probes, values, scores, lr, epoch,
               timer) -> dict:
    """The filtering experiment (``entangle_jax.filtering``) for an epoch of the planned run:
    drop nothing, a random 10%, or the 10% of training pairs that ``FILTER_PREDICTORS`` and the
    run's best predictor (highest AUROC on the trained pairs after an epoch) flag."""
    import numpy as np

    from entangle_jax.filtering import filtering_experiment, top_risk

    epoch_scores = scores["trained"]["epoch"]
    best = max(PREDICTORS, key=lambda name: epoch_scores[name]["auroc"] or 0.0)
    rules = {"none": np.array([], int), "random": None,
             **{name: top_risk(risk_of(name, values["trained"][name]["epoch"]), TOP_FRACTION)
                for name in dict.fromkeys((*FILTER_PREDICTORS, best))}}
    with timer("filtering"):
        result = filtering_experiment(
            ckpt, dataclasses.replace(config, learning_rate=lr, steps=epoch), source,
            pairs_by_set["trained"], rules, held=pairs_by_set.get("held_out"), probes=probes,
            seeds=range(args.filter_seeds), fraction=TOP_FRACTION, progress=progress)
    return {"fraction": TOP_FRACTION, "removed_pairs": len(rules[best]),
            "seeds": list(range(args.filter_seeds)), "steps": epoch, "best_predictor": best,
            "rules": result}


# ------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------

def risk_of(name: str, value):
    """Higher = more likely that log π_w falls (module docstring)."""
    return value if name in ("cosine", "ches", "ln_ches") else -value


def score(name: str, value, real, *, resamples: int, seed: int) -> dict:
    """The scores of predictor ``name`` (its per-pair ``value``) against the real Δlog π_w."""
    import numpy as np

    from entangle_jax.scoring import (auroc, bootstrap_ci, precision_at, sign_agreement,
                                      spearman)

    risk, falls = risk_of(name, np.asarray(value)), np.asarray(real) < 0
    signed = PREDICTORS[name][1]
    return {"auroc": auroc(risk, falls),
            "auroc_ci95": list(bootstrap_ci(auroc, risk, falls, n_resamples=resamples,
                                            seed=seed)),
            "precision_top10": precision_at(risk, falls, TOP_FRACTION),
            "sign_agreement": sign_agreement(value, real) if signed else None,
            "spearman": float(spearman(risk, -np.asarray(real)))}


def probe_scores(predicted: dict, real: dict, steps_of: dict, lr: float, *, resamples: int,
                 seed: int) -> dict:
    """Per probe field (``{(name, T): {field: Δ}}`` predicted at unit step size, ``{T: {field:
    Δ}}`` measured): its kind and count and, per target, the real Δlog π of every response, their
    mean and the fraction that fell, and each eNTK predictor's Δ (× ``lr``), mean and scores
    against "Δlog π < 0"."""
    import numpy as np

    from entangle_jax.data.records import PROBE_KINDS

    out = {}
    for field in sorted(real[min(real)]):
        targets = {}
        for target, steps in steps_of.items():
            truth = np.asarray(real[steps][field])
            entry = {"steps": steps, "delta_logp": truth, "mean_delta": float(truth.mean()),
                     "fraction_fell": float(np.mean(truth < 0)), "predicted": {}}
            for name in ENTK_PREDICTORS:
                value = lr * np.asarray(predicted[name, steps][field])
                entry["predicted"][name] = {"delta_logp": value, "mean_delta": float(value.mean()),
                                            **score(name, value, truth, resamples=resamples,
                                                    seed=seed)}
            targets[target] = entry
        out[field] = {"kind": PROBE_KINDS[field], "responses": int(truth.size),
                      "targets": targets}
    return out


HEADER = ("| predictor | target | AUROC [95% CI] | precision top 10% | sign agreement "
          "| Spearman ρ |")


def _fmt(value, spec=".2f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def format_markdown(report: dict) -> str:
    """One table per pair set: predictor × target (scores), and the cost of each predictor."""
    title = (f"# entangle predict: which pairs' log π_w falls under DPO ({report['optimizer']}, "
             f"η = {report['learning_rate']:.3g}, B = {report['batch']}, N = "
             f"{report['train_pairs']})")
    lines = [title, ""]
    for set_name in report["scores"]:
        rates = report["base_rate"][set_name]
        lines += [f"## {set_name.replace('_', '-')} pairs ({report['set_sizes'][set_name]}; "
                  "fraction whose log π_w fell: "
                  + ", ".join(f"{report['targets'][t]['steps']} step(s) {_fmt(rates[t])}"
                              for t in TARGETS) + ")", "",
                  HEADER, "|---|---|---|---|---|---|"]
        for name in PREDICTORS:
            for target in TARGETS:
                s = report["scores"][set_name][target][name]
                lo, hi = s["auroc_ci95"]
                lines.append(f"| {name} | {report['targets'][target]['steps']} step(s) | "
                             f"{_fmt(s['auroc'])} [{_fmt(lo)}, {_fmt(hi)}] | "
                             f"{_fmt(s['precision_top10'])} | {_fmt(s['sign_agreement'])} | "
                             f"{_fmt(s['spearman'])} |")
        lines.append("")
    lines += _probe_markdown(report)
    lines += _filtering_markdown(report)
    lines += ["## cost (wall seconds, both pair sets, compilation included)", "",
              "| predictor | seconds |", "|---|---|"]
    lines += [f"| {name} | {report['cost_s'][name]:.2f} |" for name in PREDICTORS]
    lines += [f"| (training runs, not a predictor) | {report['training_s']:.2f} |", ""]
    lines += [f"- {text}" for text in report["notes"]]
    return "\n".join(lines) + "\n"


def _probe_markdown(report: dict) -> list[str]:
    """The probe responses' table: real and predicted mean Δlog π, and the eNTK scores."""
    if not report["probes"]:
        return []
    lines = [f"## probe responses of the {report['set_sizes']['held_out']} held-out prompts "
             "(first-order eNTK prediction of each response's Δlog π)", "",
             "| probe | kind | n | steps | real mean Δ | fell | full: mean Δ | full: AUROC "
             "| realized: mean Δ | realized: AUROC [95% CI] | realized: sign agreement "
             "| realized: ρ |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for field, probe in report["probes"].items():
        for target in TARGETS:
            t = probe["targets"][target]
            full, realized = t["predicted"]["entk_full"], t["predicted"]["entk_realized"]
            lo, hi = realized["auroc_ci95"]
            lines.append(f"| {field} | {probe['kind']} | {probe['responses']} | {t['steps']} | "
                         f"{_fmt(t['mean_delta'], '.3g')} | {_fmt(t['fraction_fell'])} | "
                         f"{_fmt(full['mean_delta'], '.3g')} | {_fmt(full['auroc'])} | "
                         f"{_fmt(realized['mean_delta'], '.3g')} | {_fmt(realized['auroc'])} "
                         f"[{_fmt(lo)}, {_fmt(hi)}] | {_fmt(realized['sign_agreement'])} | "
                         f"{_fmt(realized['spearman'])} |")
    return [*lines, ""]


def _filtering_markdown(report: dict) -> list[str]:
    """The filtering experiment's table: one row per removal rule, mean ± sd over seeds."""
    if "filtering" not in report:
        return []
    f = report["filtering"]

    def cell(part, rule, name, spec=".2f"):
        value = f["rules"][rule]["mean"][part]
        if not value:
            return "–"
        mean, sd = value[name]
        return f"{_fmt(mean, spec)} ± {_fmt(sd, spec)}"

    lines = [f"## filtering: {f['removed_pairs']} of {report['train_pairs']} training pairs "
             f"({f['fraction']:.0%}) dropped before an epoch ({f['steps']} steps) of DPO, seeds "
             f"{f['seeds'][0]}..{f['seeds'][-1]}, mean ± sd over seeds (best predictor of this "
             f"run: {f['best_predictor']})", "",
             "| dropped | trained: log π_w fell | trained: mean Δ margin | held-out: log π_w fell "
             "| held-out: mean Δlog π_w | held-out: mean Δ margin | probes: mean Δlog π |",
             "|---|---|---|---|---|---|---|"]
    for rule in f["rules"]:
        lines.append(f"| {rule} | {cell('trained', rule, 'fraction_chosen_fell')} | "
                     f"{cell('trained', rule, 'mean_delta_margin', '.3g')} | "
                     f"{cell('held_out', rule, 'fraction_chosen_fell')} | "
                     f"{cell('held_out', rule, 'mean_delta_chosen', '.3g')} | "
                     f"{cell('held_out', rule, 'mean_delta_margin', '.3g')} | "
                     f"{cell('probes', rule, 'all', '.3g')} |")
    return [*lines, "", "(probes: the mean change of every probe response of the held-out "
                        "prompts; per field in predict.json)", ""]


def plot_roc(report: dict, curves: dict, out_dir) -> None:
    """``roc.png``/``roc.pdf``: one panel per target (rows: pair sets), one curve per predictor."""
    from entangle_jax.figures import style

    sets = list(curves)
    fig, axes = style.figure(len(sets), len(TARGETS), height=2.3)
    for row, set_name in enumerate(sets):
        for col, target in enumerate(TARGETS):
            ax = axes[row][col]
            for k, name in enumerate(PREDICTORS):
                fpr, tpr = curves[set_name][target][name]
                ax.plot(fpr, tpr, color=style.series_color(k), linewidth=1.0,
                        label=name if (row, col) == (0, 0) else None)
            ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.6, linestyle=":")
            ax.set_xlim(0, 1), ax.set_ylim(0, 1)
            steps = report["targets"][target]["steps"]
            style.panel_title(ax, "abcdefghi"[row * len(TARGETS) + col],
                              f"{set_name.replace('_', '-')}, {steps} step(s)")
            ax.set_xlabel("false positive rate")
            if col == 0:
                ax.set_ylabel("true positive rate")
    style.legend_below(fig, ncol=4)
    style.suptitle(fig, "ROC of each predictor for \"log π_w falls\" under DPO")
    style.save(fig, out_dir, "roc")


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------

def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from entangle_jax.cli import UsageError
    from entangle_jax.config import DataConfig, ModelConfig, SFTConfig, to_dict
    from entangle_jax.data.sentiment import parse_suffix_lengths
    from entangle_jax.dynamics import objective_weights
    from entangle_jax.logprob import sequence_logps
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.predict import draw_batches, run_start
    from entangle_jax.scoring import roc_curve
    from entangle_jax.train.preference import PreferenceConfig
    from entangle_jax.train.sft import cached_sft, cached_sft_on

    if not args.data:
        not_applicable(args, DATA_READING_OPTIONS, "without --data FILE (they read that file)")
    lengths = parse_suffix_lengths(args.shape)
    if len(lengths) != 1:
        raise UsageError(f"--shape {args.shape!r}: give one shape or suffix length")
    if args.batch > args.pairs:
        raise UsageError(f"--batch {args.batch} is more than the --pairs {args.pairs} training "
                         "pairs")
    check_output_dir(args.out, "--out", FILES)
    ckpt = model_from_args(args)
    if is_pretrained(ckpt) and not args.data:
        raise UsageError(f"--model {args.model} needs --data FILE (real preference pairs)")
    # η = 1 for the predictions: they are linear in η, which is chosen from them when not given
    config = PreferenceConfig(objective="dpo", optimizer=args.optimizer, learning_rate=1.0,
                              steps=args.steps, batch_size=args.batch, suffix_length=lengths[0],
                              probe_every=0, seed=args.seed)
    with locked_outputs((args.out, "--out")):
        if ckpt is None:
            data = user_data_from_args(args, ModelConfig())
            ckpt = (cached_sft(ModelConfig(), DataConfig(), SFTConfig()) if data is None
                    else cached_sft_on(ModelConfig(), data, SFTConfig()))
        else:
            data = user_data_from_args(args, ckpt.model_config, ckpt.tokenizer)
        if (data is not None or ckpt.user_data is not None) and given(args, "shape"):
            note(f"--shape {args.shape} is not used: the pairs are those of the data file")
        sets, held, probes, source = _pair_sets(args, ckpt, data, config)
        train = sets.train
        if args.batch > len(train):
            raise UsageError(f"--batch {args.batch} is more than the {len(train)} training pairs")
        pairs_by_set = {"trained": train, **({"held_out": held} if held is not None else {})}
        epoch = math.ceil(len(train) / args.batch)
        steps_of = {"step_1": 1, "steps_K": args.steps, "epoch": epoch}
        horizons = sorted(set(steps_of.values()))
        timer = _Timer()
        implementation = "auto" if is_pretrained(ckpt) else "materialize"

        progress(f"{len(train)} training pairs, {len(held) if held is not None else 0} held "
                 f"out; targets after {', '.join(map(str, horizons))} step(s)")
        with timer("start"):
            start = run_start(ckpt.graphdef, ckpt.params, config, train)
        objective = config.make_objective()
        static = {}
        for name, pairs in pairs_by_set.items():
            with timer("gradient_condition"):  # d_w, d_l at the start (policy = reference)
                logp_w, logp_l = sequence_logps(ckpt.graphdef, ckpt.params, pairs)
                d_w, d_l = objective_weights(objective, pairs, logp_w, logp_l, logp_w, logp_l)
            static[name] = _static_predictors(ckpt, pairs, d_w, d_l, implementation, timer)
            progress(f"gradient condition, CHES, edit distance of the {name} pairs done")
        entk, entk_probes = _entk_predictions(start, config, train, pairs_by_set, probes,
                                              sets.labels, horizons, timer)
        lr_source = "given" if args.lr is not None else "auto"
        lr = args.lr
        if lr is None:
            first = np.abs(np.stack(entk["entk_realized", 1]["trained"])).max()
            scale = float(horizons[-1] * first)
            if not scale > 0:
                raise UsageError("every predicted change is 0: no step size reaches a target "
                                 "change; give --lr")
            lr = TARGET_CHANGE / scale
        progress(f"learning rate {lr:.3g} ({lr_source}); training")
        real, real_probes = _real_changes(ckpt, dataclasses.replace(config, learning_rate=lr),
                                          source, pairs_by_set, probes, horizons, timer)

        values, scores, curves, base_rate = {}, {}, {}, {}
        for set_name in pairs_by_set:
            values[set_name] = {"delta_logp_w": {t: real[steps_of[t]][set_name]
                                                 for t in TARGETS},
                                "gradient_condition_delta_l":
                                    lr * static[set_name]["gradient_condition_l"]}
            scores[set_name], curves[set_name], base_rate[set_name] = {}, {}, {}
            for target in TARGETS:
                steps = steps_of[target]
                truth = real[steps][set_name]
                base_rate[set_name][target] = float(np.mean(truth < 0))
                scores[set_name][target], curves[set_name][target] = {}, {}
                for name in PREDICTORS:
                    if name in ENTK_PREDICTORS:
                        value = lr * entk[name, steps][set_name][0]
                    else:
                        value = static[set_name][name] * (lr if name == "gradient_condition"
                                                          else 1.0)
                    values[set_name].setdefault(name, {})[target] = value
                    scores[set_name][target][name] = score(name, value, truth,
                                                           resamples=args.bootstrap,
                                                           seed=args.seed)
                    curves[set_name][target][name] = roc_curve(risk_of(name, value), truth < 0)
        undrawn = len(train) - len(np.unique(draw_batches(
            len(train), dataclasses.replace(config, steps=epoch), sets.labels)))
        epoch_note = (f"epoch: {epoch} steps, as many draws as one pass over the {len(train)} "
                      "training pairs; the batches are drawn independently at each step, so "
                      f"{undrawn} of them were never drawn")
        fields = checkpoint_fields(args, ckpt)
        costs = dict(timer.costs)
        report = {
            "command": "predict",
            "checkpoint": fields["checkpoint"] or "default model (cached_sft defaults)",
            "checkpoint_training": fields["checkpoint_training"],
            "data": None if data is None else to_dict(data.config),
            "config": to_dict(dataclasses.replace(config, learning_rate=lr)),
            "optimizer": args.optimizer, "learning_rate": lr, "learning_rate_source": lr_source,
            "batch": args.batch, "train_pairs": len(train),
            "set_sizes": {k: len(v) for k, v in pairs_by_set.items()},
            "targets": {t: {"steps": steps_of[t], "event": "Δlog π_w < 0"} for t in TARGETS},
            "predictors": {name: {"description": text, "signed": signed}
                           for name, (text, signed) in PREDICTORS.items()},
            "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "level": 0.95},
            "top_fraction": TOP_FRACTION,
            "base_rate": base_rate, "scores": scores,
            # the start's log-probs and weights serve both eNTK predictors
            "cost_s": {**{name: costs.get(name, 0.0) for name in PREDICTORS},
                       "cosine": costs["gradient_condition"], "ln_ches": costs["ches"],
                       "entk_full": costs["entk_full"] + costs["start"],
                       "entk_realized": costs["entk_realized"] + costs["start"]},
            "training_s": costs["training"],
            "pairs": values,
            "probes": probe_scores(entk_probes, real_probes, steps_of, lr,
                                   resamples=args.bootstrap, seed=args.seed),
            "notes": [*NOTES, epoch_note, *([ADAM_NOTE] if args.optimizer == "adam" else []),
                      *([FILTER_NOTE] if args.filter_seeds else [])],
        }
        if args.filter_seeds:
            report["filtering"] = _filtering(args, ckpt, config, source, pairs_by_set, probes,
                                             values, scores, lr, epoch, timer)
            report["filtering_s"] = timer.costs["filtering"]
        out = Path(args.out)
        atomic_write_json(out / "predict.json", report)
        table = format_markdown(report)
        atomic_write_text(out / "predict.md", table)
        plot_roc(report, curves, out)
        print(table, end="")
        print(f"wrote {out / 'predict.json'}, {out / 'predict.md'} and {out / 'roc.png'}")
    return 0
