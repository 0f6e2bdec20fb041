"""Figure 4: the gradient-condition plane, and how the pairs move on it during DPO training.

For one pair and one gradient step on its DPO loss (docs/design.md §1.2), log π_w falls iff
``⟨g_w, g_l⟩ > (d_w/d_l)‖g_w‖²`` and log π_l rises iff ``⟨g_w, g_l⟩ > (d_l/d_w)‖g_l‖²``. Each eval
pair is a point at the two normalized ratios

    x = ⟨g_w, g_l⟩ / ((d_w/d_l)‖g_w‖²),      y = ⟨g_w, g_l⟩ / ((d_l/d_w)‖g_l‖²),

so that case 1 (w↑ l↓) is x < 1 and y < 1, case 2 (both ↓) is x > 1, case 3 (both ↑) is y > 1, and
x y = cos²(g_w, g_l) ≤ 1 rules out the region beyond the hyperbola x y = 1 (case 4). The pairs are
drawn at the SFT model and at later steps of the figure-1 DPO runs (a run of k steps is the first k
steps of the longer run: same seed, same batches), with d_w, d_l of DPO against the SFT reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from matplotlib.patches import Polygon, Rectangle

from entangle_jax.data.sentiment import SHAPES
from entangle_jax.condition import gradient_condition
from entangle_jax.dynamics import objective_weights
from entangle_jax.figures import sources, style
from entangle_jax.gradients import pair_geometry
from entangle_jax.train.preference import PreferenceConfig, preference_pairs
from entangle_jax.verify.regimes import VerifySettings



@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    runs: tuple[tuple[str, PreferenceConfig], ...]  # figure 1's DPO runs, one per shape
    snapshots: tuple[int, ...]  # training steps at which the pairs are drawn (0 = SFT model)
    regime: str = sources.MAIN_REGIME
    seed: int = 0


def config(quick: bool) -> Config:
    runs = tuple((shape, sources.preference_config(quick, objective="dpo", suffix_length=length))
                 for shape, length in SHAPES.items())
    steps = runs[0][1].steps
    return Config(sources.settings(quick), runs, snapshots=(0, steps // 2, steps))


def compute(cfg: Config, ctx, run_dir) -> dict:
    ckpt = sources.checkpoint(cfg.settings, cfg.regime, cfg.seed, ctx)
    points = []
    for shape, run in cfg.runs:
        probe = preference_pairs(ckpt, run).probe
        pairs = probe[np.arange(min(cfg.settings.n_pairs, len(probe)))]
        objective = run.make_objective()
        ref = pair_geometry(ckpt.graphdef, ckpt.params, pairs)
        for step in cfg.snapshots:
            params = (ckpt.params if step == 0 else
                      sources.cached_preference(ckpt, dataclasses.replace(run, steps=step),
                                                ctx).params)
            geo = ref if step == 0 else pair_geometry(ckpt.graphdef, params, pairs)
            d_w, d_l = objective_weights(objective, pairs, geo.logp_w, geo.logp_l, ref.logp_w,
                                         ref.logp_l)
            cond = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
            for k in range(len(pairs)):
                points.append({"shape": shape, "step": step, "pair": k,
                               "inner": float(geo.inner[k]), "sq_norm_w": float(geo.sq_norm_w[k]),
                               "sq_norm_l": float(geo.sq_norm_l[k]), "d_w": float(d_w[k]),
                               "d_l": float(d_l[k]), "x": float(geo.inner[k] / cond.threshold_w[k]),
                               "y": float(geo.inner[k] / cond.threshold_l[k]),
                               "case": int(cond.case[k])})
    return {"points": points}


def axis_limit(rows: list[dict]) -> float:
    """The axes span ±limit (a whole decade, at least 10) on a symmetric log scale."""
    largest = max(max(abs(r["x"]), abs(r["y"])) for r in rows)
    return 10.0 ** max(1, int(np.ceil(np.log10(1.5 * largest))))


def _shade_cases(ax, limit: float) -> None:
    big = limit * 10
    ax.add_patch(Rectangle((-big, -big), big + 1, big + 1, color=style.CASE_FILL[1], zorder=0))
    ax.add_patch(Rectangle((1, -big), big, big + 1, color=style.CASE_FILL[2], zorder=0))
    ax.add_patch(Rectangle((-big, 1), big + 1, big, color=style.CASE_FILL[3], zorder=0))
    x = np.geomspace(1 / big, big, 400)
    beyond = Polygon(np.column_stack([np.r_[x, big, 1 / big], np.r_[1 / x, big, big]]),
                     facecolor="white", edgecolor="0.5", hatch="////", linewidth=0.5, zorder=0.5)
    ax.add_patch(beyond)
    a = np.sqrt(limit)  # halfway along the log part of each axis
    for text, xy in (("case 1\nw↑ l↓", (-a, -a)), ("case 2\nboth ↓", (a, -a)),
                     ("case 3\nboth ↑", (-a, a)), ("unreachable\nxy = cos² ≤ 1", (a, a))):
        ax.text(*xy, text, ha="center", va="center", fontsize=6.5, color="0.25", zorder=1,
                bbox={"facecolor": "white", "alpha": 0.6, "linewidth": 0, "pad": 1})


def plot(results: dict, cfg: Config):
    fig, axes = style.figure(1, len(cfg.runs), height=3.0, sharey=True)
    # the start as open circles drawn on top (the pairs barely move at first), the end in black,
    # steps in between in purple
    last = len(cfg.snapshots) - 1
    looks = {step: {"facecolor": "none", "edgecolor": style.SERIES[1], "linewidth": 0.9,
                    "zorder": 4} if i == 0 else
             {"color": "#000000" if i == last else style.SERIES[6], "edgecolor": "white",
              "linewidth": 0.3, "zorder": 3}
             for i, step in enumerate(cfg.snapshots)}
    rows = results["points"]
    limit = axis_limit(rows)
    ticks = [-limit, -np.sqrt(limit), -1, 0, 1, np.sqrt(limit), limit] if limit > 10 else \
        [-limit, -1, 0, 1, limit]
    for col, (shape, run) in enumerate(cfg.runs):
        ax = axes[0, col]
        _shade_cases(ax, limit)
        mine = [r for r in rows if r["shape"] == shape]
        for k in sorted({r["pair"] for r in mine}):
            path = sorted((r for r in mine if r["pair"] == k), key=lambda r: r["step"])
            ax.plot([r["x"] for r in path], [r["y"] for r in path], color="0.55", linewidth=0.4,
                    zorder=2)
        for step in cfg.snapshots:
            at = [r for r in mine if r["step"] == step]
            cases = np.array([r["case"] for r in at])
            fractions = "/".join(f"{100 * np.mean(cases == c):.0f}" for c in (1, 2, 3))
            ax.scatter([r["x"] for r in at], [r["y"] for r in at], s=12, **looks[step],
                       label=f"step {step}: cases 1/2/3 = {fractions}%")
        for axis in ("x", "y"):
            getattr(ax, f"set_{axis}scale")("symlog", linthresh=1.0)
            getattr(ax, f"set_{axis}lim")(-limit, limit)
            getattr(ax, f"set_{axis}ticks")(ticks, [f"{t:g}" for t in ticks])
        ax.grid(False)
        ax.set_xlabel("x = ⟨g_w,g_l⟩ / ((d_w/d_l)‖g_w‖²)")
        if col == 0:
            ax.set_ylabel("y = ⟨g_w,g_l⟩ / ((d_l/d_w)‖g_l‖²)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=6.5)
        style.panel_title(ax, "abc"[col], f"{shape}, L = {run.suffix_length}")
    run = cfg.runs[0][1]
    n_pairs = len({r["pair"] for r in rows})
    style.suptitle(fig, f"Gradient-condition plane: {n_pairs} eval pairs of the "
                        f"{sources.regime_label(cfg.regime)} model (seed {cfg.seed}) and where "
                        f"DPO training ({run.optimizer.capitalize()}, lr {run.learning_rate:g}) "
                        f"moves them (grey paths); symmetric log axes, linear within ±1")
    return fig, rows

