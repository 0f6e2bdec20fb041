"""The filtering experiment: drop the training pairs a predictor flags as most at risk of losing
chosen likelihood, train, and compare with dropping as many pairs at random.

For each seed ``s`` and each removal rule (``none``: drop nothing; ``random``: ``k`` pairs drawn
uniformly with ``s``; a predictor: its ``k`` highest-risk pairs, the same set for every seed) a run
of the planned configuration with seed ``s`` trains on the pairs left. Measured from the start to
the end of each run:

- on the kept training pairs and on held-out pairs: the fraction whose log π_w fell, the mean
  Δlog π_w and the mean change of the margin Δ(log π_w − log π_l);
- on probe responses (``{field: Responses}``): the mean Δlog π of each field and of all of
  them (``all``).

On the kept training pairs a predictor's removal is partly selection (the pairs it dropped are
not counted any more); the held-out pairs and the probes carry no such effect.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from entangle_jax.data.pairs import Pairs
from entangle_jax.logprob import response_logprobs, sequence_logps
from entangle_jax.train.preference import PreferenceConfig, train_preference


def top_risk(risk, fraction: float) -> np.ndarray:
    """Sorted indices of the ``ceil(fraction · n)`` highest-risk pairs (ties: the earlier pair)."""
    risk = np.asarray(risk, float)
    k = math.ceil(fraction * len(risk))
    return np.sort(np.argsort(-risk, kind="stable")[:k])


def random_removal(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` of ``n`` pairs drawn uniformly without replacement with ``seed``."""
    return np.sort(np.random.default_rng([seed, 7]).choice(n, k, replace=False))


def _pair_changes(before, after, rows=None) -> dict:
    d_w, d_l = (np.asarray(a) - np.asarray(b) for a, b in zip(after, before))
    if rows is not None:
        d_w, d_l = d_w[rows], d_l[rows]
    return {"pairs": int(d_w.size), "fraction_chosen_fell": float(np.mean(d_w < 0)),
            "mean_delta_chosen": float(d_w.mean()), "mean_delta_margin": float((d_w - d_l).mean())}


def filtering_experiment(ckpt, config: PreferenceConfig, source: Mapping, train: Pairs,
                         removals: Mapping[str, np.ndarray | None], *, held: Pairs | None,
                         probes: Mapping, seeds: Sequence[int], fraction: float,
                         progress: Callable[[str], None] = lambda message: None) -> dict:
    """Run the experiment (module docstring). ``source`` holds ``train_preference``'s
    ``data``/``task`` arguments, whose training pairs are ``train``; ``removals`` maps each rule
    to the rows it drops (``None``: ``random``, drawn per seed). Returns ``{rule: {"removed":
    rows or None, "runs": [per seed: {"seed", "removed", "trained", "held_out", "probes"}],
    "mean": the runs' numbers averaged over seeds}}``."""
    graphdef, n = ckpt.graphdef, len(train)
    k = math.ceil(fraction * n)

    def measure(params):
        return (sequence_logps(graphdef, params, train),
                None if held is None else sequence_logps(graphdef, params, held),
                {field: response_logprobs(graphdef, params, responses)
                 for field, responses in probes.items()})

    start = measure(ckpt.params)
    out = {}
    for rule, fixed in removals.items():
        runs = []
        for seed in seeds:
            removed = random_removal(n, k, seed) if fixed is None else np.asarray(fixed, int)
            kept = np.setdiff1d(np.arange(n), removed)
            run = train_preference(ckpt, dataclasses.replace(config, seed=seed),
                                   train_rows=kept, progress=False, **source)
            end = measure(run.params)
            probe_deltas = {field: end[2][field] - start[2][field] for field in probes}
            runs.append({"seed": seed, "removed": removed.tolist(),
                         "trained": _pair_changes(start[0], end[0], kept),
                         "held_out": None if held is None else _pair_changes(start[1], end[1]),
                         "probes": None if not probes else {
                             **{field: float(np.mean(d)) for field, d in probe_deltas.items()},
                             "all": float(np.mean(np.concatenate(list(probe_deltas.values()))))}})
            progress(f"filtering: {rule}, seed {seed} done")
        out[rule] = {"removed": None if fixed is None else np.asarray(fixed).tolist(),
                     "runs": runs, "mean": _mean_over_runs(runs)}
    return out


def _mean_over_runs(runs: list[dict]) -> dict:
    """Every number of the runs' ``trained``/``held_out``/``probes`` averaged over the seeds,
    with its standard deviation over them (``{name: [mean, sd]}``)."""
    def mean_sd(part: str, name: str) -> list[float]:
        values = [run[part][name] for run in runs]
        return [float(np.mean(values)), float(np.std(values))]

    return {part: None if runs[0][part] is None else
            {name: mean_sd(part, name) for name in runs[0][part]}
            for part in ("trained", "held_out", "probes")}


__all__ = ["filtering_experiment", "random_removal", "top_risk"]
