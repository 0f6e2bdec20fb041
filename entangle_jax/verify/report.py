"""The verification report: ``verify.json`` (a stable contract) and its human-readable forms.

``verify.json``::

    {"claims": [{"id", "statement", "headline_regime", "headline_verdict",
                 "regimes": [{"regime", "verdict", "statistic", "value", "ci": [lo, hi], "rule",
                              "seeds": [...], "n_pairs", "hypothesis", "checks", "control",
                              "details", ("expected")}, ...]}, ...],
     "versions": {...}, "config_hash": "...", "settings": {...}, "machine": {...}, "date": "...",
     "timings": {"models": {...}, "measure": {...}, "evaluate", "saved_earlier", "total",
                 "peak_memory_mb"}}

Times are seconds; ``peak_memory_mb`` is the verifying process's peak resident memory (MiB).
Verdicts are ``HOLDS``, ``FAILS`` or ``NOT_APPLICABLE``; undefined numbers are ``null``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
from collections.abc import Sequence

from entangle_jax.provenance import json_hash, package_versions

_SHORT = {"HOLDS": "HOLDS", "FAILS": "FAILS", "NOT_APPLICABLE": "n/a"}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def build_report(settings, claims: Sequence, rows: dict[str, list[dict]], timings: dict) -> dict:
    out = []
    for claim in claims:
        regimes = rows[claim.id]
        own = settings.regime(claim.headline_regime).name
        headline = next(r for r in regimes if r["regime"] == own)
        out.append({"id": claim.id, "statement": claim.statement,
                    "headline_regime": own,
                    "headline_verdict": headline["verdict"], "regimes": regimes})
    return {"claims": out, "versions": package_versions(), "config_hash": json_hash(settings),
            "settings": dataclasses.asdict(settings), "machine": machine(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "timings": {k: ({kk: round(vv, 2) for kk, vv in v.items()} if isinstance(v, dict)
                            else round(v, 2)) for k, v in timings.items()}}


def _cell(row: dict, headline: bool) -> str:
    """``VERDICT value``: the headline statistic, or under FAILS the check that failed."""
    failed = [c for c in row.get("checks", ()) if c.get("passed") is False]
    shown = failed[0]["value"] if row["verdict"] == "FAILS" and failed else row["value"]
    value = "—" if shown is None else f"{shown:.2f}"
    return f"{'*' if headline else ''}{_SHORT[row['verdict']]} {value}"


def format_table(report: dict) -> str:
    """Claims × regimes, each cell ``VERDICT value``; ``*`` marks the claim's own regime."""
    regimes = [r["regime"] for r in report["claims"][0]["regimes"]]
    head = ["claim", *regimes]
    body = [[c["id"], *(_cell(r, r["regime"] == c["headline_regime"]) for r in c["regimes"])]
            for c in report["claims"]]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(* = the claim's own regime: its headline verdict; n/a = " \
        "NOT_APPLICABLE, the hypothesis is not met; under FAILS the value is the failing check's)"


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _details(details: dict) -> str:
    """Compact text of a details dict (numbers to 3 significant digits)."""
    def text(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {text(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(text(x) for x in v) + "]"
        return _fmt(v)
    return "; ".join(f"{k} = {text(v)}" for k, v in details.items())


def to_markdown(report: dict) -> str:
    """The table and, per claim, each regime's verdict with its numbers, control and premise."""
    s = report["settings"]
    lines = ["# entangle verify", "",
             f"{report['date']} · {report['machine']['platform']} · "
             f"{report['machine']['cpu_count']} CPUs · config {report['config_hash']} · "
             f"seeds {s['seeds']} · {s['n_pairs']} pairs per seed · {s['precision']}", "",
             "| claim | " + " | ".join(r["regime"] for r in report["claims"][0]["regimes"])
             + " |",
             "|---|" + "---|" * len(report["claims"][0]["regimes"])]
    for c in report["claims"]:
        cells = [(f"**{_cell(r, True)[1:]}**" if r["regime"] == c["headline_regime"]
                  else _cell(r, False)) for r in c["regimes"]]
        lines.append(f"| {c['id']} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: the claim's own regime (its headline verdict). n/a: NOT_APPLICABLE — "
              "the claim's hypothesis is not met in that regime.", ""]
    for c in report["claims"]:
        lines += [f"## {c['id']} — {c['headline_verdict']} in {c['headline_regime']}", "",
                  c["statement"] + ".", ""]
        first = c["regimes"][0]
        lines += [f"- statistic: {first['statistic']}; rule: {first['rule']}",
                  f"- hypothesis: {first['hypothesis']['statement']}"]
        if "control" in first:
            lines.append(f"- negative control: {first['control']['setting']}")
        lines += ["", "| regime | verdict | value [95% CI] | premise | control | notes |",
                  "|---|---|---|---|---|---|"]
        for r in c["regimes"]:
            premise = "; ".join(f"{x['statistic']} = {_fmt(x['value'])}"
                                for x in r["hypothesis"]["conditions"]) or "by construction"
            control = "—"
            if "control" in r:
                ok = r["control"]["as_expected"]
                control = f"{_fmt(r['control']['value'])} ({'does not pass' if ok else 'PASSES'})"
            notes = [f"{x['statistic']}: {_fmt(x['value'])} {'✓' if x['passed'] else '✗'}"
                     for x in r["checks"][1:]]
            if "expected" in r:
                e = r["expected"]
                notes.append(f"expected {e['verdict']} ({e['reason']}): "
                             f"{'as expected' if e['as_expected'] else 'NOT as expected'}")
            lo, hi = r["ci"]
            lines.append(f"| {r['regime']} | {r['verdict']} | {_fmt(r['value'])} "
                         f"[{_fmt(lo)}, {_fmt(hi)}] | {premise} | {control} | "
                         f"{'; '.join(notes)} |")
        headline = next(r for r in c["regimes"] if r["regime"] == c["headline_regime"])
        lines += ["", f"Details in {c['headline_regime']}: {_details(headline['details'])}", ""]
    t = report["timings"]
    lines += ["## Timings", "",
              f"total {t['total']:.0f} s; models (train or load) "
              f"{sum(t['models'].values()):.0f} s; measurements "
              + ", ".join(f"{k} {v:.0f} s" for k, v in t["measure"].items())
              + f"; evaluation {t['evaluate']:.0f} s; peak memory "
              f"{t['peak_memory_mb'] / 1024:.1f} GB"
              + (f"; {t['saved_earlier']} claim × model measurement(s) saved by an earlier run"
                 if t.get("saved_earlier") else ""), "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)
