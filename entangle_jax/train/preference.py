"""Preference training from a checkpoint: any objective of the zoo, any mitigation, SGD or Adam.

The policy starts at the checkpoint and the reference is the same checkpoint, frozen (its
per-token log-probs are computed inside each step, never differentiated). Each step draws a batch of
training pairs, asks the update rule (``mitigations.Plain``/``PairwiseNormalized``/``TokenMask``)
for its token coefficients and descends ``−u`` (``dynamics.coefficient_update``) through the optax
optimizer; for ``Plain`` this is exactly the gradient of the batch's mean loss.

Logged per step, with TRL's metric names: ``loss``, ``logps/chosen``, ``logps/rejected``,
``rewards/chosen`` = β(log π_w − log π_ref,w), ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies`` (β is the objective's ``beta``, 1 for losses without one), plus
``grad_norm`` and the mean weights ``weights/d_w``, ``weights/d_l``. Every ``probe_every`` steps
(and before the first and after the last) on a fixed probe set from the eval split: the mean
``probe/grad_inner`` ⟨g_w, g_l⟩, ``probe/grad_norm_chosen``, ``probe/grad_norm_rejected``,
``probe/grad_cosine``, ``probe/logps/*``, the fractions ``probe/case_1..4`` of the first-order
cases of the method's own per-pair update, the mean weights ``probe/d_w``, ``probe/d_l`` and
``probe/frac_d_nonpositive`` (pairs with d_w ≤ 0 or d_l ≤ 0, where case 4 is not excluded: IPO and
SPPO past their targets). With probe responses (a data file carrying Ren & Sutherland's fields) the
probe records also hold per pair ``probe/pairs/*`` and per field ``probe/responses/<field>`` (mean)
and ``probe/pairs/responses/<field>`` (per prompt, in the header's ``rows`` order). Each record
is one JSON line, written and flushed as it is produced.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from entangle_jax.checkpoint import Checkpoint
from entangle_jax.condition import case_fractions
from entangle_jax.config import (ConfigError, nonnegative_ints, one_of, positive_ints, require,
                                 to_dict)
from entangle_jax.data.pairs import Pairs
from entangle_jax.data.records import PROBE_KINDS, DataError
from entangle_jax.data.tasks import make_task_data, task_pairs
from entangle_jax.dynamics import coefficient_surrogate, step_check
from entangle_jax.guards import check_finite, finite_flags
from entangle_jax.logprob import pair_logprobs, response_logprobs
from entangle_jax.mitigations import (Mitigation, TokenMask, UpdateRule, make_method,
                                      pair_lengths)
from entangle_jax.objectives import get_objective
from entangle_jax.optimizers import Optimizer, make_optimizer
from entangle_jax.sharding import replicate, shard_batch
from entangle_jax.train.subsets import AllParams, parse_subset


@dataclass(frozen=True)
class PreferenceConfig:
    """Preference training. ``hparams`` override the objective's defaults (a mapping is stored as
    sorted ``(name, value)`` pairs). ``mitigation``: ``none``, ``normalized`` (``balanced`` uses
    the mean of d_w, d_l on both sides) or ``token_mask`` (``mask_l1`` = λ,
    ``mask_learning_rate``). ``suffix_length`` picks the pair shape (0 single, 2 short, 6 long).
    ``probe_every=0`` turns the probes off. ``train_params`` names the trained parameters
    (``train.subsets``: ``all``, ``last:K``, ``lora:R``); ``stratify`` draws class-balanced
    batches (``draw_batches``)."""

    objective: str = "dpo"
    hparams: Any = ()
    mitigation: Mitigation = "none"
    balanced: bool = False
    mask_l1: float = TokenMask.l1
    mask_learning_rate: float = TokenMask.mask_learning_rate
    optimizer: Optimizer = "adam"
    learning_rate: float = 1e-4
    steps: int = 100
    batch_size: int = 32
    suffix_length: int = 6
    probe_every: int = 10
    probe_size: int = 64
    train_params: str = "all"
    stratify: bool = False
    seed: int = 0

    def __post_init__(self):
        hparams = self.hparams.items() if isinstance(self.hparams, Mapping) else self.hparams
        object.__setattr__(self, "hparams", tuple(sorted((str(k), v) for k, v in hparams)))
        self.make_objective()  # an unknown objective or bad hyperparameter fails here
        one_of(self, "mitigation", Mitigation)
        one_of(self, "optimizer", Optimizer)
        for field in ("learning_rate", "mask_learning_rate"):
            value = getattr(self, field)
            require(self, field, isinstance(value, (int, float)) and math.isfinite(value)
                    and value > 0, "must be a finite number > 0")
        require(self, "mask_l1", isinstance(self.mask_l1, (int, float)) and self.mask_l1 >= 0,
                "must be >= 0")
        positive_ints(self, "steps", "batch_size", "probe_size")
        require(self, "stratify", isinstance(self.stratify, bool), "must be true or false")
        nonnegative_ints(self, "probe_every", "seed", "suffix_length")
        subset = self.subset()
        require(self, "train_params", self.mitigation != "normalized"
                or isinstance(subset, AllParams),
                "must be 'all' with the normalized mitigation (its norms are those of the "
                "gradients over every parameter)")

    def subset(self):
        return parse_subset(self.train_params)

    def make_objective(self):
        return get_objective(self.objective, **dict(self.hparams))

    def make_method(self) -> UpdateRule:
        return make_method(self.make_objective(), self.mitigation, balanced=self.balanced,
                           mask_l1=self.mask_l1, mask_learning_rate=self.mask_learning_rate)


@dataclass(frozen=True)
class PreferenceRun:
    """The trained parameters (all of them, the frozen ones included), the method's side state
    (the token mask, or None) and every log record (the JSONL lines, as dicts)."""

    params: Any
    extra: Any
    records: list[dict]


@dataclass(frozen=True)
class PreferenceSets:
    """What a run trains on and probes: ``train`` pairs, ``probe`` pairs, the probe responses of
    the probe prompts (``{field: ProbeSet}``, empty without them), for the sentiment task each
    training pair's class (``labels[i]``: its chosen response is the positive answer) and, for a
    data file, where each probe pair is (``file:line``)."""

    train: Pairs
    probe: Pairs
    responses: dict
    labels: np.ndarray | None = None
    probe_sources: tuple[str, ...] = ()

    def restricted(self, rows) -> "PreferenceSets":
        """The same sets training on the pairs ``train[rows]`` only."""
        rows = np.asarray(rows)
        return dataclasses.replace(self, train=self.train[rows],
                                   labels=None if self.labels is None else self.labels[rows])


def preference_pairs(ckpt: Checkpoint, config: "PreferenceConfig", data=None,
                     probe_data=None, task=None) -> PreferenceSets:
    """Training and probe pairs for a run from ``ckpt``.

    - ``data`` (a ``PreferenceData``, encoded with the checkpoint's tokenizer) trains; the probes
      are the first ``probe_size`` records of ``probe_data`` (held-out prompts, with their probe
      responses) or, without it, a fixed sample of the training pairs (drawn with ``seed``).
    - Without ``data``, a checkpoint trained on a user's file trains on that file, as above.
    - Otherwise the sentiment task (``task``, a task's data of ``data.tasks``, or the one the
      checkpoint was trained on): the train split and the first ``probe_size`` eval statements,
      with suffixes of ``suffix_length``."""
    from entangle_jax.data.userdata import encode_pairs, encode_probes, load_from_config

    if data is None and ckpt.user_data is not None:
        data = load_from_config(ckpt.user_data)
    if data is not None:
        max_len = ckpt.model_config.max_len
        train_set = encode_pairs(data, ckpt.tokenizer, range(len(data.records)), max_len)
        train = train_set.pairs
        if probe_data is None:
            n = len(train)
            pick = np.random.default_rng([config.seed, 4]).choice(
                n, min(config.probe_size, n), replace=False)
            pick = np.sort(pick)
            return PreferenceSets(train, train[pick], {}, probe_sources=tuple(
                data.records[train_set.indices[k]].where for k in pick))
        probe = encode_pairs(probe_data, ckpt.tokenizer,
                             range(min(config.probe_size, len(probe_data.records))), max_len)
        return PreferenceSets(train, probe.pairs,
                              encode_probes(probe_data, ckpt.tokenizer, probe, max_len),
                              probe_sources=tuple(probe_data.records[k].where
                                                  for k in probe.indices))
    if task is None:
        if ckpt.data_config is None:
            raise ConfigError("the checkpoint records no data config; preference pairs need one "
                              "(give a data file)")
        task = make_task_data(ckpt.data_config, ckpt.tokenizer)
    if config.suffix_length > task.config.max_suffix_length:
        raise ConfigError(f"suffix_length={config.suffix_length} is invalid: the task allows "
                          f"0..{task.config.max_suffix_length}")

    def make(statements):
        return task_pairs(task, ckpt.tokenizer, statements, config.suffix_length,
                          ckpt.model_config.max_len)

    return PreferenceSets(make(task.train), make(task.eval[:config.probe_size]), {},
                          np.asarray([s.positive for s in task.train]))


def draw_batches(n_train: int, config: "PreferenceConfig", labels=None) -> np.ndarray:
    """``[steps, batch_size]`` indices of the training pairs each step draws (without replacement
    within a step; deterministic for ``config.seed``). With ``config.stratify`` every batch holds
    the two classes of ``labels`` in equal numbers (the odd one alternating), so no step favours
    one class; plain draws follow the sample's imbalance."""
    rng = np.random.default_rng([config.seed, 3])
    if not config.stratify:
        return np.stack([rng.choice(n_train, config.batch_size, replace=False)
                         for _ in range(config.steps)])
    if labels is None:
        raise ConfigError("stratify=True needs class labels (the sentiment task has them; a data "
                          "file does not)")
    classes = [np.flatnonzero(np.asarray(labels) == c) for c in (True, False)]
    batches = []
    for step in range(config.steps):
        first = config.batch_size // 2 + (config.batch_size % 2) * (step % 2)
        sizes = (first, config.batch_size - first)
        if any(size > len(idx) for size, idx in zip(sizes, classes)):
            raise ConfigError(f"batch_size={config.batch_size} is invalid with stratify: a class "
                              f"has only {min(map(len, classes))} pairs")
        batch = np.concatenate([rng.choice(idx, size, replace=False)
                                for idx, size in zip(classes, sizes)])
        batches.append(rng.permutation(batch))
    return np.stack(batches)


def _mean(x) -> float:
    return float(np.mean(np.asarray(x)))


def _step_metrics(beta: float, out: dict) -> dict:
    reward_w = beta * (out["logp_w"] - out["ref_w"])
    reward_l = beta * (out["logp_l"] - out["ref_l"])
    return {"loss": out["loss"].mean(), "logps/chosen": out["logp_w"].mean(),
            "logps/rejected": out["logp_l"].mean(), "rewards/chosen": reward_w.mean(),
            "rewards/rejected": reward_l.mean(), "rewards/margins": (reward_w - reward_l).mean(),
            "rewards/accuracies": (reward_w > reward_l).mean(),
            "weights/d_w": out["d_w"].mean(), "weights/d_l": out["d_l"].mean()}


# Module-level jits with hashable static arguments: runs of the same method, optimizer and
# parameter subset share one compilation (objectives and methods compare by value), whatever
# their learning rate, which ``opt_state`` carries (``make_optimizer``).
@partial(jax.jit, static_argnames=("graphdef", "method", "optimizer", "subset"))
def _train_step(trainable, opt_state, extra, batch, ref_tok_w, ref_tok_l, base, *, graphdef,
                method, optimizer, subset):
    tx = make_optimizer(optimizer, 1.0)  # its update reads the rate from opt_state
    params = subset.apply(base, trainable)
    c_w, c_l, out = method.coefficients(graphdef, params, extra, batch, ref_tok_w, ref_tok_l)
    surrogate = partial(coefficient_surrogate, graphdef, pairs=batch, coef_w=c_w, coef_l=c_l)
    grads = jax.tree.map(jnp.negative,
                         jax.grad(lambda t: surrogate(subset.apply(base, t)))(trainable))
    updates, opt_state = tx.update(grads, opt_state, trainable)
    extra = method.update_extra(extra, out, ref_tok_w, ref_tok_l, *pair_lengths(batch))
    metrics = {**_step_metrics(method.objective.beta, out), "grad_norm": optax.tree.norm(grads)}
    new_trainable = optax.apply_updates(trainable, updates)
    flags = finite_flags(loss=out["loss"], log_probs=(out["logp_w"], out["logp_l"]),
                         gradient=grads, parameters=new_trainable)
    return new_trainable, opt_state, extra, metrics, flags


@partial(jax.jit, static_argnames=("graphdef", "method"))
def _probe_coefficients(params, extra, probe, ref_tok_w, ref_tok_l, *, graphdef, method):
    c_w, c_l, out = method.coefficients(graphdef, params, extra, probe, ref_tok_w, ref_tok_l)
    return c_w, c_l, out


def train_preference(ckpt: Checkpoint, config: PreferenceConfig, *, data=None, probe_data=None,
                     task=None, train_rows=None, log_path: str | Path | None = None,
                     progress: bool = True, mesh=None) -> PreferenceRun:
    """Train ``config``'s method from ``ckpt`` (policy and frozen reference) on the pairs of
    ``preference_pairs`` (``data`` and held-out ``probe_data``, both ``PreferenceData``, or the
    checkpoint's own data), or on the training pairs ``train_rows`` of them only; returns the
    final parameters and the log records, also written to ``log_path`` (JSONL) when given. The
    reference's per-token log-probs are computed once, before the first step. Deterministic for
    ``config.seed``. With a ``mesh``
    (``sharding.batch_mesh()``) each batch is split over its devices and the parameters
    replicated; the batch size must then be a multiple of the device count."""
    method, subset = config.make_method(), config.subset()
    objective = method.objective
    graphdef = ckpt.graphdef
    sets = preference_pairs(ckpt, config, data, probe_data, task)
    if train_rows is not None:
        sets = sets.restricted(train_rows)
    train, probe = sets.train, sets.probe
    if config.batch_size > len(train):
        raise ConfigError(f"batch_size={config.batch_size} is invalid: only {len(train)} "
                          "training pairs")
    if mesh is not None and config.batch_size % mesh.devices.size:
        raise ConfigError(f"batch_size={config.batch_size} is invalid: must be a multiple of the "
                          f"{mesh.devices.size} devices of the mesh")
    batches = draw_batches(len(train), config, sets.labels)
    # reference log-probs of the pairs the run draws only (a short run draws few of a large set)
    drawn = np.unique(batches)
    ref_drawn = pair_logprobs(graphdef, ckpt.params, train[drawn])
    ref_row = np.zeros(len(train), int)
    ref_row[drawn] = np.arange(len(drawn))
    ref_probe = pair_logprobs(graphdef, ckpt.params, probe)
    base = ckpt.params if mesh is None else replicate(ckpt.params, mesh)
    place = (lambda batch: batch) if mesh is None else partial(shard_batch, mesh=mesh)
    tx = make_optimizer(config.optimizer, config.learning_rate)
    static = dict(graphdef=graphdef, method=method, optimizer=config.optimizer, subset=subset)

    def run_probe(step, params, extra) -> dict:
        c_w, c_l, out = _probe_coefficients(params, extra, probe, *ref_probe,
                                            graphdef=graphdef, method=method)
        d_w, d_l = np.asarray(out["d_w"]), np.asarray(out["d_l"])
        check = step_check(graphdef, params, probe, np.asarray(c_w), np.asarray(c_l))
        record = {"kind": "probe", "step": step,
                  "probe/logps/chosen": _mean(out["logp_w"]),
                  "probe/logps/rejected": _mean(out["logp_l"]),
                  "probe/d_w": _mean(d_w), "probe/d_l": _mean(d_l),
                  "probe/frac_d_nonpositive": _mean((d_w <= 0) | (d_l <= 0)),
                  "probe/grad_inner": _mean(check.inner),
                  "probe/grad_norm_chosen": _mean(np.sqrt(check.sq_norm_w)),
                  "probe/grad_norm_rejected": _mean(np.sqrt(check.sq_norm_l)),
                  "probe/grad_cosine": _mean(check.cosine),
                  **{f"probe/{k}": v for k, v in case_fractions(check.predicted_case).items()}}
        if sets.responses:
            record["probe/pairs/logps_chosen"] = np.asarray(out["logp_w"]).tolist()
            record["probe/pairs/logps_rejected"] = np.asarray(out["logp_l"]).tolist()
            record["probe/pairs/grad_inner"] = np.asarray(check.inner).tolist()
            for name, probe_set in sets.responses.items():
                logps = response_logprobs(graphdef, params, probe_set.responses)
                record[f"probe/responses/{name}"] = _mean(logps)
                record[f"probe/pairs/responses/{name}"] = np.asarray(logps).tolist()
        if isinstance(method, TokenMask):
            mask = np.asarray(extra)[:int(np.max(np.asarray(probe.chosen.length)))]
            record["mask/sentiment_share"] = float(mask[0] / mask.sum()) if mask.sum() else 0.0
            record["mask/weights"] = [float(m) for m in mask]
        return record

    trainable = subset.init(base, jax.random.key(config.seed))
    header = {"kind": "config", "method": method.name, "objective": objective.describe(),
              "reward_beta": float(objective.beta),
              "config": to_dict(config), "model_config": to_dict(ckpt.model_config),
              "data_config": None if ckpt.data_config is None else to_dict(ckpt.data_config),
              "user_data": None if ckpt.user_data is None else to_dict(ckpt.user_data),
              "data": None if data is None else to_dict(data.config),
              "probe_data": None if probe_data is None else to_dict(probe_data.config),
              "sft_config": None if ckpt.sft_config is None else to_dict(ckpt.sft_config),
              "train_pairs": len(train), "probe_pairs": len(probe),
              **({} if train_rows is None else
                 {"train_rows": [int(r) for r in np.asarray(train_rows)]}),
              "trained_parameters": sum(int(x.size) for x in jax.tree.leaves(trainable)),
              "probe_sources": list(sets.probe_sources),
              "probe_responses": {name: {"kind": PROBE_KINDS.get(name, name),
                                         "prompts": len(probe_set.rows),
                                         "rows": [int(r) for r in probe_set.rows]}
                                  for name, probe_set in sets.responses.items()}}
    records: list[dict] = []
    log = None if log_path is None else _open_log(log_path)

    def emit(record):
        records.append(record)
        if log is not None:
            log.write(json.dumps(record, sort_keys=True) + "\n")
            log.flush()

    try:
        emit(header)
        extra = method.init_extra(train.chosen.window)
        opt_state = tx.init(trainable)
        probing = config.probe_every > 0
        if probing:
            emit(run_probe(0, base, extra))
        bar = tqdm(range(1, config.steps + 1), desc=method.name, disable=not progress)
        for step in bar:
            idx = batches[step - 1]
            trainable, opt_state, extra, metrics, flags = _train_step(
                trainable, opt_state, extra, place(train[idx]),
                ref_drawn[0][ref_row[idx]], ref_drawn[1][ref_row[idx]], base, **static)
            check_finite(step, flags)  # NaN/Inf stops the run, naming the step and quantity
            record = {"kind": "train", "step": step,
                      **{k: float(v) for k, v in jax.device_get(metrics).items()}}
            emit(record)
            bar.set_postfix({"loss": f"{record['loss']:.4f}",
                             "logp_w": f"{record['logps/chosen']:.3f}",
                             "logp_l": f"{record['logps/rejected']:.3f}",
                             "acc": f"{record['rewards/accuracies']:.2f}"}, refresh=False)
            if probing and (step % config.probe_every == 0 or step == config.steps):
                emit(run_probe(step, subset.apply(base, trainable), extra))
    finally:
        if log is not None:
            log.close()
    return PreferenceRun(subset.apply(base, trainable), extra, records)


def _open_log(path: str | Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8")


def read_log(path: str | Path) -> list[dict]:
    """The records of a JSONL log. A truncated last line (from a crash) is skipped; a bad line
    before it means the file is not such a log and raises ``DataError``."""
    records = []
    lines = Path(path).read_text("utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise DataError(f"{path}:{number}: not a JSON record (only the last line of a log "
                            "may be cut short)") from None
    return records


__all__ = ["PreferenceConfig", "PreferenceRun", "PreferenceSets", "draw_batches",
           "preference_pairs", "read_log",
           "train_preference"]
