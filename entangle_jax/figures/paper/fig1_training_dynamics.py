"""Figure 1: chosen and rejected log-probabilities, and their margin, over DPO training, for single,
short and long responses, each run starting from the same SFT model.

The lines are the TRL metrics of the training log, means over each step's batch of training pairs:
the change of the sequence log-prob since the SFT model, ``rewards/chosen`` / β = log π_w −
log π_ref,w (likewise rejected), and the margin's change ``rewards/margins`` / β. The markers are
the same on the fixed probe set of eval pairs (``probe/logps/*``, change since step 0), measured
every few steps. Log-probs are in nats.

The real-model twin (``entangle figures --real``): DPO from SmolLM2-135M-Instruct as shipped on
real pairs (HH-RLHF helpful-base, the learning-dynamics train file), probed on held-out pairs of
its test file: the run of ``make dpo-real``, shared with figure 8.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.ticker import MaxNLocator

from entangle_jax.data.sentiment import SHAPES
from entangle_jax.figures import sources, style
from entangle_jax.train.preference import PreferenceConfig
from entangle_jax.verify.regimes import VerifySettings


@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    runs: tuple[tuple[str, PreferenceConfig], ...]  # (shape or data name, run)
    regime: str = sources.MAIN_REGIME
    seed: int = 0
    data: sources.RealData | None = None  # real pairs instead of the sentiment task


def config(quick: bool) -> Config:
    runs = tuple((shape, sources.preference_config(quick, objective="dpo", suffix_length=length))
                 for shape, length in SHAPES.items())
    return Config(sources.settings(quick), runs)


def real_config(quick: bool) -> Config:
    return Config(sources.real_figure_settings(quick, seeds=(0,)),
                  (("helpful-base", sources.real_dpo_config(quick)),),
                  regime="smollm2", data=sources.real_dpo_data(quick))


def compute(cfg: Config, ctx, run_dir) -> dict:
    ckpt = sources.checkpoint(cfg.settings, cfg.regime, cfg.seed, ctx)
    data = () if cfg.data is None else sources.real_data(cfg.data)
    out = {}
    for shape, run in cfg.runs:
        result = sources.cached_preference(ckpt, run, ctx, *data)
        out[shape] = {"log": str(result.log_path), "records": result.records}
    return {"runs": out}


def curves(results: dict, cfg: Config) -> list[dict]:
    """The plotted numbers, one row per (shape, step) of the log: the log-probs, their change since
    the SFT model (``rewards/*`` / β for a batch; the change since step 0 on the fixed probe set)
    and the margin's change."""
    rows = []
    for shape, run in cfg.runs:
        beta = run.make_objective().beta
        records = results["runs"][shape]["records"]
        probes = sources.probe_records(records)
        for r in sources.train_records(records):
            rows.append({"shape": shape, "source": "train batch", "step": r["step"],
                         "logp_chosen": r["logps/chosen"], "logp_rejected": r["logps/rejected"],
                         "change_chosen": r["rewards/chosen"] / beta,
                         "change_rejected": r["rewards/rejected"] / beta,
                         "margin_change": r["rewards/margins"] / beta})
        for r in probes:
            rows.append({"shape": shape, "source": "probe set", "step": r["step"],
                         "logp_chosen": r["probe/logps/chosen"],
                         "logp_rejected": r["probe/logps/rejected"],
                         "change_chosen": r["probe/logps/chosen"] - probes[0]["probe/logps/chosen"],
                         "change_rejected": (r["probe/logps/rejected"]
                                             - probes[0]["probe/logps/rejected"]),
                         "margin_change": (r["probe/logps/chosen"] - r["probe/logps/rejected"]
                                           - probes[0]["probe/logps/chosen"]
                                           + probes[0]["probe/logps/rejected"])})
    return rows


def plot(results: dict, cfg: Config):
    rows = curves(results, cfg)
    fig, axes = style.figure(2, len(cfg.runs), height=2.2, sharex=True, sharey="row",
                             gridspec_kw={"height_ratios": [1.4, 1.0]})
    for col, (shape, run) in enumerate(cfg.runs):
        top, bottom = axes[0, col], axes[1, col]
        for source, kwargs in (("train batch", {"linewidth": 1.0}),
                               ("probe set", {"linestyle": "none", "marker": "o", "zorder": 3,
                                              "markerfacecolor": "white"})):
            mine = [r for r in rows if r["shape"] == shape and r["source"] == source]
            steps = [r["step"] for r in mine]
            top.plot(steps, [r["change_chosen"] for r in mine], color=style.CHOSEN,
                     label=f"chosen: Δlog π_w ({source})", **kwargs)
            top.plot(steps, [r["change_rejected"] for r in mine], color=style.REJECTED,
                     label=f"rejected: Δlog π_l ({source})", **kwargs)
            bottom.plot(steps, [r["margin_change"] for r in mine], color=style.MARGIN,
                        label=f"margin: Δ(log π_w − log π_l) ({source})", **kwargs)
        for ax in (top, bottom):
            ax.axhline(0, color="0.6", linewidth=0.6)
        start = next(r for r in rows if r["shape"] == shape and r["source"] == "probe set")
        what = f"{shape}, L = {run.suffix_length}" if cfg.data is None else \
            f"{shape} pairs ({run.train_params} trained)"
        style.panel_title(top, "abc"[col], f"{what}\nfrom log π_w "
                          f"{start['logp_chosen']:.2f}, log π_l {start['logp_rejected']:.2f}",
                          fontsize=7)
        bottom.set_xlabel("DPO step")
        bottom.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        if col == 0:
            top.set_ylabel("change of log-prob since\nthe starting model [nats]")
            bottom.set_ylabel("change of margin [nats]")
    handles, labels = [], []
    for ax in axes[:, 0]:
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    style.legend_below(fig, handles, labels, ncol=3)
    run = cfg.runs[0][1]
    start = (f"the same {sources.regime_label(cfg.regime)} model (seed {cfg.seed})"
             if cfg.data is None else "SmolLM2-135M-Instruct as shipped")
    probes = "eval pairs" if cfg.data is None else "held-out pairs"
    style.suptitle(fig, f"DPO training dynamics from {start}: {run.optimizer.capitalize()}, "
                        f"learning rate {run.learning_rate:g}, batch {run.batch_size}, β = "
                        f"{run.make_objective().beta:g}; probe set: {run.probe_size} {probes}")
    return fig, rows

