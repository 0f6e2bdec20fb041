"""One benchmark case in its own process, so that its peak resident memory is its own:
``python -m entangle_jax.bench.case '<spec json>'`` prints one JSON result line.

Spec: ``{"config": name, "task": "sequence_gram" | "token_gram" | "pair_stats" | "forward" |
"entk_prediction", "method": …, "pairs": B, "repeats": n}``. ``entk_prediction`` also takes
``"train_pairs"``: the first-order change of the ``pairs`` responses' log-probs under the SGD
update of the training pairs (random coefficients); ``auto`` is the toolkit's way (one weighted
backward pass, one Jacobian-vector product per response), ``materialize`` forms every
per-example gradient with ``vmap(grad)`` and contracts the kernel; ``max_rel_diff`` compares
the two. The first call (compile + run) is timed apart; the median
of ``repeats`` further calls (more for calls of a few milliseconds, until ``MIN_TIMED_S`` seconds
are timed) is the run time. Compilations are counted through ``jax.monitoring`` during warm-up,
during the timed calls and during one call on a batch of other suffix lengths of the same padded
shape (the last two must be 0).
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entangle_jax.bench.configs import CONFIGS, flop_params, lower_bound_flops
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.gradients import pair_geometry, pairs_as_responses, sequence_gram, token_grams
from entangle_jax.logprob import logits, sequence_logprob, token_logprobs
from entangle_jax.memory import peak_resident_mb
from entangle_jax.models import count_params, init_model

#: Fast cases repeat beyond ``repeats`` until this many seconds are timed (at most
#: ``MAX_REPEATS`` calls), so a median of milliseconds rests on many calls.
MIN_TIMED_S = 2.0
MAX_REPEATS = 50

_COMPILES = [0]


def _count_compile(event: str, *_args, **_kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


def synthetic_pairs(n: int, seq_len: int, window: int, vocab: int, seed: int, suffix: int):
    """``n`` pairs of random token sequences of length ``seq_len``; each response has ``suffix + 1``
    tokens in a window of ``window`` slots that ends the sequence (the prompt fills the rest)."""
    rng = np.random.default_rng(seed)
    start = seq_len - window

    def side():
        tokens = rng.integers(4, vocab, (n, seq_len)).astype(np.int32)
        return Responses(jnp.asarray(tokens), jnp.full(n, start, jnp.int32),
                         jnp.full(n, suffix + 1, jnp.int32), window)

    return Pairs(side(), side())


def prediction_coefficients(b: int) -> tuple[jax.Array, jax.Array]:
    """``(c_w, c_l)`` ``[B]``: the training pairs' loss coefficients, uniform in [0.1, 1] (seed 3,
    the same for every method)."""
    return tuple(map(jnp.asarray, np.random.default_rng(3).uniform(0.1, 1.0, (2, b))
                     .astype(np.float32)))


def entk_method(method: str, graphdef, params, train: Pairs, coef_w, coef_l, *,
                train_chunk: int | None = None, eval_chunk: int | None = None):
    """``pairs ↦ [2N]`` first-order changes ``⟨g_j, U⟩``, ``U = (1/B) Σ_i (c_w,i g_w,i −
    c_l,i g_l,i)``, of the chosen then rejected responses of ``pairs``. ``auto``'s chunk sizes
    (training pairs, evaluated responses) default to what fits the memory budget."""
    from entangle_jax.dynamics import batch_coefficient_update, update_changes

    if method == "auto":
        token_w = coef_w[:, None] * train.chosen.response_mask
        token_l = coef_l[:, None] * train.rejected.response_mask

        def run(pairs):
            update = batch_coefficient_update(graphdef, params, train, token_w, token_l,
                                              chunk_size=train_chunk)
            return update_changes(graphdef, params, pairs_as_responses(pairs), update,
                                  chunk_size=eval_chunk)[1]
        return run
    if method == "materialize":  # the peer: every per-example gradient, then the kernel
        grads = jax.jit(jax.vmap(jax.grad(partial(sequence_logprob, graphdef)),
                                 in_axes=(None, 0)))
        kernel = jax.jit(lambda a, b: sum(jnp.einsum("i...,j...->ij", x, y) for x, y in
                                          zip(jax.tree.leaves(a), jax.tree.leaves(b))))
        weights = jnp.concatenate([coef_w, -coef_l]) / len(train)

        def run(pairs):
            g_train = grads(params, pairs_as_responses(train))
            rows = pairs_as_responses(pairs)
            out = [kernel(grads(params, rows[lo:lo + 64]), g_train) @ weights
                   for lo in range(0, rows.tokens.shape[0], 64)]
            return np.concatenate([np.asarray(o) for o in out])
        return run
    raise ValueError(f"unknown method {method!r}")


def _jax_method(task: str, method: str, graphdef, params):
    if method in ("materialize", "structured", "auto"):
        fn = {"sequence_gram": partial(sequence_gram, chunk_size=64),
              "token_gram": partial(token_grams, chunk_size=1),
              "pair_stats": partial(pair_geometry, chunk_size=8)}[task]
        return lambda pairs: fn(graphdef, params, pairs, implementation=method)
    if method == "loop_grad":  # (a) a Python loop of per-example jax.grad, contracted leaf by leaf
        g = jax.jit(jax.grad(partial(sequence_logprob, graphdef)))
        gram = jax.jit(lambda gs: sum(jnp.einsum("a...,b...->ab", x, x) for x in jax.tree.leaves(gs)))

        def run(pairs):
            responses = pairs_as_responses(pairs)
            grads = [g(params, responses[k]) for k in range(responses.tokens.shape[0])]
            return np.asarray(gram(jax.tree.map(lambda *xs: jnp.stack(xs), *grads)))
        return run
    if method == "loop_token":  # (b) one backward per response token, as the paper's analysis code
        g = jax.jit(jax.grad(lambda p, s, i: token_logprobs(graphdef, p, s)[i]))
        gram = jax.jit(lambda a, b: sum(jnp.einsum("i...,j...->ij", x, y)
                                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))

        def run(pairs):
            def rows(seq):
                return jax.tree.map(lambda *xs: jnp.stack(xs),
                                    *[g(params, seq, i) for i in range(int(seq.length))])
            j_w, j_l = rows(pairs.chosen[0]), rows(pairs.rejected[0])
            return [np.asarray(gram(a, b)) for a, b in ((j_w, j_l), (j_w, j_w), (j_l, j_l))]
        return run
    if method == "forward":
        f = jax.jit(jax.vmap(partial(logits, graphdef), in_axes=(None, 0)))
        return lambda pairs: np.asarray(f(params, pairs_as_responses(pairs).tokens)[..., 0])
    raise ValueError(f"unknown method {method!r}")


def _torch_method(task: str, cfg, graphdef, params, pairs):
    import torch

    from entangle_jax.bench import torch_port

    p = torch_port.from_jax(params)
    layers, heads = cfg.n_layers, cfg.n_heads
    as_t = lambda r: (torch.from_numpy(np.asarray(r.tokens)).long(),  # noqa: E731
                      torch.from_numpy(np.asarray(r.start)).long(),
                      torch.from_numpy(np.asarray(r.length)).long())
    window = pairs.chosen.window
    ours = np.asarray(token_logprobs(graphdef, params, pairs.chosen[0]))
    theirs = torch_port.token_logprobs(p, *[x[0] for x in as_t(pairs.chosen)], window, layers,
                                       heads).numpy()
    gap = float(np.abs(theirs - ours).max())  # same architecture and weights: float32 rounding
    if task == "sequence_gram":
        batch = as_t(pairs_as_responses(pairs))
        run = lambda _: torch_port.sequence_gram(p, *batch, window, layers, heads)  # noqa: E731
    else:
        w = [x[0] for x in as_t(pairs.chosen)]
        l_ = [x[0] for x in as_t(pairs.rejected)]
        run = lambda _: torch_port.token_grams(p, w, l_, window, layers, heads)  # noqa: E731
    return run, gap


def run_case(spec: dict) -> dict:
    cfg = CONFIGS[spec["config"]]
    task, method = spec["task"], spec["method"]
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    graphdef, params = nnx.split(init_model(cfg.model, seed=0))
    n = 1 if task == "token_gram" else spec["pairs"]
    window = cfg.token_window if task == "token_gram" else cfg.window
    pairs = synthetic_pairs(n, cfg.model.max_len, window, cfg.model.vocab_size, 0, window - 1)
    other = synthetic_pairs(n, cfg.model.max_len, window, cfg.model.vocab_size, 1, window // 2)
    result = {**spec, "params": count_params(params), "flop_params": flop_params(params),
              "seq_len": cfg.model.max_len, "window": window}
    gap = agreement = None
    if task == "entk_prediction":
        b = spec["train_pairs"]
        train = synthetic_pairs(b, cfg.model.max_len, window, cfg.model.vocab_size, 2, window - 1)
        coef = prediction_coefficients(b)
        run = entk_method(method, graphdef, params, train, *coef)
    elif method.startswith("torch"):
        run, gap = _torch_method(task, cfg.model, graphdef, params, pairs)
    else:
        run = _jax_method(task, method, graphdef, params)
    baseline = peak_resident_mb()
    start = time.perf_counter()
    jax.block_until_ready(run(pairs))
    first = time.perf_counter() - start
    warm_compiles = _COMPILES[0]
    times: list[float] = []
    while len(times) < spec["repeats"] or (spec["repeats"] and sum(times) < MIN_TIMED_S
                                           and len(times) < MAX_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(run(pairs))
        times.append(time.perf_counter() - start)
    timed_compiles = _COMPILES[0] - warm_compiles
    if spec["repeats"] and not method.startswith("torch"):
        jax.block_until_ready(run(other))
    other_shape_compiles = _COMPILES[0] - warm_compiles - timed_compiles
    median = float(np.median(times)) if times else first
    peak = peak_resident_mb()
    if task == "entk_prediction":  # after the peak: the other method's memory is not this row's
        other_method = "materialize" if method == "auto" else "auto"
        reference = np.asarray(entk_method(other_method, graphdef, params, train, *coef)(pairs))
        agreement = float(np.max(np.abs(np.asarray(run(pairs)) - reference))
                          / np.max(np.abs(reference)))
    flops = lower_bound_flops(task, params, cfg.model.max_len, n, window,
                              spec.get("train_pairs", 0))
    result.update(first_s=first, median_s=median, compile_s=max(0.0, first - median),
                  times_s=times, compiles_warmup=warm_compiles, compiles_timed=timed_compiles,
                  compiles_other_shape=other_shape_compiles,
                  baseline_rss_mb=baseline, peak_rss_mb=peak,
                  lower_bound_gflop=flops / 1e9, gflops=flops / 1e9 / median, torch_logprob_gap=gap,
                  max_rel_diff=agreement)
    return result


if __name__ == "__main__":
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
    sys.stdout.flush()
