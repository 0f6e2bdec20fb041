"""Figure 5: the loss zoo — chosen and rejected log-probabilities under every objective, trained
from the same model on the same long-suffix pairs with the same seed and optimizer, each panel
annotated with the objective's d_w/d_l.

A step moves log π_w by ``η (d_w‖g_w‖² − d_l⟨g_w,g_l⟩)`` and log π_l by ``η (d_w⟨g_w,g_l⟩ −
d_l‖g_l‖²)`` (docs/design.md §1.1–1.2): an objective with d_w/d_l > 1 (an explicit term on log π_w, as in
CPO, SLiC-HF, DPOP, RRHF, ORPO, SPPO) lets log π_w rise where DPO's d_w = d_l lets it fall — the
paper's explanation of why the algorithms differ. The ratio is the mean d_w over the mean d_l of a
step's batch (log metrics ``weights/d_w``, ``weights/d_l``), at the first and the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.ticker import MaxNLocator

from entangle_jax.data.sentiment import SHAPES
from entangle_jax.figures import sources, style
from entangle_jax.objectives import OBJECTIVES
from entangle_jax.train.preference import PreferenceConfig
from entangle_jax.verify.regimes import VerifySettings


#: How each objective is written in its paper.
DISPLAY = {"dpo": "DPO", "ipo": "IPO", "simpo": "SimPO", "rdpo": "R-DPO", "slic": "SLiC-HF",
           "cpo": "CPO", "dpop": "DPOP", "rrhf": "RRHF", "orpo": "ORPO", "sppo": "SPPO",
           "hinge": "hinge"}


@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    runs: tuple[PreferenceConfig, ...]  # one per objective, otherwise identical
    regime: str = sources.MAIN_REGIME
    seed: int = 0


def config(quick: bool) -> Config:
    runs = tuple(sources.preference_config(quick, objective=name, suffix_length=SHAPES["long"])
                 for name in OBJECTIVES)
    return Config(sources.settings(quick), runs)


def compute(cfg: Config, ctx, run_dir) -> dict:
    ckpt = sources.checkpoint(cfg.settings, cfg.regime, cfg.seed, ctx)
    out = {}
    for run in cfg.runs:
        result = sources.cached_preference(ckpt, run, ctx)
        out[run.objective] = {"log": str(result.log_path),
                              "describe": run.make_objective().describe(),
                              "records": sources.train_records(result.records)}
    return {"runs": out}


def curves(results: dict, cfg: Config) -> list[dict]:
    """One row per (objective, step): the change of each log-prob since the SFT model
    (``rewards/*`` / β), and the batch's mean d_w, d_l."""
    rows = []
    for run in cfg.runs:
        beta = run.make_objective().beta
        for r in results["runs"][run.objective]["records"]:
            rows.append({"objective": run.objective, "step": r["step"],
                         "change_chosen": r["rewards/chosen"] / beta,
                         "change_rejected": r["rewards/rejected"] / beta,
                         "d_w": r["weights/d_w"], "d_l": r["weights/d_l"]})
    return rows


def plot(results: dict, cfg: Config):
    rows = curves(results, cfg)
    ncols = 5
    nrows = -(-len(cfg.runs) // ncols)
    fig, axes = style.figure(nrows, ncols, height=2.1, sharex=True, sharey=True)
    for k, (ax, run) in enumerate(zip(axes.flat, cfg.runs)):
        mine = [r for r in rows if r["objective"] == run.objective]
        steps = [r["step"] for r in mine]
        ax.plot(steps, [r["change_chosen"] for r in mine], color=style.CHOSEN, linewidth=1.0,
                label="chosen: Δlog π_w")
        ax.plot(steps, [r["change_rejected"] for r in mine], color=style.REJECTED, linewidth=1.0,
                label="rejected: Δlog π_l")
        ax.axhline(0, color="0.6", linewidth=0.6)
        first, last = mine[0], mine[-1]
        name = DISPLAY.get(run.objective, run.objective)
        ax.set_title(f"({'abcdefghijklmnop'[k]}) {name}\nd_w/d_l: "
                     f"{first['d_w'] / first['d_l']:.3g} → {last['d_w'] / last['d_l']:.3g}",
                     loc="left", fontsize=7.5)
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        if k % ncols == 0:
            ax.set_ylabel("change since SFT [nats]")
        if k >= len(cfg.runs) - ncols:
            ax.set_xlabel("training step")
    for ax in axes.flat[len(cfg.runs):]:
        ax.set_visible(False)
    style.legend_below(fig, ncol=2)
    run = cfg.runs[0]
    style.suptitle(fig, f"The loss zoo on long-suffix pairs (L = {run.suffix_length}), "
                        f"{sources.shared_training(cfg)}, paper-default hyperparameters; "
                        "training-batch means")
    return fig, rows

