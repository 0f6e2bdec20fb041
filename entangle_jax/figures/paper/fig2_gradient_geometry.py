"""Figure 2: ⟨g_w, g_l⟩, ‖g_w‖², ‖g_l‖² and the cosine against the suffix length L = 0…12, one line
per training regime, with 95% bands over seeds.

The regimes, seeds and pairs are ``entangle verify``'s (``verify.regimes``): seed s of a regime is
its own model, trained on the data of seed s, measured on that data's first ``n_pairs`` eval
statements at every L. The line is the mean over seeds of the per-seed mean over pairs, the band
its Student-t 95% interval over seeds. The real-model twin (``entangle figures --real``): the
same for SmolLM2-135M-Instruct as shipped and after the short sentiment fine-tuning of ``entangle
verify --real`` (L = 0…6, the chat sentiment task), 2 seeds of 16 pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from entangle_jax.figures import sources, style
from entangle_jax.figures.tables import mean_ci95
from entangle_jax.verify.context import ModelContext, precision_scope
from entangle_jax.verify.regimes import VerifySettings

QUANTITIES = (("inner", "⟨g_w, g_l⟩ [nat²]"), ("sq_norm_w", "‖g_w‖² (chosen) [nat²]"),
              ("sq_norm_l", "‖g_l‖² (rejected) [nat²]"), ("cosine", "cos(g_w, g_l)"))


@dataclass(frozen=True)
class Config:
    settings: VerifySettings  # the regimes, seeds, pairs and precision of ``entangle verify``


def config(quick: bool) -> Config:
    return Config(sources.settings(quick))


def real_config(quick: bool) -> Config:
    return Config(sources.real_figure_settings(quick, seeds=(0, 1), n_pairs=16))


def compute(cfg: Config, ctx, run_dir) -> dict:
    """Per regime, seed and L: the mean over the seed's eval pairs of each quantity, measured as
    ``entangle verify`` measures it (``ModelContext``, in the settings' precision)."""
    s = cfg.settings
    records = []
    units = [(regime, seed) for regime in s.regimes for seed in s.seeds]
    for regime, seed in tqdm(units, desc="fig2 regimes × seeds", disable=not ctx.progress,
                             leave=False):
        ckpt = sources.checkpoint(s, regime.name, seed, ctx)
        with precision_scope(s):
            geo = ModelContext(ckpt, regime, seed, s).geometry_by_length()  # [pairs, L]
        cosine = geo["inner"] / np.sqrt(geo["sq_norm_w"] * geo["sq_norm_l"])
        for length in range(s.max_suffix + 1):
            values = {q: geo[q][:, length] for q in ("inner", "sq_norm_w", "sq_norm_l")}
            values["cosine"] = cosine[:, length]
            records.append({"regime": regime.name, "seed": seed, "suffix_length": length,
                            **{q: float(np.mean(v)) for q, v in values.items()}})
    return {"records": records}


def bands(results: dict, cfg: Config) -> list[dict]:
    """One row per (regime, L): mean over seeds and its 95% interval for every quantity."""
    rows = []
    for name in (r.name for r in cfg.settings.regimes):
        for length in range(cfg.settings.max_suffix + 1):
            per_seed = [r for r in results["records"]
                        if r["regime"] == name and r["suffix_length"] == length]
            row = {"regime": name, "suffix_length": length, "n_seeds": len(per_seed)}
            for q, _ in QUANTITIES:
                mean, lo, hi = mean_ci95([r[q] for r in per_seed])
                row.update({q: float(mean), f"{q}_ci_lo": float(lo), f"{q}_ci_hi": float(hi)})
            rows.append(row)
    return rows


def plot(results: dict, cfg: Config):
    s = cfg.settings
    rows = bands(results, cfg)
    fig, axes = style.figure(2, 2, height=2.3)
    for k, ((q, label), ax) in enumerate(zip(QUANTITIES, axes.flat)):
        for i, regime in enumerate(s.regimes):
            mine = [r for r in rows if r["regime"] == regime.name]
            x = [r["suffix_length"] for r in mine]
            style.band(ax, x, [r[q] for r in mine], [r[f"{q}_ci_lo"] for r in mine],
                       [r[f"{q}_ci_hi"] for r in mine], color=style.series_color(i),
                       label=sources.regime_label(regime.name), marker="o")
        if q == "cosine":
            ax.set_ylim(-1.05, 1.05)
        elif q == "inner":
            style.symlog_axis(ax, [r[q] for r in rows])
            ax.axhline(0.0, color="0.3", linewidth=0.8)
        else:
            ax.set_yscale("log", nonpositive="clip")
        ax.set_xticks(range(s.max_suffix + 1))
        ax.set_xlabel("suffix length L [tokens]")
        ax.set_ylabel(label)
        style.panel_title(ax, "abcd"[k], label.split(" [")[0] + " against L"
                          + (" (symmetric log axis)" if q == "inner" else ""))
    style.suptitle(fig, "Gradient geometry of chosen/rejected pairs vs suffix length, per "
                        f"training regime\n(mean over {s.n_pairs} eval pairs per seed; band: "
                        f"95% t-interval over {len(s.seeds)} seeds)")
    style.legend_below(fig, ncol=len(s.regimes))
    return fig, rows

