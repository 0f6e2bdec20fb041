"""``entangle measure``: the gradient geometry of chosen/rejected pairs at several suffix lengths.

The result is a JSON-ready dict (a stable contract, documented in the README)::

    {"config": {...}, "provenance": {"config_hash", "versions", "backend"},
     "results": [{"suffix_length": L, "summary": {...},
      "pairs": [{"prompt", "chosen", "rejected", "logp_w", "logp_l", "sq_norm_w", "sq_norm_l",
                 "inner", "cosine", "token_gram": [[⟨g_w^i, g_l^j⟩]], "groups": {group: inner}}]}]}

On a user's preference file (``measure_user_data``) the same contract holds with L the number of
tokens the two responses share at their end (pairs are grouped by it), and each pair also carries
its token-level diff and the split of ⟨g_w, g_l⟩ over it: with the chosen tokens cut into
prefix P, span S_w, suffix Q and the rejected ones into P, S_l, Q,

    block_inner[a][b] = Σ_{i ∈ a(chosen), j ∈ b(rejected)} ⟨g_w^i, g_l^j⟩,   a, b ∈ (P, S, Q)
    span_inner = block_inner[S][S],   suffix_inner = block_inner[Q][Q],
    shared_inner = Σ token_gram − span_inner,

so ``shared_inner`` is everything a shared token takes part in (the paper's entangled terms),
``suffix_inner`` the part among the shared tail tokens alone, and
``first_diff_inner`` = ⟨g_w^i, g_l^i⟩ at the first differing token i = |P| (null if a span is
empty), which the summary reports as ``sentiment_token_inner`` (on the sentiment task that token
is the sentiment token).

The pairs of a file are grouped by L, and the L = 0 group is split by whether the two responses
share a prefix (``shared_prefix``; row ``label`` ``"0 (shared prefix)"`` / ``"0 (no shared
part)"``): shared leading tokens and none at all can pull ⟨g_w, g_l⟩ opposite ways.
``group_by`` adds one summary row per value of an extra field of the records
(``groups_by_field``). Both kinds of report carry ``n_measured`` and ``n_records`` (pairs
measured, records available); a file's report also counts the records that repeat an earlier
(prompt, chosen, rejected) in ``duplicate_pairs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from entangle_jax.checkpoint import Checkpoint, CheckpointError
from entangle_jax.config import ConfigError, to_dict
from entangle_jax.data.pairs import sentiment_pairs
from entangle_jax.data.sentiment import (Statement, make_sentiment_data, response_window,
                                         response_words)
from entangle_jax.data.userdata import PreferenceData, encode_pairs, pair_diffs
from entangle_jax.data.vocab import Vocab
from entangle_jax.gradients import pair_geometry, token_grams
from entangle_jax.guards import check_array_finite
from entangle_jax.provenance import provenance


#: Pairs measured when no number is given: every record, up to this many.
DEFAULT_PAIRS = 64


def resolve_pairs(requested, available: int, what: str) -> int:
    """The number of pairs to measure: ``requested`` (a positive int, ``"all"`` or None: all
    ``available`` up to ``DEFAULT_PAIRS``), refused (``ConfigError``) above ``available``."""
    if requested is None:
        return min(DEFAULT_PAIRS, available)
    if requested == "all":
        return available
    if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
        raise ConfigError(f"pairs={requested!r} is invalid: must be a positive integer or 'all'")
    if requested > available:
        raise ConfigError(f"pairs={requested} is invalid: {what} holds only {available} usable "
                          "pairs (give --pairs all, or a smaller number)")
    return requested


def sample_statements(statements: Sequence[Statement], n_pairs: int | None,
                      seed: int) -> list[Statement]:
    """``n_pairs`` distinct statements (None: all) drawn without replacement, deterministic for
    ``seed``."""
    if n_pairs is None:
        return list(statements)
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
    pairs = sentiment_pairs(statements, ckpt.tokenizer, suffix_length, ckpt.model_config.max_len,
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


def measure(ckpt: Checkpoint, suffix_lengths: Sequence[int], n_pairs: int | None = 64,
            seed: int = 0, progress: bool = True) -> dict:
    """Measure ``n_pairs`` eval pairs (None: all) of ``ckpt``'s data at every suffix length (the
    ``measure.json`` contract)."""
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
              "n_pairs": len(statements), "seed": seed, "suffix_lengths": list(suffix_lengths)}
    return {"config": config, "results": results, "n_measured": len(statements),
            "n_records": len(data.eval), "provenance": provenance(config)}


def _summary_or_null(values: list) -> dict:
    """``summarize`` over the defined (non-null) values; every statistic null when there are none."""
    defined = np.asarray([v for v in values if v is not None], float)
    if defined.size == 0:
        return {"mean": None, "std": None, "median": None, "frac_negative": None}
    return summarize(defined)


def _blocks(gram: np.ndarray, diff) -> list[list[float]]:
    """3×3 sums of the cross Gram over (prefix, span, suffix) of chosen × rejected."""
    cuts_w = np.cumsum([0, diff.prefix, diff.chosen_span, diff.suffix])
    cuts_l = np.cumsum([0, diff.prefix, diff.rejected_span, diff.suffix])
    return [[float(gram[cuts_w[a]:cuts_w[a + 1], cuts_l[b]:cuts_l[b + 1]].sum())
             for b in range(3)] for a in range(3)]


def _token_diagnostics(gram: np.ndarray, diff) -> dict:
    """The token-level split of ⟨g_w, g_l⟩ over the pair's diff (module docstring)."""
    blocks = _blocks(gram, diff)
    first = (float(gram[diff.prefix, diff.prefix])
             if diff.chosen_span and diff.rejected_span else None)
    return {"token_gram": gram.tolist(), "block_inner": blocks, "span_inner": blocks[1][1],
            "suffix_inner": blocks[2][2], "shared_inner": float(gram.sum()) - blocks[1][1],
            "first_diff_inner": first}


def _user_summary(records: list[dict]) -> dict:
    summary = {key: _summary_or_null([r[key] for r in records])
               for key in ("inner", "cosine", "sq_norm_w", "sq_norm_l", "span_inner",
                           "suffix_inner", "shared_inner")}
    summary["sentiment_token_inner"] = _summary_or_null([r["first_diff_inner"] for r in records])
    return summary


def duplicate_records(records) -> list[tuple[int, int]]:
    """``(k, first)`` for every record ``k`` that repeats the prompt, chosen and rejected of an
    earlier record ``first``."""
    first: dict[tuple, int] = {}
    out = []
    for k, r in enumerate(records):
        key = (r.prompt_text, r.chosen, r.rejected)
        if key in first:
            out.append((k, first[key]))
        else:
            first[key] = k
    return out


def record_fields(records) -> list[str]:
    """The extra fields (``record.fields``) any record carries, sorted."""
    return sorted({name for r in records for name, _ in r.fields})


def _value_order(value):
    """Numbers first (by value), then strings, then a missing field."""
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def _suffix_group(diff) -> tuple:
    """``(L, shared_prefix)``: the L = 0 group is split by whether the responses share a prefix
    (None for L > 0)."""
    return (diff.suffix, diff.prefix > 0 if diff.suffix == 0 else None)


def _suffix_label(length: int, shared_prefix) -> str:
    if shared_prefix is None:
        return str(length)
    return f"{length} (shared prefix)" if shared_prefix else f"{length} (no shared part)"


def measure_user_data(ckpt: Checkpoint, data: PreferenceData, n_pairs: int | None = 64,
                      seed: int = 0, progress: bool = True, token_gram_pairs: int | None = None,
                      implementation: str = "auto", group_by: str | None = None) -> dict:
    """Measure ``n_pairs`` records of a user's file (drawn without replacement for ``seed``; None:
    every record), grouped by shared suffix length (L = 0 split by a shared prefix) and, with
    ``group_by``, by the value of that extra field; the ``measure.json`` contract plus per-pair
    diagnostics and the encoding's counts (``encoding``: records drawn, pairs kept, truncations).

    Token-wise Grams (and the diagnostics built on them) cost one backward pass per response
    token; ``token_gram_pairs`` limits them to the first pairs drawn (all when None): the others
    carry ``token_gram`` and its diagnostics as null."""
    if isinstance(ckpt.tokenizer, Vocab) and ckpt.tokenizer != data.vocab:
        raise CheckpointError(f"the checkpoint was trained on another vocabulary than "
                              f"{data.config.path} builds ({len(ckpt.tokenizer)} vs "
                              f"{len(data.vocab)} words); train it on this file (--data) with the "
                              "same --vocab-size")
    n_pairs = resolve_pairs("all" if n_pairs is None else n_pairs, len(data.records),
                            str(data.config.path))
    if group_by is not None and group_by not in record_fields(data.records):
        fields = ", ".join(record_fields(data.records)) or "none"
        raise ConfigError(f"group_by={group_by!r} is invalid: no record of {data.config.path} has "
                          f"that field (fields: {fields})")
    drawn = sorted(int(i) for i in np.random.default_rng(seed).choice(len(data.records), n_pairs,
                                                                       replace=False))
    encoded = encode_pairs(data, ckpt.tokenizer, drawn, ckpt.model_config.max_len)
    pairs, idx = encoded.pairs, encoded.indices
    n = len(idx)
    n_grams = n if token_gram_pairs is None else min(n, token_gram_pairs)
    bar = tqdm(total=n + n_grams, desc="measure", disable=not progress, leave=False)
    geo = pair_geometry(ckpt.graphdef, ckpt.params, pairs, implementation=implementation,
                        progress=lambda done: bar.update(done - bar.n))
    grams = (token_grams(ckpt.graphdef, ckpt.params, pairs[:n_grams],
                         implementation=implementation,
                         progress=lambda done: bar.update(n + done - bar.n))
             if n_grams else None)
    bar.close()
    where = [data.records[i].where for i in idx]
    for name, values in (("log π_w", geo.logp_w), ("log π_l", geo.logp_l),
                         ("‖g_w‖²", geo.sq_norm_w), ("‖g_l‖²", geo.sq_norm_l),
                         ("⟨g_w, g_l⟩", geo.inner)):
        check_array_finite(name, values, where)
    diffs = pair_diffs(pairs)
    groups = geo.group_inner()
    by_suffix: dict[tuple, list[dict]] = {}
    for k, i in enumerate(idx):
        record, diff = data.records[i], diffs[k]
        if k < n_grams:
            gram = grams.cross[k, :diff.chosen_length, :diff.rejected_length].astype(float)
            token = _token_diagnostics(gram, diff)
        else:
            token = dict.fromkeys(("token_gram", "block_inner", "span_inner", "suffix_inner",
                                   "shared_inner", "first_diff_inner"))
        by_suffix.setdefault(_suffix_group(diff), []).append({
            "prompt": record.prompt_text, "chosen": record.chosen,
            "rejected": record.rejected, "where": record.where, "fields": dict(record.fields),
            "logp_w": float(geo.logp_w[k]), "logp_l": float(geo.logp_l[k]),
            "sq_norm_w": float(geo.sq_norm_w[k]), "sq_norm_l": float(geo.sq_norm_l[k]),
            "inner": float(geo.inner[k]), "cosine": float(geo.cosine[k]),
            "groups": {g: float(v[k]) for g, v in groups.items()},
            "diff": diff.as_dict(), **token,
            "prompt_tokens_dropped": int(encoded.prompt_dropped[k]),
            "response_truncated": bool(encoded.response_cut[k]),
        })
    keys = sorted(by_suffix, key=lambda key: (key[0], bool(key[1])))
    results = []
    for length, shared_prefix in keys:
        group = by_suffix[length, shared_prefix]
        row = {"suffix_length": length, "label": _suffix_label(length, shared_prefix),
               "n_pairs": len(group), "summary": _user_summary(group), "pairs": group}
        if shared_prefix is not None:
            row["shared_prefix"] = shared_prefix
        results.append(row)
    everything = [r for key in keys for r in by_suffix[key]]
    config = {"model": to_dict(ckpt.model_config), "data": to_dict(data.config),
              "sft": None if ckpt.sft_config is None else to_dict(ckpt.sft_config),
              "n_pairs": n_pairs, "seed": seed, "suffix_lengths": sorted({k[0] for k in keys}),
              "source": "data", "n_records": len(data.records), "token_gram_pairs": n_grams,
              "implementation": implementation}
    if group_by is not None:
        config["group_by"] = group_by
    repeats = duplicate_records(data.records)
    measured = set(idx)
    report = {"config": config, "results": results,
              "overall": {"n_pairs": len(everything), "summary": _user_summary(everything)},
              "n_measured": len(everything), "n_records": len(data.records),
              "duplicate_pairs": {
                  "in_file": len(repeats),
                  "measured": sum(k in measured and first in measured for k, first in repeats),
                  "first": [[data.records[k].where, data.records[first].where]
                            for k, first in repeats[:10]]},
              "encoding": {**encoded.summary(n_pairs), "skipped_pairs": list(encoded.skipped)},
              "skipped_records": list(data.skipped), "provenance": provenance(config)}
    if group_by is not None:
        values: dict = {}
        for r in everything:
            values.setdefault(r["fields"].get(group_by), []).append(r)
        report["groups_by_field"] = {
            "field": group_by,
            "rows": [{"value": v, "n_pairs": len(values[v]), "summary": _user_summary(values[v])}
                     for v in sorted(values, key=_value_order)]}
    return report


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _user_rows(first_column: str, rows: list[tuple[str, int, dict]]) -> list[str]:
    lines = [f"| {first_column} | pairs | ⟨g_w,g_l⟩ mean ± sd | frac < 0 | cosine mean "
             "| span×span terms | suffix×suffix terms | all shared-token terms "
             "| first differing token ⟨g_w^i,g_l^i⟩ | frac < 0 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, n, s in rows:
        lines.append(f"| {label} | {n} "
                     f"| {_fmt(s['inner']['mean'], '.4g')} ± {_fmt(s['inner']['std'], '.3g')} "
                     f"| {_fmt(s['inner']['frac_negative'], '.2f')} "
                     f"| {_fmt(s['cosine']['mean'], '.3f')} "
                     f"| {_fmt(s['span_inner']['mean'], '.4g')} "
                     f"| {_fmt(s['suffix_inner']['mean'], '.4g')} "
                     f"| {_fmt(s['shared_inner']['mean'], '.4g')} "
                     f"| {_fmt(s['sentiment_token_inner']['mean'], '.4g')} "
                     f"| {_fmt(s['sentiment_token_inner']['frac_negative'], '.2f')} |")
    return lines


def _field_value(value) -> str:
    return "(missing)" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def format_user_table(report: dict) -> str:
    """Markdown tables of a ``measure_user_data`` report: one row per shared suffix length (L = 0
    split by a shared prefix) and all pairs; with ``group_by``, a second table with one row per
    value of that field."""
    rows = [(r.get("label", r["suffix_length"]), r["n_pairs"], r["summary"])
            for r in report["results"]]
    rows.append(("all", report["overall"]["n_pairs"], report["overall"]["summary"]))
    lines = _user_rows("shared suffix L", rows)
    by_field = report.get("groups_by_field")
    if by_field:
        lines += ["", *_user_rows(by_field["field"].replace("|", "\\|"),
                                   [(_field_value(r["value"]), r["n_pairs"], r["summary"])
                                    for r in by_field["rows"]])]
    return "\n".join(lines)


def format_table(report: dict) -> str:
    """A Markdown table of the per-suffix-length summaries of a ``measure`` report."""
    if report["config"].get("source") == "data":
        return format_user_table(report)
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
