"""Run the claims over every regime and seed: train (or reuse) each model once, measure what the
claims need on it, then judge each claim per regime with all seeds pooled.

Each claim's measurements on one model are saved as soon as they are taken
(``CACHE_DIR/measurements``, keyed by the settings, regime, seed and code like the models), so a
run that stops part way (hours on a real model) resumes where it stopped, and a run with more
claims or seeds reuses what an earlier one measured. The report is the same either way: it is
judged from the saved arrays themselves."""

from __future__ import annotations

import dataclasses
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from entangle_jax.config import ConfigError
from entangle_jax.io import atomic_write_npz
from entangle_jax.memory import peak_resident_mb
from entangle_jax.provenance import cache_key
from entangle_jax.data.tasks import make_task_data
from entangle_jax.pretrained import load_pretrained, pretrained_id
from entangle_jax.train.sft import cached_finetune, cached_sft
from entangle_jax.verify.claims import CLAIMS, Claim
from entangle_jax.verify.context import ModelContext, precision_scope
from entangle_jax.verify.regimes import VerifySettings
from entangle_jax.verify.report import build_report
from entangle_jax.verify.rules import Verdict


def select_claims(only: Sequence[str] | None = None) -> tuple[Claim, ...]:
    """The claims named in ``only`` (all when empty), in report order; an unknown id raises."""
    if not only:
        return CLAIMS
    known = {c.id: c for c in CLAIMS}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(f"claim {unknown[0]!r} is unknown; known: {', '.join(known)}")
    return tuple(c for c in CLAIMS if c.id in only)


def regime_model(settings: VerifySettings, regime, seed: int, *,
                 cache_dir: str | Path = ".cache/models", progress: bool = True):
    """The model of ``regime`` at ``seed``: a tiny model trained from scratch, or a pretrained
    one as shipped or fine-tuned on the seed's chat sentiment task (both cached)."""
    if regime.pretrained is None:
        return cached_sft(settings.model, settings.data_config(seed), regime.sft_config(seed),
                          cache_dir=cache_dir, progress=progress)
    base = load_pretrained(regime.pretrained)
    if regime.sft.steps == 0:
        return base
    task = make_task_data(settings.task_config(seed), base.tokenizer)
    return cached_finetune(base, pretrained_id(regime.pretrained), task,
                           regime.sft_config(seed), regime.train_params, cache_dir=cache_dir,
                           progress=progress)


def measurement_path(settings: VerifySettings, claim: Claim, regime, seed: int,
                     cache_dir: str | Path) -> Path:
    """Where ``claim``'s measurements on the model of ``regime`` at ``seed`` are kept: keyed by
    the settings (bar the seed list, which does not change one seed's numbers) and the code."""
    shared = {k: v for k, v in dataclasses.asdict(settings).items() if k != "seeds"}
    key = cache_key({"claim": claim.id, "settings": shared, "regime": regime.name, "seed": seed})
    return Path(cache_dir) / "measurements" / f"{claim.id}-{key}.npz"


def _load_measurement(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile):  # absent, or not a file this wrote
        return None


def run_verify(settings: VerifySettings, claims: Sequence[Claim] = CLAIMS, *,
               cache_dir: str | Path = ".cache/models", progress: bool = True,
               remeasure: bool = False, log: Callable[[str], None] = tqdm.write) -> dict:
    """Evaluate ``claims`` in every regime of ``settings``; returns the verify.json report.
    Measurements saved by an earlier run are reused unless ``remeasure``. Its ``timings`` end
    with the total seconds and the process's peak resident memory (``peak_memory_mb``).

    ``log`` receives one line per model: how long it took to train (or load) and to measure, or
    that its measurements were saved earlier (``measurement_path``)."""
    for claim in claims:
        settings.regime(claim.headline_regime)  # raises if the claim's own regime is missing
    start = time.perf_counter()
    timings = {"models": {}, "measure": {c.id: 0.0 for c in claims}, "evaluate": 0.0,
               "saved_earlier": 0}
    rows: dict[str, list[dict]] = {c.id: [] for c in claims}
    units = [(r, s) for r in settings.regimes for s in settings.seeds]
    bar = tqdm(units, desc="verify", disable=not progress, leave=False)
    measured: dict[str, list[dict]] = {}
    for regime, seed in bar:
        bar.set_postfix_str(f"{regime.name} seed {seed}")
        if seed == settings.seeds[0]:
            measured = {c.id: [] for c in claims}
        paths = {c.id: measurement_path(settings, c, regime, seed, cache_dir) for c in claims}
        saved = {c.id: None if remeasure else _load_measurement(paths[c.id]) for c in claims}
        todo = [c for c in claims if saved[c.id] is None]
        parts = [f"{c.id} saved earlier" for c in claims if saved[c.id] is not None]
        timings["saved_earlier"] += len(claims) - len(todo)
        if todo:
            t0 = time.perf_counter()
            ckpt = regime_model(settings, regime, seed, cache_dir=cache_dir, progress=progress)
            t_model = time.perf_counter() - t0
            timings["models"][f"{regime.name}/seed{seed}"] = t_model
            parts.insert(0, f"model {t_model:.1f}s")
            with precision_scope(settings):
                ctx = ModelContext(ckpt, regime, seed, settings)
                for claim in todo:
                    t0 = time.perf_counter()
                    saved[claim.id] = {k: np.asarray(v) for k, v in claim.measure(ctx).items()}
                    atomic_write_npz(paths[claim.id], saved[claim.id])
                    dt = time.perf_counter() - t0
                    timings["measure"][claim.id] += dt
                    parts.append(f"{claim.id} {dt:.1f}s")
        for claim in claims:
            measured[claim.id].append(saved[claim.id])
        log(f"{regime.name} seed {seed}: " + ", ".join(parts))
        if seed == settings.seeds[-1]:
            t0 = time.perf_counter()
            for claim in claims:
                evaluation = claim.evaluate(measured[claim.id], settings)
                row = evaluation.to_row(regime.name, list(settings.seeds))
                if regime.name in claim.expected:
                    verdict, reason = claim.expected[regime.name]
                    row["expected"] = {"verdict": verdict, "reason": reason,
                                       "as_expected": row["verdict"] == verdict}
                rows[claim.id].append(row)
            timings["evaluate"] += time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    timings["peak_memory_mb"] = peak_resident_mb()
    return build_report(settings, claims, rows, timings)


def exit_status(report: dict) -> int:
    """0 when every claim holds in its own regime, 1 otherwise."""
    return 0 if all(c["headline_verdict"] == Verdict.HOLDS.value for c in report["claims"]) else 1
