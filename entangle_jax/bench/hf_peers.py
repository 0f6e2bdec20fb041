"""The PyTorch peers of the real-model rows of ``entangle bench --model smollm2``: Hugging Face
transformers loading the same GGUF file as ``entangle_jax.pretrained`` (float32, as
tests/reference/smollm2_torch.py does), fed the same token ids as the JAX methods.

- ``loop_pair_stats``: the paper's code path, one pair at a time: two backward passes, each
  gradient flattened into one vector, then the dot products (float32, summed in float64 over
  slices: ``dots``).
- ``func_pair_stats`` / ``func_kernel``: ``torch.func.functional_call`` + ``vmap(grad)`` over
  chunks of responses, contracted leaf by leaf.
- ``loop_token_gram``: one backward per response token (``retain_graph``), each flattened.
- ``loop_kernel``: one backward per response, flattened; the rows' vectors held.

The input embedding of transformers' model has ``padding_idx`` = the pad id (``<|im_end|>``), and
torch then drops that row's gradient even where ``<|im_end|>`` is a real input (every ChatML turn
ends with it); it is cleared here, as in the reference (it changes no forward value).
"""

from __future__ import annotations

import numpy as np

from entangle_jax.chunking import chunk_indices, real_rows


def load_model(layers: int | None = None, attention: str | None = None):
    """transformers' ``LlamaForCausalLM`` of SmolLM2 from the wheel's GGUF file (float32, eval
    mode), cut to its first ``layers`` blocks when given (for cheap tests). ``attention``: an
    ``attn_implementation`` (default transformers' own, ``sdpa``). ``torch.func`` runs on
    ``"eager"``: ``vmap`` has no batching rule for the CPU ``sdpa`` kernels and falls back to a
    slow per-example loop (torch warns "There is a performance drop…")."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from entangle_jax.pretrained import SMOLLM2, gguf_path

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    path = gguf_path(SMOLLM2)
    extra = {} if attention is None else {"attn_implementation": attention}
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32, **extra)
    model.model.embed_tokens.padding_idx = None
    if layers is not None:
        model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:layers])
        model.config.num_hidden_layers = layers
    return model.eval()


def host(responses) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(tokens [N, T], start [N], length [N], window)`` of a ``Responses`` batch."""
    return (np.asarray(responses.tokens), np.asarray(responses.start),
            np.asarray(responses.length), int(responses.window))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# loops: one backward per response (or token), flattened
# ------------------------------------------------------------------------------------------------

#: Elements per slice of ``dots``: each slice's float32 dot product is summed in float64.
DOT_SLICE = 1 << 16


def dots(held, g) -> np.ndarray:
    """``held @ g`` (``held`` ``[m, P]`` or ``[P]``) in float32 slices of ``DOT_SLICE`` elements
    summed in float64. One float32 dot over all 134M entries of a SmolLM2 gradient loses ~1e-4
    relative (measured: ‖g‖² 38206.6 against 38210.9 in float64 on 35M entries), more than the
    methods compared differ by; sliced, the flattened loop keeps float32 arithmetic and its
    error stays at float32 rounding."""
    total = np.zeros(held.shape[:-1])
    for lo in range(0, g.shape[-1], DOT_SLICE):
        total += (held[..., lo:lo + DOT_SLICE] @ g[lo:lo + DOT_SLICE]).double().numpy()
    return total


def _flat_grad(model):
    import torch

    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _response_logprobs(model, ids: np.ndarray, start: int, length: int):
    """``[length]`` log-probs of the response tokens of one unpadded sequence, with its graph."""
    import torch

    tokens = torch.from_numpy(ids[:start + length].astype(np.int64))
    logp = torch.log_softmax(model(tokens[None]).logits[0], -1)
    return logp[torch.arange(start - 1, start + length - 1), tokens[start:start + length]]


def loop_gradient(model, ids: np.ndarray, start: int, length: int):
    """``(log π, flat gradient)`` of one response by one backward pass."""
    model.zero_grad(set_to_none=True)
    total = _response_logprobs(model, ids, start, length).sum()
    total.backward()
    return total.item(), _flat_grad(model).detach().clone()


def loop_pair_stats(model, chosen, rejected) -> dict[str, list[float]]:
    """log π_w, log π_l, ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ per pair: two backward passes, flatten, dot."""
    (tw, sw, lw, _), (tl, sl, ll, _) = host(chosen), host(rejected)
    out = {k: [] for k in ("logp_w", "logp_l", "sq_norm_w", "sq_norm_l", "inner")}
    for k in range(len(sw)):
        logp_w, g_w = loop_gradient(model, tw[k], int(sw[k]), int(lw[k]))
        logp_l, g_l = loop_gradient(model, tl[k], int(sl[k]), int(ll[k]))
        for name, value in (("logp_w", logp_w), ("logp_l", logp_l),
                            ("sq_norm_w", float(dots(g_w, g_w))),
                            ("sq_norm_l", float(dots(g_l, g_l))), ("inner", float(dots(g_w, g_l)))):
            out[name].append(value)
    return out


def loop_token_gram(model, chosen, rejected, hold: int) -> dict:
    """The per-token backward loop of one pair (the paper's analysis code): one forward per
    response, then one backward per response token with ``retain_graph``, each gradient
    flattened. The union Gram ``[[chosen, cross], [crossᵀ, rejected]]`` (``2R × 2R``) needs every
    per-token gradient held (2R · P floats: 69 GB at R = 64 on SmolLM2), so the first ``hold``
    gradients of each side are held and every gradient is formed once and dotted with them: the
    loop's backward passes and flattening, timed exactly (a lower bound of the full loop's time),
    and the Gram's entries in the held rows and columns (the rest NaN), with every per-token
    gradient's squared norm (``sq_norms``)."""
    import torch

    (tw, sw, lw, _), (tl, sl, ll, _) = host(chosen), host(rejected)
    sides = [(tw[0], int(sw[0]), int(lw[0])), (tl[0], int(sl[0]), int(ll[0]))]
    r = max(int(lw[0]), int(ll[0]))
    gram = np.full((2 * r, 2 * r), np.nan)
    held = torch.empty((2 * hold, n_params(model)))
    held_at: list[int] = []
    sq_norms = np.full(2 * r, np.nan)
    backwards = 0
    for side, (ids, start, length) in enumerate(sides):
        logp = _response_logprobs(model, ids, start, length)
        for i in range(length):
            model.zero_grad(set_to_none=True)
            logp[i].backward(retain_graph=True)
            backwards += 1
            g = _flat_grad(model).detach()
            at = side * r + i
            sq_norms[at] = float(dots(g, g))
            if held_at:
                gram[held_at, at] = gram[at, held_at] = dots(held[:len(held_at)], g)
            if i < hold:
                held[len(held_at)] = g
                held_at.append(at)
                gram[at, at] = sq_norms[at]
        del logp
    return {"gram": gram, "sq_norms": sq_norms, "backward_passes": backwards,
            "held": len(held_at)}


def loop_kernel(model, rows, cols) -> dict:
    """``K[n, b]`` by one backward per response, flattened; the rows' vectors held. Also each
    response's squared gradient norm (``row_sq_norms``, ``col_sq_norms``)."""
    import torch

    (tr, sr, lr, _), (tc, sc, lc, _) = host(rows), host(cols)
    held = torch.empty((len(sr), n_params(model)))
    for k in range(len(sr)):
        held[k] = loop_gradient(model, tr[k], int(sr[k]), int(lr[k]))[1]
    row_sq = np.array([float(dots(h, h)) for h in held])
    out, col_sq = np.zeros((len(sr), len(sc))), np.zeros(len(sc))
    for b in range(len(sc)):
        g = loop_gradient(model, tc[b], int(sc[b]), int(lc[b]))[1]
        out[:, b], col_sq[b] = dots(held, g), float(dots(g, g))
    return {"kernel": out, "row_sq_norms": row_sq, "col_sq_norms": col_sq}


# ------------------------------------------------------------------------------------------------
# torch.func: functional_call + vmap(grad) over chunks of responses
# ------------------------------------------------------------------------------------------------

def _func_grads(model, tokens, start, length, window: int):
    """``{name: [c, …]}`` per-response gradients of a chunk of padded sequences."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    t = tokens.shape[-1]

    def seq_logprob(p, tok, s, n):
        logits = functional_call(model, p, (tok[None],)).logits[0]
        targets = (s + torch.arange(window)).clamp(0, t - 1)
        logp = torch.log_softmax(logits[(targets - 1).clamp(0, t - 1)], -1)
        picked = torch.gather(logp, 1, tok[targets][:, None])[:, 0]
        return torch.where(torch.arange(window) < n, picked, torch.zeros_like(picked)).sum()

    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.int64))  # noqa: E731
    return vmap(grad(seq_logprob), in_dims=(None, 0, 0, 0))(params, as_t(tokens), as_t(start),
                                                             as_t(length))


def func_pair_stats(model, chosen, rejected, chunk: int) -> dict[str, list[float]]:
    """‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ per pair from ``vmap(grad)`` over ``chunk`` pairs at a time
    (their 2·chunk responses in one call), contracted leaf by leaf."""
    (tw, sw, lw, window), (tl, sl, ll, _) = host(chosen), host(rejected)
    n = len(sw)
    out = {k: [] for k in ("sq_norm_w", "sq_norm_l", "inner")}
    for idx in chunk_indices(n, chunk):
        grads = _func_grads(model, np.concatenate([tw[idx], tl[idx]]),
                            np.concatenate([sw[idx], sl[idx]]),
                            np.concatenate([lw[idx], ll[idx]]), window)
        sq_w = sq_l = inner = 0.0
        for g in grads.values():
            g = g.reshape(2 * chunk, -1)
            g_w, g_l = g[:chunk], g[chunk:]
            sq_w = sq_w + (g_w * g_w).sum(1).double()
            sq_l = sq_l + (g_l * g_l).sum(1).double()
            inner = inner + (g_w * g_l).sum(1).double()
        width = int(real_rows(idx, n).sum())
        out["sq_norm_w"] += sq_w[:width].tolist()
        out["sq_norm_l"] += sq_l[:width].tolist()
        out["inner"] += inner[:width].tolist()
    return out


def func_kernel(model, rows, cols, chunk: int) -> np.ndarray:
    """``K[n, b]``: the rows' per-example gradients from ``vmap(grad)`` held, the columns'
    formed ``chunk`` at a time and contracted leaf by leaf."""
    (tr, sr, lr, wr), (tc, sc, lc, wc) = host(rows), host(cols)
    window = max(wr, wc)
    held = [_func_grads(model, tr[lo:lo + chunk], sr[lo:lo + chunk], lr[lo:lo + chunk], window)
            for lo in range(0, len(sr), chunk)]
    out = np.zeros((len(sr), len(sc)))
    for lo in range(0, len(sc), chunk):
        g = _func_grads(model, tc[lo:lo + chunk], sc[lo:lo + chunk], lc[lo:lo + chunk], window)
        for i, h in enumerate(held):
            block = sum(h[k].flatten(1) @ g[k].flatten(1).T for k in g)
            out[i * chunk:(i + 1) * chunk, lo:lo + chunk] = block.double().numpy()
    return out
