"""What a preference run did to its probe pairs and probe responses, read from its log.

``probe_report(records)`` compares the first probe (step 0, the starting model) with the last:

- per probe pair, Δ log π_w and Δ log π_l: how many fell, by how much (mean, median, range), and
  which pairs (``file:line`` in the probe file, largest fall first);
- per probe-response field (Ren & Sutherland's rephrasings, irrelevant and non-language
  responses), the mean Δ log π and the fraction of prompts whose response fell;
- ⟨g_w, g_l⟩, cos(g_w, g_l) and the first-order case fractions of the probe pairs, first and last;
- the TRL metrics of the training batches, averaged over the first and the last few steps;

next to the direction Ren & Sutherland report for DPO on HH-RLHF (``RENSUTHERLAND``).
``format_probe_report`` writes it as Markdown whose first lines say plainly whether the chosen
log-prob fell.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.data.records import DataError

#: The published reference: Pythia-410M after SFT, then DPO on HH-RLHF helpful-base (Ren &
#: Sutherland, "Learning Dynamics of LLM Finetuning", ICLR 2025), mean sequence log-probs.
RENSUTHERLAND = {
    "model": "Pythia-410M, DPO on HH-RLHF (Ren & Sutherland, ICLR 2025)",
    "chosen": (-152.0, -146.0),
    "rejected": (-121.0, -198.0),
    "direction": "the rejected log-prob falls far more than the chosen one moves (chosen "
                 "-152 -> -146, rejected -121 -> -198), and the other responses, rephrasings, "
                 "irrelevant and non-language ones alike, lose probability as DPO squeezes mass "
                 "toward the model's most likely responses",
}

#: The TRL metrics summarized over the first and last training steps.
TRL_METRICS = ("loss", "logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected",
               "rewards/margins", "rewards/accuracies")
GEOMETRY = ("probe/grad_inner", "probe/grad_cosine", "probe/case_1", "probe/case_2",
            "probe/case_3", "probe/case_4")


def _changes(start, end, sources: list) -> dict:
    """Summary of per-pair changes ``end − start``; ``fell_pairs`` (with each pair's ``source``)
    sorted by the largest fall."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    change = end - start
    fell = np.flatnonzero(change < 0)
    order = fell[np.argsort(change[fell])]
    return {"start": float(start.mean()), "end": float(end.mean()),
            "change": float(change.mean()), "median_change": float(np.median(change)),
            "min_change": float(change.min()), "max_change": float(change.max()),
            "n": int(change.size), "fell": float(np.mean(change < 0)),
            "fell_pairs": [{"source": sources[k], "start": float(start[k]),
                            "end": float(end[k]), "change": float(change[k])} for k in order]}


def probe_report(records: list[dict], window: int = 5) -> dict:
    """The report of a run's JSONL ``records`` (``train.preference.read_log``); ``window`` steps
    at each end average the TRL metrics. Needs at least two probe records with per-pair values
    (a run with probe responses); raises ``DataError`` otherwise."""
    header = next((r for r in records if r.get("kind") == "config"), None)
    probes = [r for r in records if r.get("kind") == "probe"]
    train = [r for r in records if r.get("kind") == "train"]
    if header is None or len(probes) < 2 or "probe/pairs/logps_chosen" not in probes[0]:
        raise DataError("the log has no per-pair probes before and after training (a run with "
                        "a probe-carrying data file and probe_every > 0 writes them)")
    first, last = probes[0], probes[-1]
    n = len(first["probe/pairs/logps_chosen"])
    pair_sources = header.get("probe_sources") or [f"probe pair {k}" for k in range(n)]
    chosen = _changes(first["probe/pairs/logps_chosen"], last["probe/pairs/logps_chosen"],
                      pair_sources)
    rejected = _changes(first["probe/pairs/logps_rejected"], last["probe/pairs/logps_rejected"],
                        pair_sources)
    margin_start = (np.asarray(first["probe/pairs/logps_chosen"])
                    - np.asarray(first["probe/pairs/logps_rejected"]))
    margin_end = (np.asarray(last["probe/pairs/logps_chosen"])
                  - np.asarray(last["probe/pairs/logps_rejected"]))
    responses = {}
    for name, info in header.get("probe_responses", {}).items():
        key = f"probe/pairs/responses/{name}"
        if key not in first:
            continue
        rows = [pair_sources[r] for r in info.get("rows", range(len(first[key])))]
        summary = _changes(first[key], last[key], rows)
        summary.pop("fell_pairs")
        responses[name] = {"kind": info["kind"], **summary}
    head, tail = train[:window], train[-window:]
    config = header["config"]
    return {
        "run": {"method": header["method"], "objective": header["objective"],
                "steps": config["steps"], "batch_size": config["batch_size"],
                "learning_rate": config["learning_rate"], "optimizer": config["optimizer"],
                "train_params": config["train_params"],
                "trained_parameters": header["trained_parameters"],
                "train_pairs": header["train_pairs"], "probe_pairs": header["probe_pairs"],
                "data": (header.get("data") or {}).get("path"),
                "probe_data": (header.get("probe_data") or {}).get("path")},
        "probe_steps": [first["step"], last["step"]],
        "chosen": chosen, "rejected": rejected,
        "margin": _changes(margin_start, margin_end, pair_sources),
        "responses": responses,
        "geometry": {key.removeprefix("probe/"): {"start": first[key], "end": last[key]}
                     for key in GEOMETRY if key in first},
        "train_metrics": {key: {"first_steps": float(np.mean([r[key] for r in head])),
                                "last_steps": float(np.mean([r[key] for r in tail]))}
                          for key in TRL_METRICS if train and key in train[0]},
        "train_window": min(window, len(train)),
        "reward_beta": header.get("reward_beta"),
        "reference": RENSUTHERLAND,
    }


def _verdict(name: str, s: dict) -> str:
    moved = "fell" if s["change"] < 0 else "rose"
    return (f"The {name} log-prob {moved} on average by {abs(s['change']):.3g} nats "
            f"({s['start']:.2f} → {s['end']:.2f}; median {s['median_change']:+.3g}, range "
            f"{s['min_change']:+.3g} … {s['max_change']:+.3g}); it fell for "
            f"{round(s['fell'] * s['n'])} of {s['n']} probe pairs.")


def _training_line(report: dict) -> list[str]:
    """The training batches' log π − log π_ref (TRL's rewards / β) at the start and the end."""
    metrics, beta = report["train_metrics"], report.get("reward_beta")
    if not beta or "rewards/chosen" not in metrics:
        return []
    chosen, rejected = metrics["rewards/chosen"], metrics["rewards/rejected"]
    return [f"- On the training batches (TRL's rewards / β, mean of the first and the last "
            f"{report['train_window']} steps), log π − log π_ref moved from "
            f"{chosen['first_steps'] / beta:+.3g} to {chosen['last_steps'] / beta:+.3g} nats "
            f"(chosen) and from {rejected['first_steps'] / beta:+.3g} to "
            f"{rejected['last_steps'] / beta:+.3g} (rejected)."]


def format_probe_report(report: dict) -> str:
    """The report as Markdown: the verdicts first, then the tables."""
    run, (s0, s1) = report["run"], report["probe_steps"]
    ref = report["reference"]
    lines = [f"# What {run['method']} did to the probes (step {s0} → {s1})", "",
             f"{run['objective']}; {run['optimizer']}, learning rate {run['learning_rate']:g}, "
             f"batch {run['batch_size']}, {run['steps']} steps on {run['train_pairs']} pairs of "
             f"{run['data']}; trained parameters: {run['train_params']} "
             f"({run['trained_parameters']:,}); probes: {run['probe_pairs']} held-out pairs of "
             f"{run['probe_data']}.", "",
             "- " + _verdict("chosen", report["chosen"]),
             "- " + _verdict("rejected", report["rejected"]),
             "- " + _verdict("margin (chosen − rejected)", report["margin"]).replace(
                 "log-prob ", ""),
             *_training_line(report),
             f"- Reference ({ref['model']}): {ref['direction']}.", ""]
    fell = report["chosen"]["fell_pairs"]
    if fell:
        lines += ["## Probe pairs whose chosen log-prob fell", "",
                  "| pair | log π_w before | after | Δ |", "|---|---|---|---|"]
        lines += [f"| {p['source']} | {p['start']:.2f} | {p['end']:.2f} | {p['change']:+.3g} |"
                  for p in fell]
        lines.append("")
    if report["responses"]:
        lines += ["## Probe responses", "",
                  "| field | kind | n | mean log π before | after | mean Δ | fell |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in sorted(report["responses"].items(), key=lambda kv: kv[1]["change"]):
            lines.append(f"| {name} | {s['kind']} | {s['n']} | {s['start']:.2f} | {s['end']:.2f} "
                         f"| {s['change']:+.3g} | {s['fell']:.0%} |")
        lines.append("")
    if report["geometry"]:
        lines += ["## Gradient geometry of the probe pairs", "", "| quantity | before | after |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v['start']:.4g} | {v['end']:.4g} |"
                  for k, v in report["geometry"].items()]
        lines.append("")
    if report["train_metrics"]:
        w = report["train_window"]
        lines += [f"## TRL metrics of the training batches (mean of the first and last {w} "
                  "steps)", "", "| metric | first | last |", "|---|---|---|"]
        lines += [f"| {k} | {v['first_steps']:.4g} | {v['last_steps']:.4g} |"
                  for k, v in report["train_metrics"].items()]
        lines.append("")
    return "\n".join(lines)


__all__ = ["RENSUTHERLAND", "format_probe_report", "probe_report"]
