"""What a claim is: a statement, the regime its hypothesis describes, a measurement per model and
an evaluation over the seeds of one regime."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from entangle_jax.verify import stats
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.regimes import VerifySettings
from entangle_jax.verify.rules import Check, Evaluation, Rule

Measurement = dict[str, np.ndarray]


@dataclass(frozen=True)
class Claim:
    """``measure`` runs once per (regime, seed) model and returns per-pair arrays (leading axis:
    pairs); ``evaluate`` pools one regime's seeds into an ``Evaluation``. ``expected`` records, for
    regimes that serve as negative controls, the verdict predicted from the mechanism before the
    run, with the reason (the report shows whether it came true)."""

    id: str
    statement: str
    headline_regime: str
    measure: Callable[[ModelContext], Measurement]
    evaluate: Callable[[Sequence[Measurement], VerifySettings], Evaluation]
    expected: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def column(per_seed: Sequence[Measurement], name: str) -> list[np.ndarray]:
    """One measured array per seed."""
    return [np.asarray(m[name]) for m in per_seed]


def check(statistic_name: str, statistic: stats.Statistic, per_seed: Sequence[np.ndarray],
          rule: Rule, settings: VerifySettings) -> Check:
    """The statistic over all pairs and seeds, its bootstrap interval and its rule."""
    return Check(statistic_name, stats.statistic_value(statistic, per_seed),
                 stats.bootstrap_ci(statistic, per_seed, n_boot=settings.n_boot), rule)


def pooled(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(x) for x in per_seed])


def median(per_seed: Sequence[np.ndarray]) -> float:
    return float(np.median(pooled(per_seed)))


def mean_ci(per_seed: Sequence[np.ndarray], settings: VerifySettings) -> dict:
    """``{"mean", "ci"}`` of a per-pair quantity (for the details of a report)."""
    return {"mean": stats.statistic_value(stats.mean, per_seed),
            "ci": list(stats.bootstrap_ci(stats.mean, per_seed, n_boot=settings.n_boot))}
