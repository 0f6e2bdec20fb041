"""Independent references for the training tests: a preference objective's mean-loss gradient by
plain autodiff (the training loop builds it from per-token coefficients instead)."""

import jax

from entangle_jax.logprob import batch_sequence_logprobs
from entangle_jax.mitigations import pair_lengths
from entangle_jax.objectives import get_objective


def mean_loss_grad(ckpt, pairs, objective: str):
    """∇_θ mean_i ℓ(log π_θ(y_w,i), log π_θ(y_l,i); ref) at θ = ``ckpt.params``, the policy its own
    reference."""
    graphdef, params = ckpt.graphdef, ckpt.params
    ref_w = batch_sequence_logprobs(graphdef, params, pairs.chosen)
    ref_l = batch_sequence_logprobs(graphdef, params, pairs.rejected)
    loss = get_objective(objective).loss

    def mean_loss(p):
        return loss(batch_sequence_logprobs(graphdef, p, pairs.chosen),
                    batch_sequence_logprobs(graphdef, p, pairs.rejected), ref_w, ref_l,
                    *pair_lengths(pairs)).mean()

    return jax.grad(mean_loss)(params)
