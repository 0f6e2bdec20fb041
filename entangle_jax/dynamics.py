"""The gradient condition: how one update moves log π_w and log π_l, predicted and measured.

For one pair and a gradient-descent step of size η on its loss, ``θ' = θ + η u`` with
``u = d_w g_w − d_l g_l`` (docs/design.md §1.2), and to first order

    Δlog π_w ≈ η ⟨g_w, u⟩ = η (d_w ‖g_w‖² − d_l ⟨g_w, g_l⟩)
    Δlog π_l ≈ η ⟨g_l, u⟩ = η (d_w ⟨g_w, g_l⟩ − d_l ‖g_l‖²)

The case of a pair is the sign pattern (1: w↑ l↓, 2: both ↓, 3: both ↑, 4: w↓ l↑; 0: a change is
exactly 0). With ``d_w, d_l > 0``, log π_w rises iff ``⟨g_w, g_l⟩ < (d_w/d_l)‖g_w‖²`` and log π_l
falls iff ``⟨g_w, g_l⟩ < (d_l/d_w)‖g_l‖²``; case 4 would need ``⟨g_w, g_l⟩² > ‖g_w‖²‖g_l‖²``.

Updates are given in token-coefficient form, ``u = Σ_i c_w,i g_w^i − c_l,i g_l^i`` over the
per-token gradients of each response: a plain objective has ``c = d`` on every token, the
pairwise-normalized update ``c = d/‖g‖``, a token mask ``c_i = d m_i``. One compiled function
therefore serves every objective and mitigation.

Beyond one pair, the first-order change of any log-prob f under an arbitrary parameter update u is
``⟨∇f, u⟩`` (a Jacobian-vector product): ``update_changes``. ``batch_update_check`` compares it, the
per-pair formula and the real change for one optax step on a batch (SGD: the empirical-NTK form
with all cross-pair terms; Adam: a preconditioned, sign-like update the formula does not describe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from entangle_jax import memory
from entangle_jax.config import ConfigError
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.gradients import pair_geometry
from entangle_jax.logprob import batch_sequence_logprobs, sequence_logprob, token_logprobs
from entangle_jax.models import in_precision
from entangle_jax.objectives import Objective

#: The optimizers a preference step can use (``OPTIMIZERS``' keys).
Optimizer = Literal["sgd", "adam"]
#: ``Optimizer`` → the optax constructor of the learning rate.
OPTIMIZERS: dict[Optimizer, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "adam": optax.adam,
}

CASES = (1, 2, 3, 4)


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``optax.sgd`` or ``optax.adam`` of ``learning_rate``; a bad value raises ConfigError.

    The rate lives in the optimizer's state (``optax.inject_hyperparams``), not in its code: a
    jitted step that builds the transformation with any rate and applies it to a state from
    ``init`` uses the state's rate, so runs at different rates share one compilation."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is invalid: one of {', '.join(OPTIMIZERS)}")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate={learning_rate!r} is invalid: must be > 0")
    return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=learning_rate)


# ------------------------------------------------------------------------------------------
# The per-pair condition (closed form)
# ------------------------------------------------------------------------------------------

def case_of(delta_w, delta_l) -> np.ndarray:
    """Case 1 (w↑ l↓), 2 (both ↓), 3 (both ↑), 4 (w↓ l↑), or 0 where a change is exactly 0."""
    delta_w, delta_l = np.asarray(delta_w), np.asarray(delta_l)
    case = np.select([(delta_w > 0) & (delta_l < 0), (delta_w < 0) & (delta_l < 0),
                      (delta_w > 0) & (delta_l > 0), (delta_w < 0) & (delta_l > 0)], CASES, 0)
    return case.astype(np.int32)


def case_fractions(case) -> dict[str, float]:
    """``{"case_1": …, …, "case_4": …}`` (plus ``case_0`` when a change was exactly 0)."""
    case = np.asarray(case)
    out = {f"case_{k}": float(np.mean(case == k)) for k in CASES}
    if np.any(case == 0):
        out["case_0"] = float(np.mean(case == 0))
    return out


@struct.dataclass
class GradientCondition:
    """The gradient condition of docs/design.md §1.2 for each pair ``[B]``.

    ``delta_w``/``delta_l`` are the first-order changes for the step size ``lr``. The thresholds
    ``threshold_w = (d_w/d_l)‖g_w‖²`` and ``threshold_l = (d_l/d_w)‖g_l‖²`` and the margins
    ``margin_{w,l} = threshold − ⟨g_w, g_l⟩`` are meaningful for ``d_w, d_l > 0``: log π_w rises iff
    ``margin_w > 0``, log π_l falls iff ``margin_l > 0`` (±inf where a d is 0)."""

    delta_w: np.ndarray
    delta_l: np.ndarray
    case: np.ndarray
    threshold_w: np.ndarray
    threshold_l: np.ndarray
    margin_w: np.ndarray
    margin_l: np.ndarray


def gradient_condition(d_w, d_l, sq_norm_w, sq_norm_l, inner, lr: float = 1.0) -> GradientCondition:
    """Predicted changes, case and threshold margins from the weights and the pair geometry."""
    d_w, d_l, sq_w, sq_l, inner = (np.asarray(x, np.float64)
                                   for x in (d_w, d_l, sq_norm_w, sq_norm_l, inner))
    delta_w = lr * (d_w * sq_w - d_l * inner)
    delta_l = lr * (d_w * inner - d_l * sq_l)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold_w = np.where(d_l == 0, np.inf, d_w / d_l * sq_w)
        threshold_l = np.where(d_w == 0, np.inf, d_l / d_w * sq_l)
    return GradientCondition(delta_w, delta_l, case_of(delta_w, delta_l), threshold_w,
                             threshold_l, threshold_w - inner, threshold_l - inner)


# ------------------------------------------------------------------------------------------
# One real step per pair, against the first-order prediction
# ------------------------------------------------------------------------------------------

@partial(jax.jit, static_argnums=0)
def pair_token_logprobs(graphdef, params, pairs: Pairs):
    """``([B, W], [B, W])`` per-token log-probs of the chosen and rejected responses."""
    one = jax.vmap(partial(token_logprobs, graphdef, params))
    return one(pairs.chosen), one(pairs.rejected)


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


#: Bytes of logits a log-prob chunk may hold (a response's [window, vocab] logits and their
#: log-softmax, per row).
LOGITS_BUDGET = 2**30


def _logprob_chunk(responses: Responses, vocab_size: int, cap: int = 256) -> int:
    per_row = 3 * responses.window * vocab_size * 4
    return int(max(1, min(cap, LOGITS_BUDGET // per_row)))


def pair_logprobs(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None):
    """``([B, W], [B, W])`` per-token log-probs, in chunks of ``chunk_size`` pairs (host arrays;
    by default as many as ``LOGITS_BUDGET`` allows, up to 256)."""
    if chunk_size is None:
        vocab = nnx.merge(graphdef, params).config.vocab_size
        chunk_size = max(1, _logprob_chunk(pairs.chosen, vocab) // 2)
    return _chunked(partial(pair_token_logprobs, graphdef, params), (pairs,), len(pairs),
                    chunk_size)


_jit_batch_logprobs = jax.jit(batch_sequence_logprobs, static_argnums=0)


def response_logprobs(graphdef, params, responses: Responses, *, chunk_size: int | None = None):
    """``[N]`` sequence log-probs of a batch of responses, in chunks (host array)."""
    if chunk_size is None:
        chunk_size = _logprob_chunk(responses, nnx.merge(graphdef, params).config.vocab_size)
    return _chunked(partial(_jit_batch_logprobs, graphdef, params), (responses,),
                    int(responses.tokens.shape[0]), chunk_size)


@partial(jax.jit, static_argnums=0)
def _step_chunk(graphdef, params, pairs: Pairs, coef_w, coef_l, lrs):
    def one(pair: Pairs, c_w, c_l):
        f_w = partial(sequence_logprob, graphdef, seq=pair.chosen)
        f_l = partial(sequence_logprob, graphdef, seq=pair.rejected)
        g_w, g_l = jax.grad(f_w)(params), jax.grad(f_l)(params)
        # u = Σ_i c_w,i g_w^i − c_l,i g_l^i: the gradient of the coefficient-weighted surrogate
        u = jax.grad(lambda p: jnp.vdot(c_w, token_logprobs(graphdef, p, pair.chosen))
                     - jnp.vdot(c_l, token_logprobs(graphdef, p, pair.rejected)))(params)

        def moved(lr):  # every log-prob, the unmoved one too, through the same computation
            p = jax.tree.map(lambda x, d: x + lr.astype(x.dtype) * d, params, u)
            return f_w(p), f_l(p)

        at_w, at_l = jax.vmap(moved)(jnp.concatenate([jnp.zeros(1, lrs.dtype), lrs]))
        return (at_w[0], at_l[0], _dot(g_w, g_w), _dot(g_l, g_l), _dot(g_w, g_l),
                _dot(g_w, u), _dot(g_l, u), at_w[1:] - at_w[0], at_l[1:] - at_l[0])

    return jax.vmap(one)(pairs, coef_w, coef_l)


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _chunked(fn: Callable, batched: tuple, n: int, chunk_size: int, *rest,
             progress: Callable | None = None):
    """Apply ``fn(*chunk_of_batched, *rest)`` to fixed-size chunks (the last padded by repetition,
    so one compiled function serves all) and concatenate the per-row outputs on the host."""
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"chunk_size={chunk_size!r} is invalid: must be a positive integer")
    outs = []
    for lo in range(0, n, chunk_size):
        idx = np.minimum(np.arange(lo, lo + chunk_size), n - 1)
        chunk = jax.tree.map(lambda x: x[idx], batched)
        outs.append(jax.device_get(fn(*chunk, *rest)))
        if progress is not None:
            progress(min(lo + chunk_size, n))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outs)


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
        (halving η quarters it). NaN with fewer than two step sizes."""
        if len(self.lrs) < 2:
            return float("nan")
        return float(np.polyfit(np.log(self.lrs), np.log(self.mean_error()), 1)[0])

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
    empty: rates and geometry only). By default as many pairs at once as fit the memory budget
    (each holds three gradients and a moved copy of the parameters per step size), up to 16."""
    n, window = len(pairs), pairs.chosen.window
    if chunk_size is None:
        chunk_size = _sequences_per_chunk(graphdef, params, pairs.chosen,
                                          copies=4 + len(lrs), passes=6 + 2 * len(lrs), cap=16)
    coef_w, coef_l = np.asarray(coef_w), np.asarray(coef_l)
    uniform = coef_w.ndim == 1
    full_w = np.broadcast_to(coef_w[:, None] if uniform else coef_w, (n, window))
    full_l = np.broadcast_to(coef_l[:, None] if uniform else coef_l, (n, window))
    dtype = jax.tree.leaves(params)[0].dtype
    lrs_arr = jnp.asarray(np.asarray(lrs, np.float64), dtype)
    if np.any(np.asarray(lrs) <= 0):
        raise ConfigError(f"step sizes {list(lrs)} are invalid: each must be > 0")
    out = _chunked(partial(_step_chunk, graphdef, params), (pairs, jnp.asarray(full_w, dtype),
                   jnp.asarray(full_l, dtype)), n, chunk_size, lrs_arr, progress=progress)
    logp_w, logp_l, sq_w, sq_l, inner, rate_w, rate_l, act_w, act_l = out
    nan = np.full(n, np.nan)
    return OneStepCheck(np.asarray(lrs, np.float64), logp_w, logp_l, sq_w, sq_l, inner, rate_w,
                        rate_l, act_w.T, act_l.T, coef_w if uniform else nan,
                        coef_l if uniform else nan)


def sequence_logps(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None):
    """``([B], [B])`` sequence log-probs of the chosen and rejected responses (host arrays)."""
    tok_w, tok_l = pair_logprobs(graphdef, params, pairs, chunk_size=chunk_size)
    return tok_w.sum(-1), tok_l.sum(-1)


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


def auto_learning_rate(rate_w, rate_l, target_change: float = 0.05) -> float:
    """The step size at which the median pair's larger first-order change is ``target_change``
    (so objectives with very different d_w, d_l are compared at the same nonlinearity)."""
    scale = float(np.median(np.maximum(np.abs(rate_w), np.abs(rate_l))))
    if not scale > 0:
        raise ConfigError("every first-order change is 0: no step size reaches a target change")
    return target_change / scale


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


def update_changes(graphdef, params, responses: Responses, update, *,
                   chunk_size: int | None = None, subset=None, base=None):
    """``(log π, ⟨∇ log π, u⟩)`` ``[B]`` for every response under the parameter update ``u``
    (a Jacobian-vector product: the first-order change of each log-prob), in chunks of responses
    (by default as many as fit the memory budget, up to 256 and no more than there are; host
    arrays). With a ``subset`` (``train.subsets``), ``params`` and ``u`` live in its trainable
    state over ``base``."""
    if chunk_size is None:
        chunk_size = _sequences_per_chunk(graphdef, _full(params, subset, base), responses,
                                          copies=0, passes=2,
                                          cap=min(256, int(responses.tokens.shape[0])))
    fn = partial(_update_changes_chunk, graphdef=graphdef, subset=subset)
    return _chunked(lambda r, u, b: fn(params, r, u, b), (responses,),
                    int(responses.tokens.shape[0]), chunk_size, update, base)


@partial(jax.jit, static_argnames=("graphdef", "subset"))
def _summed_update(params, pairs: Pairs, coef_w, coef_l, base, *, graphdef, subset):
    return jax.grad(lambda p: coefficient_surrogate(graphdef, _full(p, subset, base), pairs,
                                                    coef_w, coef_l) * coef_w.shape[0])(params)


def batch_coefficient_update(graphdef, params, pairs: Pairs, coef_w, coef_l, *,
                             chunk_size: int | None = None, subset=None, base=None):
    """``coefficient_update`` of a whole batch, accumulated over chunks of pairs (by default as
    many as fit the memory budget, up to 256 and no more than there are):
    ``u = (1/B) Σ_chunks Σ_b …``; padding rows of the last chunk carry zero coefficients. With a
    ``subset``, ``u`` lives in its trainable state (``params``) over ``base``."""
    n = len(pairs)
    if chunk_size is None:
        chunk_size = _sequences_per_chunk(graphdef, _full(params, subset, base), pairs.chosen,
                                          copies=0, passes=4, cap=min(256, n))
    coef_w, coef_l = jnp.asarray(coef_w), jnp.asarray(coef_l)
    total = None
    for lo in range(0, n, chunk_size):
        idx = np.minimum(np.arange(lo, lo + chunk_size), n - 1)
        real = (np.arange(lo, lo + chunk_size) < n)[:, None]
        part = _summed_update(params, pairs[idx], jnp.where(real, coef_w[idx], 0),
                              jnp.where(real, coef_l[idx], 0), base, graphdef=graphdef,
                              subset=subset)
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


# ------------------------------------------------------------------------------------------
# The one-step report of ``entangle dynamics``
# ------------------------------------------------------------------------------------------

def to_float64(model_config, params):
    """``(graphdef, params)`` of the same model in float64 (call inside ``jax.enable_x64(True)``):
    the O(η²) error of a small step then stands far above rounding, so its order can be fitted."""
    return in_precision(model_config, params, "float64")[1:]


def report_pairs(ckpt, suffix_length: int | None, n_pairs: int, data=None) -> Pairs:
    """The first ``n_pairs`` records of ``data`` (a ``PreferenceData``) or of the file a
    checkpoint was trained on (``suffix_length`` None), or else the first ``n_pairs`` eval pairs
    of a sentiment checkpoint with ``suffix_length``."""
    if data is not None or ckpt.user_data is not None:
        from entangle_jax.data.userdata import encode_pairs, load_from_config

        data = load_from_config(ckpt.user_data) if data is None else data
        return encode_pairs(data, ckpt.tokenizer, range(min(n_pairs, len(data.records))),
                            ckpt.model_config.max_len).pairs
    if ckpt.data_config is None:
        raise ConfigError("the checkpoint records no data config; the report needs its pairs")
    from entangle_jax.data.pairs import sentiment_pairs
    from entangle_jax.data.sentiment import make_sentiment_data, response_window

    if not 0 <= suffix_length <= ckpt.data_config.max_suffix_length:
        raise ConfigError(f"suffix length {suffix_length} is invalid: the checkpoint's data "
                          f"allows 0..{ckpt.data_config.max_suffix_length}")
    data = make_sentiment_data(ckpt.data_config)
    return sentiment_pairs(data.eval[:n_pairs], ckpt.tokenizer, suffix_length,
                           ckpt.model_config.max_len, response_window(ckpt.data_config))


def shape_name(suffix_length: int | None) -> str:
    from entangle_jax.data.sentiment import SHAPES

    if suffix_length is None:
        return "data"
    names = {v: k for k, v in SHAPES.items()}
    return names.get(suffix_length, f"L={suffix_length}")


def one_step_report(ckpt, objectives: Sequence[Objective], suffix_lengths: Sequence[int | None],
                    *, n_pairs: int = 32, normalized: bool = False, target_change: float = 0.05,
                    lr: float | None = None, halvings: int = 3, adam_lr: float = 1e-4,
                    float64: bool = True, progress: Callable[[str], None] | None = None,
                    data=None) -> dict:
    """The prediction-vs-actual table of ``entangle dynamics`` (JSON-ready).

    For each suffix length and objective: per-pair steps of size η·2^-k (k = 0..``halvings``; η is
    ``lr`` or the step at which the median pair's larger predicted change is ``target_change``),
    the predicted and measured cases, sign agreement, relative error and fitted error order; and
    one step on all the pairs as one batch, with SGD (rate B·η, so each pair's own term is its
    per-pair step) and with Adam (``adam_lr``), where the per-pair formula's case is compared with
    the real one. ``normalized`` uses the pairwise normalized update ``c = d/‖g‖`` instead (no
    batch rows). ``progress(label)`` is called after each (objective, shape)."""
    if halvings < 0 or n_pairs <= 0:
        raise ConfigError(f"halvings={halvings}, pairs={n_pairs} are invalid: need halvings >= 0 "
                          "and pairs > 0")
    rows = []
    with jax.enable_x64(float64):
        graphdef, params = (to_float64(ckpt.model_config, ckpt.params) if float64
                            else (ckpt.graphdef, ckpt.params))
        for length in suffix_lengths:
            pairs = report_pairs(ckpt, length, n_pairs, data)
            geo = pair_geometry(graphdef, params, pairs)
            logp_w, logp_l = np.asarray(geo.logp_w), np.asarray(geo.logp_l)
            for objective in objectives:
                d_w, d_l = objective_weights(objective, pairs, logp_w, logp_l, logp_w, logp_l)
                c_w, c_l = ((d_w / np.sqrt(geo.sq_norm_w), d_l / np.sqrt(geo.sq_norm_l))
                            if normalized else (d_w, d_l))
                cond = gradient_condition(c_w, c_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
                eta = lr if lr is not None else auto_learning_rate(cond.delta_w, cond.delta_l,
                                                                   target_change)
                lrs = [eta * 0.5 ** k for k in range(halvings + 1)]
                check = step_check(graphdef, params, pairs, c_w, c_l, lrs)
                row = {"objective": objective.name, "hparams": dict(objective.hparams),
                       "normalized": normalized, "shape": shape_name(length),
                       "suffix_length": length, "one_step": check.summary(0),
                       "pairs": {"d_w": d_w.tolist(), "d_l": d_l.tolist(),
                                 "inner": np.asarray(geo.inner).tolist(),
                                 "sq_norm_w": np.asarray(geo.sq_norm_w).tolist(),
                                 "sq_norm_l": np.asarray(geo.sq_norm_l).tolist(),
                                 "predicted_w": check.predicted(0)[0].tolist(),
                                 "predicted_l": check.predicted(0)[1].tolist(),
                                 "actual_w": check.actual_w[0].tolist(),
                                 "actual_l": check.actual_l[0].tolist(),
                                 "margin_w": cond.margin_w.tolist(),
                                 "margin_l": cond.margin_l.tolist()}}
                if not normalized:
                    for name, rate in (("sgd", eta * len(pairs)), ("adam", adam_lr)):
                        batch = batch_update_check(graphdef, params, pairs, objective, name,
                                                   rate, geometry=geo)
                        row[f"batch_{name}"] = {**batch.summary(), "lr": rate,
                                                "disagreeing_pairs": batch.disagreements().tolist()}
                rows.append(row)
                if progress is not None:
                    progress(f"{objective.name} / {shape_name(length)}")
    return {"model_config": dataclasses.asdict(ckpt.model_config), "pairs": n_pairs,
            "float64": float64, "target_change": target_change, "halvings": halvings,
            "adam_lr": adam_lr, "results": rows}


def _fractions(fr: dict) -> str:
    return "/".join(f"{100 * fr.get(f'case_{k}', 0.0):.0f}" for k in CASES)


def format_report(report: dict) -> str:
    """A Markdown table of ``one_step_report``: case fractions in % (cases 1/2/3/4)."""
    lines = ["| objective | shape | η | predicted % 1/2/3/4 | actual % 1/2/3/4 | sign agree w/l "
             "| median rel. err | error order | batch SGD disagree | Adam disagree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        s = row["one_step"]
        name = row["objective"] + (" (normalized)" if row["normalized"] else "")
        sgd = row.get("batch_sgd", {}).get("formula_vs_actual_disagree")
        adam = row.get("batch_adam", {}).get("formula_vs_actual_disagree")
        pct = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        lines.append(f"| {name} | {row['shape']} | {s['lr']:.2e} | {_fractions(s['predicted'])} "
                     f"| {_fractions(s['actual'])} | {s['sign_agreement_w']:.2f}/"
                     f"{s['sign_agreement_l']:.2f} | {s['median_relative_error']:.1e} "
                     f"| {s['error_order']:.2f} | {pct(sgd)} | {pct(adam)} |")
    return "\n".join(lines) + "\n"


__all__ = ["CASES", "GradientCondition", "OPTIMIZERS", "OneStepCheck", "UpdateCheck",
           "auto_learning_rate", "batch_update_check", "batch_coefficient_update",
           "case_fractions", "case_of", "coefficient_surrogate", "coefficient_update",
           "gradient_condition", "make_optimizer", "objective_weights", "one_step_check",
           "pair_logprobs", "pair_token_logprobs", "response_logprobs", "sequence_logps",
           "step_check", "update_changes", "format_report", "one_step_report", "report_pairs",
           "shape_name", "to_float64"]
