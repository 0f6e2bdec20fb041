"""One real-model case of ``entangle bench --model smollm2`` in its own process:
``python -m entangle_jax.bench.real '<spec json>'`` prints one JSON result line.

The model is SmolLM2-135M-Instruct (``load_pretrained("smollm2")``); the pairs are real HH-RLHF
pairs of the learning-dynamics helpful-base test file, chat-formatted (``encode_pairs``; prompts
keep their last ``max_prompt`` tokens, responses their first ``max_response``). The JAX methods and
the PyTorch peers (``bench.hf_peers``) get the same token ids.

Spec: ``{"task": "pair_stats" | "token_gram" | "kernel" | "prediction" | "load", "method": …,
…}`` with

- ``pair_stats``: ``pairs`` (the first eval pairs), ``max_prompt``, ``max_response``;
- ``token_gram``: ``response`` (R: the first eval pair whose two responses have ≥ R tokens, cut
  to R), ``max_prompt``;
- ``kernel``: ``eval_pairs`` N and ``train_pairs`` B (rows: the 2N responses of the first N eval
  pairs, columns: the 2B responses of the first B training pairs, each pair's chosen then its
  rejected, so a smaller kernel is the top-left block of a larger one), ``max_prompt``,
  ``max_response``;
- ``prediction``: the same N and B as ``kernel``: ``entangle predict``'s first-order changes
  ``⟨g_n, U⟩`` of the 2N eval responses under ``U = (1/B) Σ_b (c_w,b g_w,b − c_l,b g_l,b)``
  (``bench.case.entk_method``: ``auto`` never forms the kernel, ``materialize`` forms every
  per-example gradient);
- ``load``: ``method`` ``convert`` (``pretrained.convert``: GGUF parse, dequantize, convert, save)
  or ``cache`` (``load_pretrained`` when the cache exists), ``root`` (a cache folder);

and optionally ``layers`` (keep the first blocks only, on both sides: cheap tests).

One process: setup (loading, encoding; ``setup_s``), a warm-up call on the first chunk of the
same shapes (compilation; ``first_s``), then one timed call on everything (``time_s``). The
parent interleaves the processes of a task's methods round by round and takes medians.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from entangle_jax.bench.case import _COMPILES, _count_compile
from entangle_jax.memory import peak_resident_mb

#: The preference pairs of the real-model rows (HH-RLHF helpful-base, Ren & Sutherland's test file).
DATA = Path(__file__).resolve().parents[2] / "data" / "learning-dynamics-helpful-base" / \
    "formal_prob_test.jsonl.gz"
#: Training pairs of the kernel start at this record (the eval pairs at record 0).
TRAIN_OFFSET = 128
#: Our methods (``stagewise``: the kernel's only; ``auto_by_length``: ``auto`` with
#: ``length_bucket=LENGTH_BUCKET``, pair statistics only) and the transformers peers.
JAX_METHODS = ("materialize", "structured", "auto", "auto_by_length", "stagewise")
LENGTH_BUCKET = 32
TORCH_METHODS = ("hf_loop", "torch_func")
#: Per-token gradients of each side the transformers token loop holds (``loop_token_gram``).
TOKEN_LOOP_HOLD = 2
#: transformers' attention for ``torch_func`` (``hf_peers.load_model``: vmap has no batching rule
#: for the CPU ``sdpa`` kernels); the loops keep transformers' default.
FUNC_ATTENTION = "eager"


class _FirstChunkDone(Exception):
    """Stops a warm-up call after its first chunk."""


class NotRun(RuntimeError):
    """A case that is refused before it starts (it would not fit memory); the row says why."""


def truncated(ckpt, layers: int | None):
    """``(graphdef, params)`` of the checkpoint's model, cut to its first ``layers`` blocks."""
    from flax import nnx

    from entangle_jax.models import abstract_model
    from entangle_jax.pytrees import leaf_keys

    if layers is None:
        return ckpt.graphdef, ckpt.params
    config = dataclasses.replace(ckpt.model_config, n_layers=layers)
    graphdef, template = nnx.split(abstract_model(config))
    flat = dict(zip(leaf_keys(ckpt.params), jax.tree.leaves(ckpt.params)))
    return graphdef, jax.tree.unflatten(jax.tree.structure(template),
                                        [flat[k] for k in leaf_keys(template)])


def real_pairs(ckpt, n: int, offset: int, max_prompt: int, max_response: int,
               min_response: int = 1):
    """``Pairs`` of the first ``n`` records from ``offset`` on that keep a preference after
    encoding and whose two responses have at least ``min_response`` tokens (before the cut)."""
    from entangle_jax.data.userdata import encode_pairs, load_user_data, response_ids

    data = load_user_data(DATA, skip_bad_lines=True, max_prompt_tokens=max_prompt,
                          max_response_tokens=max_response)
    keep = []
    for i in range(offset, len(data.records)):
        record = data.records[i]
        ids = [response_ids(ckpt.tokenizer, t)[:max_response]
               for t in (record.chosen, record.rejected)]
        if ids[0] != ids[1] and min(map(len, ids)) >= min_response:
            keep.append(i)
        if len(keep) == n:
            break
    if len(keep) < n:
        raise ValueError(f"only {len(keep)} usable pairs from record {offset} of {DATA.name}")
    return encode_pairs(data, ckpt.tokenizer, keep, ckpt.model_config.max_len).pairs


def interleaved(pairs):
    """The responses of ``pairs`` as pair 0 chosen, pair 0 rejected, pair 1 chosen, …"""
    return jax.tree.map(lambda a, b: jnp.stack([a, b], 1).reshape(-1, *a.shape[1:]),
                        pairs.chosen, pairs.rejected)


def _stats_out(geo) -> dict:
    return {k: np.asarray(getattr(geo, k), np.float64).tolist()
            for k in ("logp_w", "logp_l", "sq_norm_w", "sq_norm_l", "inner")}


def union_gram(cross, chosen, rejected) -> np.ndarray:
    """``[[chosen, cross], [crossᵀ, rejected]]`` of one pair's token Grams."""
    return np.block([[chosen, cross], [cross.T, rejected]]).astype(np.float64)


def _mem_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) \
                * 1024.0
    except (OSError, StopIteration):
        return float("inf")


def _refuse_if_too_big(need: float, what: str) -> None:
    have = _mem_available()
    if need > 0.8 * have:
        raise NotRun(f"not run: needs ≈ {need / 2**30:.0f} GiB ({what}), more than the "
                     f"{have / 2**30:.0f} GiB available")


def text_side():
    """What encoding needs of SmolLM2 (its tokenizer and config), without its weights: the
    PyTorch cases' peak memory is then their own. Converts the GGUF file once if needed."""
    from types import SimpleNamespace

    from entangle_jax.config import LlamaConfig
    from entangle_jax.data.bpe import ChatTokenizer
    from entangle_jax.pretrained import cache_dir, load_pretrained

    config = cache_dir() / "config.json"
    if not config.is_file():
        load_pretrained("smollm2")
    meta = json.loads(config.read_text("utf-8"))
    return SimpleNamespace(tokenizer=ChatTokenizer.from_dict(meta["tokenizer"]),
                           model_config=LlamaConfig(**meta["model_config"]))


def prepare_inputs(spec: dict, model):
    """The real pairs of a case (``model``: a checkpoint or ``text_side()``): ``Pairs`` for
    ``pair_stats`` and ``token_gram``, ``(rows, cols)`` aligned ``Responses`` for ``kernel``."""
    task = spec["task"]
    if task == "pair_stats":
        return real_pairs(model, spec["pairs"], 0, spec["max_prompt"], spec["max_response"])
    if task == "token_gram":
        r = spec["response"]
        return real_pairs(model, 1, 0, spec["max_prompt"], r, min_response=r)
    if task in ("kernel", "prediction"):
        from entangle_jax.bench.kernel import align

        evals = real_pairs(model, spec["eval_pairs"], 0, spec["max_prompt"], spec["max_response"])
        train = real_pairs(model, spec["train_pairs"], TRAIN_OFFSET, spec["max_prompt"],
                           spec["max_response"])
        return (evals, train) if task == "prediction" else align(interleaved(evals),
                                                                 interleaved(train))
    raise ValueError(f"unknown task {task!r}")


def _size(task: str, inputs) -> dict:
    if task == "kernel":
        rows, cols = inputs
        return {"rows": int(rows.tokens.shape[0]), "cols": int(cols.tokens.shape[0]),
                "seq_len": int(rows.tokens.shape[-1]), "window": int(rows.window)}
    if task == "prediction":
        evals, train = inputs
        return {"rows": 2 * len(evals), "cols": 2 * len(train),
                "seq_len": int(evals.chosen.tokens.shape[-1]),
                "train_seq_len": int(train.chosen.tokens.shape[-1])}
    return {"n_pairs": len(inputs), "seq_len": int(inputs.chosen.tokens.shape[-1]),
            "window": int(inputs.chosen.window),
            "response_tokens": int(np.asarray(inputs.chosen.length).sum()
                                   + np.asarray(inputs.rejected.length).sum())}


def _kernel_out(k) -> dict:
    return {"kernel": np.asarray(k, np.float64)}


def jax_calls(spec: dict, graphdef, params, inputs):
    """``(warm-up call, timed call, outputs)`` of one of our methods: the warm-up runs the first
    chunk, of the same shapes as the timed call (so it compiles everything the timed call
    runs); ``outputs`` maps the timed call's value to ``{name: array}``."""
    from entangle_jax import gradients
    from entangle_jax.bench import kernel

    task, method = spec["task"], spec["method"]
    if task == "pair_stats":
        bucket = LENGTH_BUCKET if method == "auto_by_length" else None
        implementation = "auto" if bucket else method
        chunk = gradients.chunk_for_budget(graphdef, params, inputs.chosen, implementation,
                                           per_token=False, cap=32)
        call = lambda pairs=inputs, progress=None: gradients.pair_geometry(  # noqa: E731
            graphdef, params, pairs, chunk_size=chunk, implementation=implementation,
            progress=progress, length_bucket=bucket)

        def warm():  # every compilation of the timed call
            if bucket:  # one chunk of each cut length
                return call(_one_chunk_per_length(jax.device_get(inputs), chunk, bucket))

            def stop(done):  # the first chunk of the same batch
                raise _FirstChunkDone
            try:
                call(progress=stop)
            except _FirstChunkDone:
                pass
        return warm, call, _stats_out
    if task == "token_gram":
        call = lambda: gradients.token_grams(graphdef, params, inputs,  # noqa: E731
                                             implementation=method)
        return call, call, lambda tg: {"gram": union_gram(tg.cross[0], tg.chosen[0],
                                                          tg.rejected[0])}
    if task == "prediction":
        return _prediction_calls(method, graphdef, params, *inputs)
    rows, cols = inputs
    if method == "materialize":
        _refuse_if_too_big(int(rows.tokens.shape[0]) * 4 * sum(
            x.size for x in jax.tree.leaves(params)), "the rows' per-example gradients")
    chunk, ends_chunk = kernel.default_chunks(graphdef, params, rows, cols, method)
    call = lambda r, c: kernel.cross_gram(  # noqa: E731
        graphdef, params, r, c, implementation=method, chunk_size=chunk,
        ends_chunk_size=ends_chunk)
    warm_r, warm_c = min(chunk, len(rows.start)), min(chunk, len(cols.start))
    return (lambda: call(rows[:warm_r], cols[:warm_c])), (lambda: call(rows, cols)), _kernel_out


def _one_chunk_per_length(pairs, chunk: int, bucket: int):
    """The pairs of the first chunk of each cut length of ``pair_geometry(..., chunk_size=chunk,
    length_bucket=bucket)``, in its order: a call on them compiles every shape of the full call."""
    from entangle_jax.chunking import chunk_indices

    order = pairs.by_length()
    rows, seen = [], set()
    for idx in chunk_indices(len(pairs), chunk):
        width = pairs[order[idx]].cut_padding(bucket).chosen.tokens.shape[-1]
        if width not in seen:
            seen.add(width)
            rows.extend(order[idx])
    return pairs[np.asarray(rows)]


def _prediction_calls(method: str, graphdef, params, evals, train):
    """``jax_calls`` of a ``prediction`` case. ``auto``'s chunks are fixed first, so the warm-up
    (one chunk of training pairs, one of responses) compiles what the timed call runs."""
    from entangle_jax import dynamics, memory
    from entangle_jax.bench.case import entk_method, prediction_coefficients
    from entangle_jax.gradients import pairs_as_responses

    coef = prediction_coefficients(len(train))
    if method == "materialize":
        _refuse_if_too_big((2 * len(train) + 2 * len(evals)) * memory.tree_bytes(params),
                           "the per-example gradients of every response")
        run = entk_method(method, graphdef, params, train, *coef)  # every call forms them all
        return (lambda: run(evals)), (lambda: run(evals)), _changes_out
    if method != "auto":
        raise ValueError(f"unknown method {method!r} for prediction")
    train_chunk = dynamics.update_chunk_size(graphdef, params, train)
    eval_chunk = dynamics.changes_chunk_size(graphdef, params, pairs_as_responses(evals))
    chunks = {"train_chunk": train_chunk, "eval_chunk": eval_chunk}
    run = entk_method(method, graphdef, params, train, *coef, **chunks)
    warm = entk_method(method, graphdef, params, train[:train_chunk],
                       *(c[:train_chunk] for c in coef), **chunks)
    return (lambda: warm(evals[:-(-eval_chunk // 2)])), (lambda: run(evals)), _changes_out


def _changes_out(changes) -> dict:
    return {"changes": np.asarray(changes, np.float64)}


def torch_calls(spec: dict, model, inputs):
    """``(warm-up call, timed call, outputs)`` of a transformers method (``NotRun`` when it
    would not fit memory)."""
    from entangle_jax import memory
    from entangle_jax.bench import hf_peers

    p_bytes = 4 * hf_peers.n_params(model)
    task, method = spec["task"], spec["method"]
    if method not in TORCH_METHODS or (task in ("token_gram", "prediction")
                                       and method != "hf_loop"):
        raise ValueError(f"unknown transformers method {method!r} for {task}")
    if task == "pair_stats":
        pairs = inputs
        if method == "hf_loop":
            call = lambda p: hf_peers.loop_pair_stats(model, p.chosen, p.rejected)  # noqa: E731
        else:  # torch_func: the chunk of pairs whose 2·chunk gradients fit the memory budget
            chunk = memory.fit(2 * p_bytes, 32, len(pairs))
            call = lambda p: hf_peers.func_pair_stats(model, p.chosen, p.rejected,  # noqa: E731
                                                      chunk)
        return (lambda: call(pairs[:1])), (lambda: call(pairs)), dict
    if task == "token_gram":
        pair = inputs
        warm = lambda: hf_peers.loop_gradient(  # noqa: E731
            model, np.asarray(pair.chosen.tokens)[0], int(pair.chosen.start[0]), 1)
        call = lambda: hf_peers.loop_token_gram(model, pair.chosen, pair.rejected,  # noqa: E731
                                                TOKEN_LOOP_HOLD)
        return warm, call, dict
    if task == "prediction":  # the loop's kernel times the coefficients
        from entangle_jax.bench.case import prediction_coefficients
        from entangle_jax.bench.kernel import as_responses

        evals, train = inputs
        rows, cols = as_responses(evals), as_responses(train)
        weights = np.concatenate([np.asarray(c) * sign for c, sign in
                                  zip(prediction_coefficients(len(train)), (1, -1))]) / len(train)
        warm = lambda: hf_peers.loop_gradient(  # noqa: E731
            model, np.asarray(rows.tokens)[0], int(rows.start[0]), 1)
        return warm, lambda: hf_peers.loop_kernel(model, rows, cols)["kernel"] @ weights, \
            _changes_out
    rows, cols = inputs
    if method == "hf_loop":
        call, outputs = (lambda r, c: hf_peers.loop_kernel(model, r, c)), dict  # noqa: E731
    else:
        chunk = memory.fit(p_bytes, 32, int(rows.tokens.shape[0]))
        call = lambda r, c: hf_peers.func_kernel(model, r, c, chunk)  # noqa: E731
        outputs = _kernel_out
    return (lambda: call(rows[:1], cols[:1])), (lambda: call(rows, cols)), outputs


def _refuse_torch_kernel(spec: dict, config, inputs) -> None:
    """Refuse a transformers kernel case whose held rows would not fit memory, before loading."""
    from flax import nnx

    from entangle_jax import memory
    from entangle_jax.models import abstract_model, count_params

    p_bytes = 4 * count_params(nnx.state(abstract_model(config)))
    n_r = int(inputs[0].tokens.shape[0])
    chunk = 1 if spec["method"] == "hf_loop" else memory.fit(p_bytes, 32, n_r)
    _refuse_if_too_big((n_r + chunk) * p_bytes,
                       f"{n_r} rows' per-example gradients held and {chunk} column's, "
                       f"{p_bytes / 2**20:.0f} MiB each")


def _load_case(spec: dict) -> dict:
    from entangle_jax import pretrained

    start = time.perf_counter()
    if spec["method"] == "convert":
        pretrained.convert(root=spec["root"])
    else:
        if not pretrained.cache_dir(root=spec["root"]).is_dir():
            raise NotRun("not run: the cache is missing (the convert row failed)")
        ckpt = pretrained.load_pretrained(root=spec["root"])
        jax.block_until_ready(ckpt.params)
    return {"time_s": time.perf_counter() - start}


def run_case(spec: dict) -> dict:
    """Run one case; the result adds ``setup_s``, ``first_s``, ``time_s``, peak memory,
    compilation counts and ``outputs`` (or ``not_run`` with the reason)."""
    result = dict(spec)
    baseline = peak_resident_mb()
    try:
        if spec["task"] == "load":
            result.update(_load_case(spec), setup_s=0.0, first_s=None)
            result.update(peak_rss_mb=peak_resident_mb(), baseline_rss_mb=baseline)
            return result
        jax.monitoring.register_event_duration_secs_listener(_count_compile)
        start = time.perf_counter()
        if spec["method"] not in (*JAX_METHODS, *TORCH_METHODS):
            raise ValueError(f"unknown method {spec['method']!r}")
        if spec["method"] in JAX_METHODS:
            from entangle_jax.pretrained import load_pretrained

            ckpt = load_pretrained("smollm2")
            inputs = prepare_inputs(spec, ckpt)
            graphdef, params = truncated(ckpt, spec.get("layers"))
            result["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
            warm, call, outputs = jax_calls(spec, graphdef, params, inputs)
        else:
            from entangle_jax.bench import hf_peers

            text = text_side()
            inputs = prepare_inputs(spec, text)
            if spec["task"] == "kernel":
                _refuse_torch_kernel(spec, dataclasses.replace(
                    text.model_config, n_layers=spec.get("layers") or text.model_config.n_layers),
                    inputs)
            model = hf_peers.load_model(spec.get("layers"), attention=FUNC_ATTENTION if
                                        spec["method"] == "torch_func" else None)
            result["params"] = hf_peers.n_params(model)
            warm, call, outputs = torch_calls(spec, model, inputs)
        result.update(_size(spec["task"], inputs), setup_s=time.perf_counter() - start)
    except NotRun as why:
        result.update(not_run=str(why), peak_rss_mb=peak_resident_mb())
        return result
    baseline = peak_resident_mb()
    start = time.perf_counter()
    jax.block_until_ready(warm())
    first = time.perf_counter() - start
    warm_compiles = _COMPILES[0]
    start = time.perf_counter()
    out = call()
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
    result.update(first_s=first, time_s=elapsed, compiles_warmup=warm_compiles,
                  compiles_timed=_COMPILES[0] - warm_compiles, baseline_rss_mb=baseline,
                  peak_rss_mb=peak_resident_mb(),
                  outputs={k: v if isinstance(v, (int, float)) else
                           np.asarray(v, np.float64).tolist() for k, v in outputs(out).items()})
    return result


def _json_safe(value):
    """NaN (entries a loop did not compute) as null: strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    print(json.dumps(_json_safe(run_case(json.loads(sys.argv[1])))))
    sys.stdout.flush()
