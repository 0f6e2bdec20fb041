"""Figure 3: the token-wise Gram matrices of a long-suffix pair.

``M[i, j] = ⟨g_w^i, g_l^j⟩`` pairs chosen token i with rejected token j (Σ_ij M = ⟨g_w, g_l⟩);
the within-response Grams ``⟨g_w^i, g_w^j⟩`` and ``⟨g_l^i, g_l^j⟩`` sit beside it, and the mean of
M over all the seed's eval pairs shows that the example is typical. Position 0 is the sentiment token, the
others the shared suffix. Measured as ``entangle verify`` measures it (``ModelContext.grams``).
The real-model twin (``entangle figures --real``): the same on SmolLM2-135M-Instruct after the
short sentiment fine-tuning of ``entangle verify --real`` (``smollm2_sft``), the pair asked through
the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import SymLogNorm

from entangle_jax.data.chat_sentiment import response_text
from entangle_jax.data.sentiment import response_words
from entangle_jax.figures import sources, style
from entangle_jax.verify.context import ModelContext, precision_scope
from entangle_jax.verify.regimes import VerifySettings


@dataclass(frozen=True)
class Config:
    settings: VerifySettings
    regime: str = sources.MAIN_REGIME
    seed: int = 0
    example: int = 0  # which eval pair is drawn in full


def config(quick: bool) -> Config:
    return Config(sources.settings(quick))


def real_config(quick: bool) -> Config:
    return Config(sources.real_figure_settings(quick, n_pairs=16),
                  regime="smollm2" if quick else "smollm2_sft")


def _tokens(ckpt, statement, positive: bool, length: int) -> list[str]:
    """The response's tokens as the model reads them."""
    if not hasattr(statement, "text"):  # a word-task statement: one word per token
        return response_words(positive, length)
    tokenizer = ckpt.tokenizer
    return [tokenizer.decode([i]).strip() for i in tokenizer.encode(response_text(positive,
                                                                                  length))]


def compute(cfg: Config, ctx, run_dir) -> dict:
    s = cfg.settings
    length = s.long_suffix
    ckpt = sources.checkpoint(s, cfg.regime, cfg.seed, ctx)
    with precision_scope(s):
        model = ModelContext(ckpt, s.regime(cfg.regime), cfg.seed, s)
        grams = model.grams(length)
        geo = model.geometry(length)
        statement = model.data.eval[cfg.example]
    n, k = length + 1, cfg.example
    cross = np.asarray(grams.cross, np.float64)[:, :n, :n]
    return {"suffix_length": length, "n_pairs": int(cross.shape[0]),
            "prompt": getattr(statement, "text", None) or " ".join(statement.prompt),
            "chosen_tokens": _tokens(ckpt, statement, statement.positive, length),
            "rejected_tokens": _tokens(ckpt, statement, not statement.positive, length),
            "cross": cross[k].tolist(),
            "chosen": np.asarray(grams.chosen, np.float64)[k, :n, :n].tolist(),
            "rejected": np.asarray(grams.rejected, np.float64)[k, :n, :n].tolist(),
            "mean_cross": cross.mean(0).tolist(),
            "inner": float(geo.inner[k]), "mean_inner": float(np.mean(geo.inner))}


PANELS = (("cross", "M = ⟨g_w^i, g_l^j⟩ of this pair", "chosen", "rejected"),
          ("mean_cross", "M averaged over the {n_pairs} eval pairs", "chosen", "rejected"),
          ("chosen", "chosen × chosen: ⟨g_w^i, g_w^j⟩", "chosen", "chosen"),
          ("rejected", "rejected × rejected: ⟨g_l^i, g_l^j⟩", "rejected", "rejected"))


def cell_text(value: float) -> str:
    """A cell annotation of at most four characters."""
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 9.95 else f"{value:.1f}" if magnitude >= 0.995 \
        else f"{value:.2f}".replace("0.", ".")


def symlog_norm(matrix: np.ndarray) -> tuple[SymLogNorm, list[float]]:
    """A colour scale symmetric about 0 (white) that shows small and large entries, and its
    colourbar ticks."""
    vmax = float(np.abs(matrix).max())
    linthresh = style.symlog_linthresh(matrix[matrix != 0])
    return (SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax),
            style.symlog_ticks(linthresh, vmax))


def token_labels(tokens: list[str]) -> list[str]:
    return [f"“{t}”" if not t.isalnum() else t for t in tokens]


def plot(results: dict, cfg: Config):
    fig, axes = style.figure(2, 2, height=2.9)
    rows = []
    for letter, ax, (key, title, row_side, col_side) in zip("abcd", axes.flat, PANELS):
        matrix = np.asarray(results[key])
        norm, ticks = symlog_norm(matrix)
        image = ax.imshow(matrix, cmap="RdBu_r", norm=norm)
        ys, xs = results[f"{row_side}_tokens"], results[f"{col_side}_tokens"]
        ax.set_xticks(range(len(xs)), token_labels(xs), rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks(range(len(ys)), token_labels(ys))
        ax.grid(False)
        ax.set_xlabel(f"{col_side} token j")
        ax.set_ylabel(f"{row_side} token i")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                value = matrix[i, j]
                ax.text(j, i, cell_text(value), ha="center", va="center", fontsize=5.5,
                        color="white" if abs(norm(value) - 0.5) > 0.3 else "black")
                rows.append({"panel": key, "i": i, "j": j, "row_token": ys[i],
                             "col_token": xs[j], "value": float(value)})
        if key == "cross":
            title += f"\nΣ M = {matrix.sum():.4g}; ⟨g_w, g_l⟩ directly: {results['inner']:.4g}"
        elif key == "mean_cross":
            title += f"\nΣ M = {matrix.sum():.4g}"
        style.panel_title(ax, letter, title.format(n_pairs=results["n_pairs"]))
        bar = fig.colorbar(image, ax=ax, shrink=0.85, ticks=ticks)
        bar.set_label("[nat²] (symlog scale)")
        bar.ax.set_yticklabels([f"{t:g}" for t in ticks])
        bar.ax.minorticks_off()
    style.suptitle(fig, f"Token-wise gradient Grams of a long-suffix pair (L = "
                        f"{results['suffix_length']}), {sources.regime_label(cfg.regime)} model, "
                        f"seed {cfg.seed}\nprompt “{results['prompt']}”")
    return fig, rows

