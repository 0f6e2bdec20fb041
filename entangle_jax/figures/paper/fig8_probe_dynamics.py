"""Figure 8 (real model only): the probe responses' log-probabilities during DPO on real pairs,
with the probe pairs' gradient geometry.

From the probe records of the run of figure 1's real twin (``make dpo-real``): at every probe step,
the mean change since step 0 of log π of the held-out pairs' chosen and rejected responses and of
each of Ren & Sutherland's probe responses to the same prompts (rephrasings of the chosen and of
the rejected response, irrelevant and non-language responses), then ⟨g_w, g_l⟩ and cos(g_w, g_l)
of the probe pairs, and the fractions of the gradient condition's cases. Log-probs in nats.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from entangle_jax.data.records import PROBE_KINDS
from entangle_jax.figures import sources, style
from entangle_jax.figures.paper import fig1_training_dynamics as fig1

#: One colour per probe kind; the pairs' own responses keep figure 1's colours.
KIND_COLORS = {kind: style.series_color(k + 1)
               for k, kind in enumerate(dict.fromkeys(PROBE_KINDS.values()))}
CASES = {1: "case 1: w ↑, l ↓", 2: "case 2: both ↓", 3: "case 3: both ↑", 4: "case 4: w ↓, l ↑"}


def real_config(quick: bool) -> fig1.Config:
    """Figure 1's real twin: one cached DPO run serves both figures."""
    return fig1.real_config(quick)


def compute(cfg: fig1.Config, ctx, run_dir) -> dict:
    return fig1.compute(cfg, ctx, run_dir)


def series(results: dict, cfg: fig1.Config) -> list[dict]:
    """One row per (probe step, series): the mean log-prob, its change since step 0, and the
    geometry and case fractions of the probe pairs."""
    (name, _), = cfg.runs
    records = results["runs"][name]["records"]
    header = next(r for r in records if r.get("kind") == "config")
    probes = sources.probe_records(records)
    keys = {"chosen (probe pairs)": ("probe/logps/chosen", "chosen"),
            "rejected (probe pairs)": ("probe/logps/rejected", "rejected")}
    keys.update({field: (f"probe/responses/{field}", info["kind"])
                 for field, info in sorted(header["probe_responses"].items())})
    rows = []
    for label, (key, kind) in keys.items():
        for r in probes:
            rows.append({"series": label, "kind": kind, "step": r["step"], "logp": r[key],
                         "change": r[key] - probes[0][key]})
    for r in probes:
        rows.append({"series": "geometry", "kind": "", "step": r["step"],
                     "grad_inner": r["probe/grad_inner"], "grad_cosine": r["probe/grad_cosine"],
                     **{f"case_{k}": r[f"probe/case_{k}"] for k in CASES}})
    return rows


def plot(results: dict, cfg: fig1.Config):
    rows = series(results, cfg)
    fig, axes = style.figure(1, 3, height=2.6)
    left, middle, right = axes = axes[0]
    seen = set()
    for label in dict.fromkeys(r["series"] for r in rows if r["series"] != "geometry"):
        mine = [r for r in rows if r["series"] == label]
        kind = mine[0]["kind"]
        own = kind in ("chosen", "rejected")
        color = {"chosen": style.CHOSEN, "rejected": style.REJECTED}.get(kind, KIND_COLORS.get(kind))
        left.plot([r["step"] for r in mine], [r["change"] for r in mine], color=color,
                  linewidth=2.0 if own else 0.9, marker="o" if own else None, markersize=3,
                  label=label if own else (kind if kind not in seen else None))
        seen.add(kind)
    left.axhline(0, color="0.6", linewidth=0.6)
    left.set_ylabel("mean change of log π since step 0 [nats]")
    style.panel_title(left, "a", "held-out prompts' responses\n(thin: one line per probe field)",
                      fontsize=7)
    geometry = [r for r in rows if r["series"] == "geometry"]
    steps = [r["step"] for r in geometry]
    middle.plot(steps, [r["grad_inner"] for r in geometry], color=style.MARGIN, marker="o",
                markersize=3, label="⟨g_w, g_l⟩ (mean)")
    twin = middle.twinx()
    twin.plot(steps, [r["grad_cosine"] for r in geometry], color=style.series_color(2),
              linestyle="--", label="cos(g_w, g_l) (mean, right axis)")
    middle.set_ylabel("⟨g_w, g_l⟩ [nat²]")
    twin.set_ylabel("cos(g_w, g_l)")
    style.panel_title(middle, "b", "probe pairs' gradients", fontsize=7)
    bottom = np.zeros(len(geometry))
    for k, label in CASES.items():
        values = np.asarray([r[f"case_{k}"] for r in geometry])
        right.bar(steps, values, bottom=bottom, width=0.8 * (np.diff(steps).min() if len(steps) > 1
                                                             else 1.0),
                  color=style.CASE_FILL.get(k, "0.4"), edgecolor="0.3", linewidth=0.4,
                  label=label)
        bottom += values
    right.set_ylim(0, 1)
    right.set_ylabel("fraction of probe pairs")
    style.panel_title(right, "c", "first-order case of each\npair's own DPO update", fontsize=7)
    for ax in axes:
        ax.set_xlabel("DPO step")
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    handles, labels = [], []
    for ax in (left, middle, twin, right):
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    style.legend_below(fig, handles, labels, ncol=4)
    (name, run), = cfg.runs
    style.suptitle(fig, f"Probe responses during DPO from SmolLM2-135M-Instruct on {name} pairs "
                        f"({run.train_params} trained; {run.optimizer.capitalize()}, lr "
                        f"{run.learning_rate:g}, batch "
                        f"{run.batch_size}, β = {run.make_objective().beta:g}; "
                        f"{run.probe_size} held-out prompts)")
    return fig, rows
