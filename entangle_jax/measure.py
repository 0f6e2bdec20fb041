"""``entangle measure``: the gradient geometry of chosen/rejected pairs at several suffix lengths.

The result is a JSON-ready dict (a stable contract, documented in the README)::

    {"config": {...}, "results": [{"suffix_length": L, "summary": {...},
      "pairs": [{"prompt", "chosen", "rejected", "logp_w", "logp_l", "sq_norm_w", "sq_norm_l",
                 "inner", "cosine", "token_gram": [[⟨g_w^i, g_l^j⟩]], "groups": {group: inner}}]}]}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from entangle_jax.checkpoint import Checkpoint
from entangle_jax.config import ConfigError, to_dict
from entangle_jax.data.pairs import sentiment_pairs
from entangle_jax.data.sentiment import (Statement, make_sentiment_data, response_window,
                                         response_words)
from entangle_jax.gradients import pair_geometry, token_grams


def sample_statements(statements: Sequence[Statement], n_pairs: int, seed: int) -> list[Statement]:
    """``n_pairs`` distinct statements drawn without replacement, deterministic for ``seed``."""
    if not isinstance(n_pairs, int) or n_pairs <= 0:
        raise ConfigError(f"pairs={n_pairs!r} is invalid: must be a positive integer")
    if n_pairs > len(statements):
        raise ConfigError(f"pairs={n_pairs} is invalid: only {len(statements)} eval statements")
    idx = np.random.default_rng(seed).choice(len(statements), n_pairs, replace=False)
    return [statements[i] for i in sorted(idx)]


def summarize(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "median": float(np.median(values)), "frac_negative": float(np.mean(values < 0))}


def measure_suffix_length(ckpt: Checkpoint, statements: Sequence[Statement], suffix_length: int,
                          window: int) -> dict:
    """Geometry of the pairs built from ``statements`` with a suffix of ``suffix_length`` tokens."""
    pairs = sentiment_pairs(statements, ckpt.vocab, suffix_length, ckpt.model_config.max_len,
                            window)
    geo = pair_geometry(ckpt.graphdef, ckpt.params, pairs)
    grams = token_grams(ckpt.graphdef, ckpt.params, pairs)
    groups = geo.group_inner()
    n = suffix_length + 1
    records = []
    for k, s in enumerate(statements):
        records.append({
            "prompt": " ".join(s.prompt),
            "chosen": " ".join(response_words(s.positive, suffix_length)),
            "rejected": " ".join(response_words(not s.positive, suffix_length)),
            "logp_w": float(geo.logp_w[k]), "logp_l": float(geo.logp_l[k]),
            "sq_norm_w": float(geo.sq_norm_w[k]), "sq_norm_l": float(geo.sq_norm_l[k]),
            "inner": float(geo.inner[k]), "cosine": float(geo.cosine[k]),
            "token_gram": grams.cross[k, :n, :n].astype(float).tolist(),
            "groups": {g: float(v[k]) for g, v in groups.items()},
        })
    summary = {"inner": summarize(geo.inner), "cosine": summarize(geo.cosine),
               "sq_norm_w": summarize(geo.sq_norm_w), "sq_norm_l": summarize(geo.sq_norm_l),
               "sentiment_token_inner": summarize(grams.cross[:, 0, 0])}
    return {"suffix_length": suffix_length, "summary": summary, "pairs": records}


def measure(ckpt: Checkpoint, suffix_lengths: Sequence[int], n_pairs: int = 64, seed: int = 0,
            progress: bool = True) -> dict:
    """Measure eval pairs of ``ckpt``'s data at every suffix length (the ``measure.json`` contract)."""
    if ckpt.data_config is None:
        raise ConfigError("the checkpoint records no data config; cannot rebuild its sentiment data")
    data = make_sentiment_data(ckpt.data_config)
    too_long = [L for L in suffix_lengths if L > ckpt.data_config.max_suffix_length]
    if too_long:
        raise ConfigError(f"suffix lengths {too_long} exceed the data's max_suffix_length="
                          f"{ckpt.data_config.max_suffix_length}")
    statements = sample_statements(data.eval, n_pairs, seed)
    window = response_window(ckpt.data_config)
    results = [measure_suffix_length(ckpt, statements, L, window)
               for L in tqdm(suffix_lengths, desc="measure", disable=not progress, leave=False)]
    config = {"model": to_dict(ckpt.model_config), "data": to_dict(ckpt.data_config),
              "sft": None if ckpt.sft_config is None else to_dict(ckpt.sft_config),
              "n_pairs": n_pairs, "seed": seed, "suffix_lengths": list(suffix_lengths)}
    return {"config": config, "results": results}


def format_table(report: dict) -> str:
    """A Markdown table of the per-suffix-length summaries of a ``measure`` report."""
    rows = ["| L | ⟨g_w,g_l⟩ mean ± sd | frac < 0 | cosine mean | ‖g_w‖² mean | ‖g_l‖² mean "
            "| ⟨g_w^0,g_l^0⟩ mean | frac < 0 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        s = r["summary"]
        rows.append(f"| {r['suffix_length']} | {s['inner']['mean']:.4g} ± {s['inner']['std']:.3g} "
                    f"| {s['inner']['frac_negative']:.2f} | {s['cosine']['mean']:.3f} "
                    f"| {s['sq_norm_w']['mean']:.4g} | {s['sq_norm_l']['mean']:.4g} "
                    f"| {s['sentiment_token_inner']['mean']:.4g} "
                    f"| {s['sentiment_token_inner']['frac_negative']:.2f} |")
    return "\n".join(rows)
