"""Figure 6: the paper's mitigations against plain DPO on long-suffix pairs — the
pairwise-normalized update ``d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖`` and the sparsity-regularized token
mask — and the mask the latter learns.

All three runs start from the same model and see the same batches (same seed and optimizer). The
curves are the change of each log-prob since the SFT model on the training batches (log metrics
``rewards/*`` / β) with the fixed probe set's means as markers. The mask panel shows the weight of
each response position during training (the probe records' ``mask/weights``) and, from
``mitigations.mask_report`` on the probe pairs after training, what the mask does to
⟨g_w, g_l⟩ = Σ_ij M[i, j]: masked, it is ``mᵀ M m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator

from entangle_jax.data.sentiment import SHAPES, response_words
from entangle_jax.figures import sources, style
from entangle_jax.mitigations import mask_report
from entangle_jax.train.preference import PreferenceConfig, preference_pairs
from entangle_jax.verify.regimes import VerifySettings

LABELS = {"none": "DPO", "normalized": "pairwise-normalized", "token_mask": "sparse token mask"}


@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    runs: tuple[PreferenceConfig, ...]  # one per mitigation, otherwise identical
    regime: str = sources.MAIN_REGIME
    seed: int = 0


def config(quick: bool) -> Config:
    runs = tuple(sources.preference_config(quick, objective="dpo", mitigation=mitigation,
                                           suffix_length=SHAPES["long"])
                 for mitigation in LABELS)
    return Config(sources.settings(quick), runs)


def compute(cfg: Config, ctx, run_dir) -> dict:
    ckpt = sources.checkpoint(cfg.settings, cfg.regime, cfg.seed, ctx)
    out = {}
    for run in cfg.runs:
        result = sources.cached_preference(ckpt, run, ctx)
        out[run.mitigation] = {"log": str(result.log_path), "records": result.records}
        if run.mitigation == "token_mask":
            mask = sources.probe_records(result.records)[-1]["mask/weights"]
            probe = preference_pairs(ckpt, run).probe
            pairs = probe[np.arange(min(run.probe_size, len(probe)))]
            out["mask_report"] = mask_report(ckpt.graphdef, result.params, mask, pairs)
            out["mask_tokens"] = response_words(True, run.suffix_length)
    return {"runs": out}


def curves(results: dict, cfg: Config) -> list[dict]:
    rows = []
    for run in cfg.runs:
        beta = run.make_objective().beta
        records = results["runs"][run.mitigation]["records"]
        probes = sources.probe_records(records)
        for r in sources.train_records(records):
            rows.append({"method": run.mitigation, "source": "train batch", "step": r["step"],
                         "change_chosen": r["rewards/chosen"] / beta,
                         "change_rejected": r["rewards/rejected"] / beta})
        for r in probes:
            rows.append({"method": run.mitigation, "source": "probe set", "step": r["step"],
                         "change_chosen": r["probe/logps/chosen"] - probes[0]["probe/logps/chosen"],
                         "change_rejected": (r["probe/logps/rejected"]
                                             - probes[0]["probe/logps/rejected"])})
    return rows


def plot(results: dict, cfg: Config):
    rows = curves(results, cfg)
    fig, axes = style.figure(1, len(cfg.runs) + 1, height=3.2)
    shared = axes[0, 0]
    for k, run in enumerate(cfg.runs):
        ax = axes[0, k]
        if k:
            ax.sharey(shared)
        for source, kwargs in (("train batch", {"linewidth": 1.0}),
                               ("probe set", {"linestyle": "none", "marker": "o", "zorder": 3,
                                              "markerfacecolor": "white"})):
            mine = [r for r in rows if r["method"] == run.mitigation and r["source"] == source]
            steps = [r["step"] for r in mine]
            ax.plot(steps, [r["change_chosen"] for r in mine], color=style.CHOSEN,
                    label=f"chosen: Δlog π_w ({source})", **kwargs)
            ax.plot(steps, [r["change_rejected"] for r in mine], color=style.REJECTED,
                    label=f"rejected: Δlog π_l ({source})", **kwargs)
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        ax.set_xlabel("training step")
        style.panel_title(ax, "abcd"[k], LABELS[run.mitigation])
        if k == 0:
            ax.set_ylabel("change of log-prob since SFT [nats]")
    ax = axes[0, -1]
    report, words = results["runs"]["mask_report"], results["runs"]["mask_tokens"]
    mask_run = next(run for run in cfg.runs if run.mitigation == "token_mask")
    probes = sources.probe_records(results["runs"]["token_mask"]["records"])
    steps = [r["step"] for r in probes]
    for i, word in enumerate(words):
        weights = [r["mask/weights"][i] for r in probes]
        if i == 0:
            ax.plot(steps, weights, color="0.1", linewidth=2.2, zorder=2,
                    label="sentiment token")
        else:  # the shared suffix, one thin dashed line per position, over the sentiment's
            ax.plot(steps, weights, color=style.SERIES[1], linewidth=0.8, linestyle="--", zorder=3,
                    label=f"suffix tokens ({len(words) - 1})" if i == 1 else None)
        rows += [{"method": "token_mask", "source": "mask weight", "step": step, "position": i,
                  "token": word, "mask_weight": w} for step, w in zip(steps, weights)]
    ax.set_ylim(-0.03, 1.9)  # room above the weights (m ≤ 1) for the numbers
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("token mask weight m_i")
    ax.legend(loc="upper left", fontsize=6)
    masked_cos = report["masked_cosine"]
    style.panel_title(ax, "d", f"mask, λ = {mask_run.mask_l1:g}")
    ax.text(0.97, 0.56, f"end: sentiment share {report['sentiment_share']:.2f}\n"
            f"⟨g_w,g_l⟩ {report['inner']:.3g} → mᵀMm {report['masked_inner']:.3g}\n"
            f"cos {report['cosine']:.2f} → "
            + ("undefined (m = 0)" if not np.isfinite(masked_cos) else f"{masked_cos:.2f}"),
            transform=ax.transAxes, ha="right", va="bottom", fontsize=6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    style.legend_below(fig, handles, labels, ncol=2)
    run = cfg.runs[0]
    style.suptitle(fig, f"Mitigations against DPO on long-suffix pairs (L = {run.suffix_length}), "
                        f"{sources.shared_training(cfg)}; markers: {run.probe_size} probe pairs")
    return fig, rows

