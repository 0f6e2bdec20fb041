"""Figure 7: the first-order check of the gradient condition.

For each eval pair alone, one real gradient-descent step on its DPO loss (step size η) against the
first-order prediction ``Δlog π_w ≈ η (d_w‖g_w‖² − d_l⟨g_w,g_l⟩)``, ``Δlog π_l ≈ η (d_w⟨g_w,g_l⟩ −
d_l‖g_l‖²)``: predicted against actual at the largest η (points on the identity line when the
formula holds), and the mean |actual − predicted| against η on log–log axes, whose fitted slope is
2 for an O(η²) error. The numbers are ``entangle dynamics``'s (``dynamics_report.one_step_report``,
float64); η starts where the median pair's larger predicted change is 0.05 nats and halves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from entangle_jax.data.sentiment import SHAPES
from entangle_jax.dynamics_report import one_step_report
from entangle_jax.figures import sources, style
from entangle_jax.objectives import get_objective
from entangle_jax.verify.regimes import VerifySettings

MARKERS = {"single": "o", "short": "s", "long": "^"}


@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    regime: str = sources.MAIN_REGIME
    seed: int = 0
    objective: str = "dpo"
    halvings: int = 5
    target_change: float = 0.05


def config(quick: bool) -> Config:
    return Config(sources.settings(quick))


def compute(cfg: Config, ctx, run_dir) -> dict:
    ckpt = sources.checkpoint(cfg.settings, cfg.regime, cfg.seed, ctx)
    return one_step_report(ckpt, [get_objective(cfg.objective)], list(SHAPES.values()),
                           n_pairs=cfg.settings.n_pairs, halvings=cfg.halvings,
                           target_change=cfg.target_change, float64=True)


def plot(results: dict, cfg: Config):
    fig, axes = style.figure(1, 2, height=3.6)
    ax_pts, ax_err = axes[0]
    rows = []
    lim = 0.0
    for result in results["results"]:
        shape, pairs, one = result["shape"], result["pairs"], result["one_step"]
        for who, color, label in (("w", style.CHOSEN, "chosen Δlog π_w"),
                                  ("l", style.REJECTED, "rejected Δlog π_l")):
            predicted = np.asarray(pairs[f"predicted_{who}"])
            actual = np.asarray(pairs[f"actual_{who}"])
            ax_pts.scatter(predicted, actual, s=9, marker=MARKERS[shape], facecolor="none",
                           edgecolor=color, linewidth=0.8, label=f"{label}, {shape}")
            lim = max(lim, np.abs(predicted).max(), np.abs(actual).max())
            rows += [{"kind": "step", "shape": shape,
                      "response": "chosen" if who == "w" else "rejected", "pair": k,
                      "lr": one["lr"], "predicted": float(p), "actual": float(a)}
                     for k, (p, a) in enumerate(zip(predicted, actual))]
        lrs, errors = np.asarray(one["lrs"]), np.asarray(one["mean_error"])
        ax_err.loglog(lrs, errors, marker=MARKERS[shape], color="0.2",
                      linestyle=style.SHAPE_LINESTYLE[shape],
                      label=f"{shape} (L={result['suffix_length']}): "
                            f"slope {one['error_order']:.2f}")
        rows += [{"kind": "error", "shape": shape, "lr": float(lr), "mean_error": float(e),
                  "fitted_slope": one["error_order"]} for lr, e in zip(lrs, errors)]
    lim *= 1.1
    ax_pts.plot([-lim, lim], [-lim, lim], color="0.4", linewidth=0.8, zorder=0,
                label="identity (actual = predicted)")
    ax_pts.set_xlim(-lim, lim)
    ax_pts.set_ylim(-lim, lim)
    ax_pts.set_aspect("equal")
    ax_pts.axhline(0, color="0.7", linewidth=0.6, zorder=0)
    ax_pts.axvline(0, color="0.7", linewidth=0.6, zorder=0)
    ax_pts.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, handletextpad=0.3)
    ax_pts.set_xlabel("predicted change, first order [nats]")
    ax_pts.set_ylabel("actual change after one step [nats]")
    ax_pts.xaxis.set_major_locator(MaxNLocator(5))
    style.panel_title(ax_pts, "a", "predicted vs actual change, largest η")
    lrs_all = np.asarray([r["lr"] for r in rows if r["kind"] == "error"])
    err_all = np.asarray([r["mean_error"] for r in rows if r["kind"] == "error"])
    anchor = np.exp(np.mean(np.log(err_all)) - 2 * np.mean(np.log(lrs_all)))
    grid = np.geomspace(lrs_all.min(), lrs_all.max(), 20)
    ax_err.loglog(grid, anchor * grid ** 2, color="0.6", linewidth=0.8, linestyle="-.",
                  label="reference slope 2 (O(η²))")
    ax_err.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    # η spans one or two decades: label 1, 2 and 5 times each power of ten
    ax_err.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_err.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-")))
    ax_err.xaxis.set_minor_formatter(NullFormatter())
    ax_err.set_xlabel("step size η  (θ ← θ + η u)")
    ax_err.set_ylabel("mean |actual − predicted| [nats]")
    style.panel_title(ax_err, "b", "first-order error against η")
    style.suptitle(fig, f"First-order check: one {cfg.objective.upper()} gradient step per pair "
                        "(each pair alone, its own loss), "
                 f"{sources.regime_label(cfg.regime)} model (seed {cfg.seed}), "
                 f"{results['pairs']} eval pairs per shape, float64")
    return fig, rows

