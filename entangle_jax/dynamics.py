"""How updates move log π_w and log π_l: the real steps against the first-order prediction.

The closed-form condition is ``condition``. Updates are given in token-coefficient form,
``u = Σ_i c_w,i g_w^i − c_l,i g_l^i`` over the per-token gradients of each response: a plain
objective has ``c = d`` on every token, the pairwise-normalized update ``c = d/‖g‖``, a token mask
``c_i = d m_i``. One compiled function therefore serves every objective and mitigation.
``step_check`` takes one real step per pair and measures it against the first-order rates
``⟨g, u⟩``.

Beyond one pair, the first-order change of any log-prob f under an arbitrary parameter update u is
``⟨∇f, u⟩`` (a Jacobian-vector product): ``update_changes``. ``batch_update_check`` compares it, the
per-pair formula and the real change for one optax step on a batch (SGD: the empirical-NTK form
with all cross-pair terms; Adam: a preconditioned, sign-like update the formula does not describe).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from entangle_jax import memory
from entangle_jax.chunking import chunk_indices, map_chunks, real_rows
from entangle_jax.condition import GradientCondition, case_fractions, case_of, gradient_condition
from entangle_jax.config import ConfigError
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.gradients import pair_geometry
from entangle_jax.logprob import (batch_sequence_logprobs, pair_token_logprobs, sequence_logprob,
                                  sequence_logps, token_logprobs)
from entangle_jax.models import in_precision
from entangle_jax.objectives import Objective
from entangle_jax.optimizers import make_optimizer
from entangle_jax.sharding import padded_size, replicate, shard_batch


def coefficient_surrogate(graphdef, params, pairs: Pairs, coef_w, coef_l):
    """``(1/B) Σ_b Σ_i c_w,bi log π(y_w,b,i | …) − c_l,bi log π(y_l,b,i | …)`` with the
    coefficients ``[B, W]`` held fixed: its gradient is the update ``u``. Traceable."""
    tok_w, tok_l = pair_token_logprobs(graphdef, params, pairs)
    return (jnp.sum(coef_w * tok_w) - jnp.sum(coef_l * tok_l)) / tok_w.shape[0]


def coefficient_update(graphdef, params, pairs: Pairs, coef_w, coef_l):
    """``u = (1/B) Σ_b Σ_i c_w,bi g_w,b^i − c_l,bi g_l,b^i`` for coefficients ``[B, W]``: the
    gradient of ``coefficient_surrogate``. For ``c = d`` it is minus the gradient of the batch's
    mean objective loss. Traceable."""
    return jax.grad(coefficient_surrogate, argnums=1)(graphdef, params, pairs, coef_w, coef_l)


@partial(jax.jit, static_argnums=0)
def _step_chunk(graphdef, params, pairs: Pairs, coef_w, coef_l, lrs):
    def one(pair: Pairs, c_w, c_l):
        f_w = partial(sequence_logprob, graphdef, seq=pair.chosen)
        f_l = partial(sequence_logprob, graphdef, seq=pair.rejected)
        g_w, g_l = jax.grad(f_w)(params), jax.grad(f_l)(params)
        # u = Σ_i c_w,i g_w^i − c_l,i g_l^i: with one coefficient a response, c_w g_w − c_l g_l;
        # per token, the gradient of the coefficient-weighted surrogate (two more backward passes)
        if c_w.ndim == 0:
            u = jax.tree.map(lambda a, b: c_w * a - c_l * b, g_w, g_l)
        else:
            u = jax.grad(lambda p: jnp.vdot(c_w, token_logprobs(graphdef, p, pair.chosen))
                         - jnp.vdot(c_l, token_logprobs(graphdef, p, pair.rejected)))(params)

        def moved(lr):  # every log-prob, the unmoved one too, through the same computation
            p = jax.tree.map(lambda x, d: x + lr.astype(x.dtype) * d, params, u)
            return f_w(p), f_l(p)

        at_w, at_l = jax.vmap(moved)(jnp.concatenate([jnp.zeros(1, lrs.dtype), lrs]))
        dot = optax.tree.vdot
        return (at_w[0], at_l[0], dot(g_w, g_w), dot(g_l, g_l), dot(g_w, g_l), dot(g_w, u),
                dot(g_l, u), at_w[1:] - at_w[0], at_l[1:] - at_l[0])

    return jax.vmap(one)(pairs, coef_w, coef_l)


@struct.dataclass
class OneStepCheck:
    """One real gradient step per pair against its first-order prediction.

    Per pair ``[B]``: log-probs before the step, the geometry ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩, the
    first-order rates ``rate = ⟨g, u⟩`` (so the predicted change at step size η is ``η · rate``)
    and the measured changes ``actual_{w,l}[k, b]`` after the step of size ``lrs[k]``.
    ``d_w``/``d_l`` hold the objective weights when the update is a plain objective's (NaN for a
    token-weighted update)."""

    lrs: np.ndarray
    logp_w: np.ndarray
    logp_l: np.ndarray
    sq_norm_w: np.ndarray
    sq_norm_l: np.ndarray
    inner: np.ndarray
    rate_w: np.ndarray
    rate_l: np.ndarray
    actual_w: np.ndarray
    actual_l: np.ndarray
    d_w: np.ndarray
    d_l: np.ndarray

    @property
    def cosine(self) -> np.ndarray:
        return self.inner / np.sqrt(self.sq_norm_w * self.sq_norm_l)

    def predicted(self, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """First-order changes ``(Δlog π_w, Δlog π_l)`` at step size ``lrs[k]``."""
        return self.lrs[k] * self.rate_w, self.lrs[k] * self.rate_l

    def condition(self, k: int = 0) -> GradientCondition:
        """The closed-form condition from d_w, d_l and the geometry (plain objectives only)."""
        return gradient_condition(self.d_w, self.d_l, self.sq_norm_w, self.sq_norm_l, self.inner,
                                  self.lrs[k])

    @property
    def predicted_case(self) -> np.ndarray:
        return case_of(self.rate_w, self.rate_l)

    def actual_case(self, k: int = 0) -> np.ndarray:
        return case_of(self.actual_w[k], self.actual_l[k])

    def errors(self, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``|actual − predicted|`` for the chosen and the rejected response at ``lrs[k]``."""
        pred_w, pred_l = self.predicted(k)
        return np.abs(self.actual_w[k] - pred_w), np.abs(self.actual_l[k] - pred_l)

    def relative_error(self, k: int = 0) -> np.ndarray:
        """``[2B]`` ``|actual − predicted| / |predicted|`` over both responses of every pair."""
        err = np.concatenate(self.errors(k))
        pred = np.abs(np.concatenate(self.predicted(k)))
        with np.errstate(divide="ignore", invalid="ignore"):
            return err / pred

    def sign_agreement(self, k: int = 0) -> tuple[float, float]:
        """Fraction of pairs whose measured Δlog π_w (resp. Δlog π_l) has the predicted sign."""
        return (float(np.mean(np.sign(self.actual_w[k]) == np.sign(self.rate_w))),
                float(np.mean(np.sign(self.actual_l[k]) == np.sign(self.rate_l))))

    def mean_error(self) -> np.ndarray:
        """``[K]`` mean ``|actual − predicted|`` over both responses of every pair, per step size."""
        return np.array([np.mean(np.concatenate(self.errors(k))) for k in range(len(self.lrs))])

    def error_order(self) -> float:
        """The slope of log(mean error) against log(η) over the step sizes: 2 for an O(η²) error
        (halving η quarters it). NaN with fewer than two step sizes; the step sizes must be
        positive (``select`` them)."""
        if len(self.lrs) < 2:
            return float("nan")
        return float(np.polyfit(np.log(self.lrs), np.log(self.mean_error()), 1)[0])

    def select(self, ks) -> "OneStepCheck":
        """The same check restricted to the step sizes ``lrs[ks]`` (an index array or slice)."""
        return self.replace(lrs=self.lrs[ks], actual_w=self.actual_w[ks],
                            actual_l=self.actual_l[ks])

    def summary(self, k: int = 0) -> dict:
        """The headline numbers at ``lrs[k]`` (JSON-ready)."""
        agree_w, agree_l = self.sign_agreement(k)
        pred_w, pred_l = self.predicted(k)
        return {
            "pairs": int(len(self.rate_w)), "lr": float(self.lrs[k]),
            "predicted": case_fractions(self.predicted_case),
            "actual": case_fractions(self.actual_case(k)),
            "case_agreement": float(np.mean(self.predicted_case == self.actual_case(k))),
            "sign_agreement_w": agree_w, "sign_agreement_l": agree_l,
            "mean_predicted_w": float(np.mean(pred_w)), "mean_actual_w": float(np.mean(self.actual_w[k])),
            "mean_predicted_l": float(np.mean(pred_l)), "mean_actual_l": float(np.mean(self.actual_l[k])),
            "median_relative_error": float(np.nanmedian(self.relative_error(k))),
            "mean_error": [float(e) for e in self.mean_error()],
            "lrs": [float(x) for x in self.lrs],
            "error_order": self.error_order(),
            "mean_inner": float(np.mean(self.inner)), "mean_cosine": float(np.mean(self.cosine)),
        }


def _sequences_per_chunk(graphdef, params, responses: Responses, *, copies: int, passes: int,
                         cap: int) -> int:
    """Items per chunk when each holds ``copies`` parameter-sized arrays and the activations of
    ``passes`` forward passes (``memory.fit``)."""
    config = nnx.merge(graphdef, params).config
    per_item = (copies * memory.tree_bytes(params)
                + passes * memory.activation_bytes(config, responses.tokens.shape[-1]))
    return memory.fit(per_item, cap)


def step_check(graphdef, params, pairs: Pairs, coef_w, coef_l, lrs: Sequence[float] = (), *,
               chunk_size: int | None = None, progress: Callable | None = None) -> OneStepCheck:
    """For every pair alone: the update ``u = Σ_i c_w,i g_w^i − c_l,i g_l^i`` (coefficients ``[B]``,
    the same on every token, or ``[B, W]`` per token), its first-order rates ⟨g_w, u⟩, ⟨g_l, u⟩,
    and the real changes of log π_w, log π_l after ``θ + η u`` for each η in ``lrs`` (may be
    empty: rates and geometry only; a negative η steps against the update, from the same
    gradients). By default as many pairs at once as fit the memory budget
    (each holds three gradients and a moved copy of the parameters per step size), up to 16."""
    n, window = len(pairs), pairs.chosen.window
    if chunk_size is None:
        chunk_size = _sequences_per_chunk(graphdef, params, pairs.chosen,
                                          copies=4 + len(lrs), passes=6 + 2 * len(lrs), cap=16)
    coef_w, coef_l = np.asarray(coef_w), np.asarray(coef_l)
    uniform = coef_w.ndim == 1
    if coef_w.shape != ((n,) if uniform else (n, window)) or coef_l.shape != coef_w.shape:
        raise ValueError(f"coefficients of shapes {coef_w.shape} and {coef_l.shape} for {n} "
                         f"pairs: give [B] (one a response) or [B, {window}] (one a token)")
    dtype = jax.tree.leaves(params)[0].dtype
    lrs_arr = jnp.asarray(np.asarray(lrs, np.float64), dtype)
    if not np.all(np.isfinite(lrs)) or np.any(np.asarray(lrs) == 0):
        raise ConfigError(f"step sizes {list(lrs)} are invalid: each must be finite and nonzero")
    out = map_chunks(lambda chunk: _step_chunk(graphdef, params, *chunk, lrs_arr),
                     (pairs, jnp.asarray(coef_w, dtype), jnp.asarray(coef_l, dtype)), n,
                     chunk_size, progress=progress)
    logp_w, logp_l, sq_w, sq_l, inner, rate_w, rate_l, act_w, act_l = out
    nan = np.full(n, np.nan)
    return OneStepCheck(np.asarray(lrs, np.float64), logp_w, logp_l, sq_w, sq_l, inner, rate_w,
                        rate_l, act_w.T, act_l.T, coef_w if uniform else nan,
                        coef_l if uniform else nan)


def objective_weights(objective: Objective, pairs: Pairs, logp_w, logp_l, ref_w, ref_l):
    """``(d_w, d_l)`` of ``objective`` for every pair (host arrays)."""
    d_w, d_l = objective.weights(logp_w, logp_l, ref_w, ref_l, pairs.chosen.length,
                                 pairs.rejected.length)
    return np.asarray(d_w), np.asarray(d_l)


def one_step_check(graphdef, params, pairs: Pairs, objective: Objective,
                   lrs: Sequence[float] = (), *, ref_logps=None, chunk_size: int | None = None,
                   progress: Callable | None = None) -> OneStepCheck:
    """One gradient-descent step of each size in ``lrs`` on each pair's own ``objective`` loss,
    against the first-order prediction. ``ref_logps=(ref_w, ref_l)`` are the reference model's
    sequence log-probs; by default the current model is the reference (a policy at its starting
    checkpoint)."""
    logp_w, logp_l = sequence_logps(graphdef, params, pairs)
    ref_w, ref_l = (logp_w, logp_l) if ref_logps is None else ref_logps
    d_w, d_l = objective_weights(objective, pairs, logp_w, logp_l, ref_w, ref_l)
    return step_check(graphdef, params, pairs, d_w, d_l, lrs, chunk_size=chunk_size,
                      progress=progress)


# ------------------------------------------------------------------------------------------
# Any update: first-order change ⟨∇f, u⟩, a batched SGD step and Adam
# ------------------------------------------------------------------------------------------

def _full(params, subset, base):
    """The model's parameters from ``params``: themselves, or a subset's state over ``base``."""
    return params if subset is None else subset.apply(base, params)


@partial(jax.jit, static_argnames=("graphdef", "subset"))
def _update_changes_chunk(params, responses: Responses, update, base, *, graphdef, subset):
    return jax.jvp(lambda p: batch_sequence_logprobs(graphdef, _full(p, subset, base), responses),
                   (params,), (update,))


def changes_chunk_size(graphdef, params, responses: Responses) -> int:
    """``update_changes``' default chunk: as many responses as fit the memory budget (a forward
    pass and its tangents each), up to 256 and no more than there are."""
    return _sequences_per_chunk(graphdef, params, responses, copies=0, passes=2,
                                cap=min(256, int(responses.tokens.shape[0])))


def update_chunk_size(graphdef, params, pairs: Pairs) -> int:
    """``batch_coefficient_update``'s default chunk: as many pairs as fit the memory budget (a
    forward and a backward pass of both responses each), up to 256 and no more than there are."""
    return _sequences_per_chunk(graphdef, params, pairs.chosen, copies=0, passes=4,
                                cap=min(256, len(pairs)))


def update_changes(graphdef, params, responses: Responses, update, *,
                   chunk_size: int | None = None, subset=None, base=None, mesh=None):
    """``(log π, ⟨∇ log π, u⟩)`` ``[B]`` for every response under the parameter update ``u``
    (a Jacobian-vector product: the first-order change of each log-prob), in chunks of responses
    (by default as many as fit the memory budget, up to 256 and no more than there are; host
    arrays). With a ``subset`` (``train.subsets``), ``params`` and ``u`` live in its trainable
    state over ``base``. With a ``mesh`` each chunk's responses are split over its devices."""
    if chunk_size is None:
        chunk_size = changes_chunk_size(graphdef, _full(params, subset, base), responses)
    if mesh is not None:
        chunk_size = padded_size(chunk_size, mesh)
        params, update, base = replicate((params, update, base), mesh)
    return map_chunks(lambda chunk: _update_changes_chunk(params, chunk, update, base,
                                                          graphdef=graphdef, subset=subset),
                      responses, int(responses.tokens.shape[0]), chunk_size, mesh=mesh)


@partial(jax.jit, static_argnames=("graphdef", "subset"))
def _summed_update(params, pairs: Pairs, coef_w, coef_l, base, *, graphdef, subset):
    return jax.grad(lambda p: coefficient_surrogate(graphdef, _full(p, subset, base), pairs,
                                                    coef_w, coef_l) * coef_w.shape[0])(params)


def batch_coefficient_update(graphdef, params, pairs: Pairs, coef_w, coef_l, *,
                             chunk_size: int | None = None, subset=None, base=None, mesh=None):
    """``coefficient_update`` of a whole batch, accumulated over chunks of pairs (by default as
    many as fit the memory budget, up to 256 and no more than there are):
    ``u = (1/B) Σ_chunks Σ_b …``; padding rows of the last chunk carry zero coefficients. With a
    ``subset``, ``u`` lives in its trainable state (``params``) over ``base``. With a ``mesh``
    each chunk's pairs are split over its devices (XLA sums their gradients across devices)."""
    n = len(pairs)
    if chunk_size is None:
        chunk_size = update_chunk_size(graphdef, _full(params, subset, base), pairs)
    if mesh is not None:
        chunk_size = padded_size(chunk_size, mesh)
        params, base = replicate((params, base), mesh)
    # sliced on the host: a device array's indexing is a dispatch per leaf and chunk
    pairs, coef_w, coef_l = jax.device_get((pairs, coef_w, coef_l))
    coef_w, coef_l = np.asarray(coef_w), np.asarray(coef_l)
    total = None
    for idx in chunk_indices(n, chunk_size):
        real = real_rows(idx, n)[:, None]
        batch = (pairs[idx], np.where(real, coef_w[idx], 0).astype(coef_w.dtype),
                 np.where(real, coef_l[idx], 0).astype(coef_l.dtype))
        chunk, c_w, c_l = batch if mesh is None else shard_batch(batch, mesh)
        part = _summed_update(params, chunk, c_w, c_l, base, graphdef=graphdef, subset=subset)
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    return jax.tree.map(lambda x: x / n, total)


@struct.dataclass
class UpdateCheck:
    """One optax step on a whole batch of pairs ``[B]``.

    ``first_order_{w,l}`` = ⟨g, u⟩ with the real update u (all cross-pair terms; any optimizer),
    ``actual_{w,l}`` the measured change, ``formula_{w,l}`` the per-pair SGD formula per unit step
    (``d_w‖g_w‖² − d_l⟨g_w,g_l⟩``, …: only its sign is comparable for Adam). For SGD of rate η,
    ``own_{w,l}`` = (η/B)·formula is the pair's own term and ``first_order − own`` the cross-pair
    (empirical-NTK) term; NaN for other optimizers."""

    optimizer: str = struct.field(pytree_node=False)
    first_order_w: np.ndarray
    first_order_l: np.ndarray
    actual_w: np.ndarray
    actual_l: np.ndarray
    formula_w: np.ndarray
    formula_l: np.ndarray
    own_w: np.ndarray
    own_l: np.ndarray

    @property
    def case_formula(self) -> np.ndarray:
        return case_of(self.formula_w, self.formula_l)

    @property
    def case_first_order(self) -> np.ndarray:
        return case_of(self.first_order_w, self.first_order_l)

    @property
    def case_actual(self) -> np.ndarray:
        return case_of(self.actual_w, self.actual_l)

    def disagreements(self) -> np.ndarray:
        """Indices of the pairs whose per-pair formula case differs from the real step's case."""
        return np.flatnonzero(self.case_formula != self.case_actual)

    def summary(self) -> dict:
        return {
            "optimizer": self.optimizer, "pairs": int(len(self.actual_w)),
            "formula": case_fractions(self.case_formula),
            "first_order": case_fractions(self.case_first_order),
            "actual": case_fractions(self.case_actual),
            "formula_vs_actual_disagree": float(np.mean(self.case_formula != self.case_actual)),
            "first_order_vs_actual_disagree": float(np.mean(self.case_first_order
                                                            != self.case_actual)),
            "mean_actual_w": float(np.mean(self.actual_w)),
            "mean_actual_l": float(np.mean(self.actual_l)),
            "mean_cross_w": float(np.mean(self.first_order_w - self.own_w)),
            "mean_cross_l": float(np.mean(self.first_order_l - self.own_l)),
        }


def batch_update_check(graphdef, params, pairs: Pairs, objective: Objective,
                       optimizer: str = "sgd", learning_rate: float = 1e-3, *, ref_logps=None,
                       opt_state=None, geometry=None) -> UpdateCheck:
    """One ``optimizer`` step on the mean ``objective`` loss of all ``pairs`` (from ``opt_state``,
    by default a fresh one), compared with its first-order prediction and the per-pair formula.

    The gradient of the mean loss is taken in coefficient form, ``−(1/B) Σ_b d_w g_w − d_l g_l``,
    so one compiled function serves every objective. ``geometry`` (``pair_geometry`` of these
    pairs at ``params``) is reused when given."""
    tx = make_optimizer(optimizer, learning_rate)
    logp_w, logp_l = sequence_logps(graphdef, params, pairs)
    ref_w, ref_l = (logp_w, logp_l) if ref_logps is None else ref_logps
    d_w, d_l = objective_weights(objective, pairs, logp_w, logp_l, ref_w, ref_l)
    dtype = jax.tree.leaves(params)[0].dtype
    shape = pairs.chosen.tokens.shape[:1] + (pairs.chosen.window,)
    c_w, c_l = (jnp.broadcast_to(jnp.asarray(d, dtype)[:, None], shape) for d in (d_w, d_l))
    grads = jax.tree.map(jnp.negative, batch_coefficient_update(graphdef, params, pairs, c_w, c_l))
    updates, _ = tx.update(grads, tx.init(params) if opt_state is None else opt_state, params)
    new_params = optax.apply_updates(params, updates)
    _, first_w = update_changes(graphdef, params, pairs.chosen, updates)
    _, first_l = update_changes(graphdef, params, pairs.rejected, updates)
    new_w, new_l = sequence_logps(graphdef, new_params, pairs)
    geo = pair_geometry(graphdef, params, pairs) if geometry is None else geometry
    cond = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    scale = learning_rate / len(pairs) if optimizer == "sgd" else np.nan
    return UpdateCheck(optimizer, np.asarray(first_w), np.asarray(first_l), new_w - logp_w,
                       new_l - logp_l, cond.delta_w, cond.delta_l, scale * cond.delta_w,
                       scale * cond.delta_l)


def to_float64(model_config, params):
    """``(graphdef, params)`` of the same model in float64 (call inside ``jax.enable_x64(True)``):
    the O(η²) error of a small step then stands far above rounding, so its order can be fitted."""
    return in_precision(model_config, params, "float64")[1:]


__all__ = ["OneStepCheck", "UpdateCheck", "batch_coefficient_update", "batch_update_check",
           "coefficient_surrogate", "coefficient_update", "objective_weights", "one_step_check",
           "step_check", "to_float64", "update_changes"]
