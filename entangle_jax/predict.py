"""Before a preference run: how will each pair's log-probs move? First-order predictions from the
run's starting point, for the batches it will actually draw or for no particular order.

A run of K steps from θ₀ moves every log-prob f, to first order, by ``⟨∇f(θ₀), U⟩`` with
``U = Σ_t u_t`` the sum of its updates. Taking the updates from θ₀'s gradients makes this a
prediction that needs no run:

    SGD:   u_t = −η ∇L_t(θ₀) = (η/B) Σ_{i∈B_t} (d_w,i g_w,i − d_l,i g_l,i)
           ⇒ U = (η/B) Σ_i n_i (d_w,i g_w,i − d_l,i g_l,i)
    Adam:  u_t = Adam's step on ∇L_t(θ₀), its moments carried from step to step (the
           preconditioner of the run, estimated from θ₀'s batch gradients)

where ``B_t`` is the batch of step t, ``n_i`` the number of draws of pair i and d the objective's
weights at θ₀ (π_ref = π at the start). Written out, ⟨g_j, U⟩ for SGD is the empirical-NTK sum
over the realized batches, −η Σ_t Σ_{i∈B_t} (∂ℓ_i/∂log π_w,i ⟨g_j, g_w,i⟩ + ∂ℓ_i/∂log π_l,i
⟨g_j, g_l,i⟩)/B. One weighted backward pass gives U and one Jacobian-vector product per response
gives its prediction, so no per-example gradient and no kernel matrix is ever held. Without the
batch order (``realized=False``) every training pair counts its expected ``K·B/N`` draws: the
full-batch prediction.

The pair's own term alone, ``η/B · n_j (d_w‖g_w‖² − d_l⟨g_w,g_l⟩)`` (and its rejected twin), is the
per-pair gradient condition of the paper; for a held-out pair (n_j = 0) only its sign is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from entangle_jax.config import ConfigError
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.dynamics import batch_coefficient_update, objective_weights, update_changes
from entangle_jax.logprob import sequence_logps
from entangle_jax.optimizers import make_optimizer
from entangle_jax.train.preference import PreferenceConfig, draw_batches


@dataclass(frozen=True)
class RunStart:
    """A run's starting point: the model (``graphdef``, ``base``), the trained parameter subset
    and its initial state, the objective weights ``d`` of every training pair there and the
    ``mesh`` (``sharding.batch_mesh``) the kernel's pairs and responses are split over, if any."""

    graphdef: object
    base: object
    subset: object
    trainable: object
    d_w: np.ndarray
    d_l: np.ndarray
    mesh: object = None

    @property
    def params(self):
        return self.subset.apply(self.base, self.trainable)


def run_start(graphdef, base, config: PreferenceConfig, train: Pairs, mesh=None) -> RunStart:
    """The starting point of ``config``'s run on ``train`` from ``base`` (policy = reference);
    with a ``mesh`` the predictions' backward passes and jvps run data-parallel over it."""
    subset = config.subset()
    trainable = subset.init(base, jax.random.key(config.seed))
    params = subset.apply(base, trainable)
    logp_w, logp_l = sequence_logps(graphdef, params, train)
    d_w, d_l = objective_weights(config.make_objective(), train, logp_w, logp_l, logp_w, logp_l)
    return RunStart(graphdef, base, subset, trainable, d_w, d_l, mesh)


def _on_tokens(d, pairs: Pairs):
    return np.broadcast_to(np.asarray(d)[:, None], (len(pairs), pairs.chosen.window))


def _gradient_sum(start: RunStart, pairs: Pairs, weights: np.ndarray):
    """``Σ_i weights_i (d_w,i g_w,i − d_l,i g_l,i)`` over ``pairs`` (rows with weight 0 skipped),
    in the subset's state."""
    rows = np.flatnonzero(weights)
    sub = pairs[rows]
    mean = batch_coefficient_update(start.graphdef, start.trainable, sub,
                                    _on_tokens(weights[rows] * start.d_w[rows], sub),
                                    _on_tokens(weights[rows] * start.d_l[rows], sub),
                                    subset=start.subset, base=start.base, mesh=start.mesh)
    return jax.tree.map(lambda x: x * len(rows), mean)


def planned_update(start: RunStart, config: PreferenceConfig, train: Pairs, batches=None):
    """``U``: the sum of the run's updates predicted from θ₀ (module docstring) for the batches
    ``[steps, batch]`` it draws, or, with ``batches=None``, every pair at its expected count."""
    n = len(train)
    if batches is None:
        counts = np.full(n, config.steps * config.batch_size / n)
    else:
        counts = np.bincount(np.asarray(batches).ravel(), minlength=n).astype(float)
    if config.optimizer == "sgd":
        scale = config.learning_rate / config.batch_size
        return jax.tree.map(lambda x: scale * x, _gradient_sum(start, train, counts))
    if batches is None:
        raise ConfigError("an Adam prediction needs the batch order (the preconditioner "
                          "follows the batches)")
    tx = make_optimizer(config.optimizer, config.learning_rate)
    state, total = tx.init(start.trainable), None
    for batch in np.asarray(batches):
        weights = np.bincount(batch, minlength=n).astype(float) / config.batch_size
        loss_grad = jax.tree.map(lambda x: -x, _gradient_sum(start, train, weights))
        update, state = tx.update(loss_grad, state, start.trainable)
        total = update if total is None else jax.tree.map(lambda a, b: a + b, total, update)
    return total


def predicted_changes(start: RunStart, responses: Responses, update) -> np.ndarray:
    """``[N]`` first-order changes ``⟨∇ log π(y), U⟩`` of every response."""
    return np.asarray(update_changes(start.graphdef, start.trainable, responses, update,
                                     subset=start.subset, base=start.base, mesh=start.mesh)[1])


def own_term_signs(d_w, d_l, sq_norm_w, sq_norm_l, inner) -> tuple[np.ndarray, np.ndarray]:
    """Signs of the pair's own one-step changes, ``d_w‖g_w‖² − d_l⟨g_w,g_l⟩`` and
    ``d_w⟨g_w,g_l⟩ − d_l‖g_l‖²``: the per-pair condition alone."""
    return (np.sign(d_w * sq_norm_w - d_l * inner), np.sign(d_w * inner - d_l * sq_norm_l))


__all__ = ["RunStart", "draw_batches", "own_term_signs", "planned_update", "predicted_changes",
           "run_start"]
