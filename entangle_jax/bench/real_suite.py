"""The real-model rows of ``entangle bench --model smollm2``: plan, interleaved rounds, agreement
with the transformers loop, goals, Markdown table.

Every case runs in its own process (``entangle_jax.bench.real``) on SmolLM2-135M-Instruct and real
chat-formatted HH-RLHF pairs. A task's methods run one after the other in each round, in an order
rotated from round to round, and a row's time is the median over rounds of one timed call (after a
warm-up call on the first chunk, which compiles). Rows:

1. ``pair_stats``: ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ of the first 64 eval pairs (prompt ≤ 128, response
   ≤ 64 tokens): ``hf_loop`` (transformers, one pair at a time, two backward passes, flatten,
   dot: the paper's code path and the reference), ``torch_func`` (``functional_call`` +
   ``vmap(grad)`` in chunks that fit memory), our ``materialize``, ``structured``, ``auto``.
2. ``token_gram``: the token-wise Grams of one pair with two 64-token responses: ``hf_loop`` (one
   backward per response token, ``retain_graph``, flattened: its backward passes are timed in
   full, its Gram only in the rows it holds, since all 128 gradients would need 69 GB; so its time
   is a lower bound), our ``structured`` and ``auto``.
3. ``kernel``: ``K[n, b] = ⟨g_n, g_b⟩`` between the 2N responses of N eval pairs and the 2B
   responses of B training pairs (``bench.kernel.cross_gram``): at a small size every method
   (``hf_loop``, ``torch_func``, ``materialize``: per-example gradients from ``vmap(grad)``,
   ``stagewise``); at N = 64, B = 256 ours (``auto``, which runs ``stagewise`` there) and
   ``torch_func``, refused with the memory it would need.
4. ``prediction``: ``entangle predict``'s product of that kernel with the training pairs' loss
   coefficients, ``⟨g_n, U⟩``, which it computes without the kernel (``auto``: one weighted
   backward pass over the B pairs, one Jacobian-vector product per response): at a small size
   against ``hf_loop`` (the loop's kernel times the coefficients) and ``materialize`` (every
   per-example gradient from ``vmap(grad)``); at N = 64, B = 256 ``auto``, and ``materialize``
   refused with the memory it would need.
5. Agreement with the reference (``hf_loop``, float32), beside the times.
6. ``load``: the first load from the wheel (``pretrained.convert``: GGUF parse, dequantize,
   convert, save) and a later load from that cache (``load_pretrained``).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
from tqdm.auto import tqdm

from entangle_jax.bench import run_in_child

#: Sizes of a full and of a quick run.
FULL = {"pairs": 64, "token_response": 64, "kernel_small": (2, 8), "kernel_full": (64, 256),
        "prediction_small": (2, 4), "rounds": 3}
QUICK = {"pairs": 4, "token_response": 8, "kernel_small": (1, 2), "kernel_full": (64, 256),
         "prediction_small": (1, 2), "rounds": 1}
#: Token budgets of the pairs (prompt keeps its last tokens, response its first).
BUDGETS = {"max_prompt": 128, "max_response": 64}
#: Goals the table judges (on ``auto``; the kernel's at N = 64, B = 256).
GOALS = {"pair_stats_vs_loop": 3.0, "pair_stats_vs_func": 1.5, "pair_stats_peak_mb": 4096,
         "token_gram_vs_loop": 10.0, "kernel_peak_mb": 8192}
#: Seconds allowed to each real case by default.
REAL_TIMEOUT = 3 * 3600.0

HF_METHODS = ("hf_loop", "torch_func")


def peer_status() -> dict[str, str | None]:
    """``{"transformers": None if usable else why not}``: the PyTorch peers need torch and
    transformers (``pip install -e '.[reference]'``)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        return {"transformers": f"{err.name} is not installed (pip install -e '.[reference]')"}
    return {"transformers": None}


def plan(quick: bool, peers: dict[str, str | None], rounds: int | None = None,
         cache_root: str = "", tasks=None) -> list[dict]:
    """The cases (specs with ``rounds``: how many rounds run them) of a full or quick run, of
    the ``tasks`` named (default all)."""
    size = QUICK if quick else FULL
    rounds = rounds or size["rounds"]
    hf = peers.get("transformers") is None
    cases = [{"task": "load", "method": m, "root": cache_root, "rounds": rounds}
             for m in ("convert", "cache")]
    stats = {"task": "pair_stats", "pairs": size["pairs"], **BUDGETS}
    for m in (*(HF_METHODS if hf else ()), "materialize", "structured", "auto", "auto_by_length"):
        cases.append({**stats, "method": m, "rounds": rounds})
    token = {"task": "token_gram", "response": size["token_response"],
             "max_prompt": BUDGETS["max_prompt"]}
    for m in (*(("hf_loop",) if hf else ()), "structured", "auto"):
        cases.append({**token, "method": m, "rounds": rounds})
    n, b = size["kernel_small"]
    for m in (*(HF_METHODS if hf else ()), "materialize", "stagewise"):
        cases.append({"task": "kernel", "eval_pairs": n, "train_pairs": b, **BUDGETS,
                      "method": m, "rounds": rounds})
    n, b = size["kernel_full"]
    full = {"task": "kernel", "eval_pairs": n, "train_pairs": b, **BUDGETS, "rounds": 1}
    if not quick:  # ~10·P·T per response over 640 responses: once, and not in a quick run
        cases.append({**full, "method": "auto"})
    if hf:  # refused before any work: it would hold 128 per-example gradients
        cases.append({**full, "method": "torch_func"})
    n, b = size["prediction_small"]
    for m in (*(("hf_loop",) if hf else ()), "materialize", "auto"):
        cases.append({**full, "task": "prediction", "eval_pairs": n, "train_pairs": b,
                      "method": m, "rounds": rounds})
    for m in (("auto",) if not quick else ()) + ("materialize",):  # materialize: refused
        cases.append({**full, "task": "prediction", "method": m})
    return [c for c in cases if tasks is None or c["task"] in tasks]


def slot(spec: dict) -> tuple:
    """What identifies a row: the spec without its round bookkeeping."""
    return tuple(sorted((k, v) for k, v in spec.items() if k not in ("rounds", "root")))


def run_case(spec: dict, timeout: float) -> dict:
    """One real-model case (``entangle_jax.bench.real``) in a child process."""
    return run_in_child("entangle_jax.bench.real", spec, timeout)


def _arrays(outputs: dict | None) -> dict:
    if not outputs:
        return {}
    return {k: np.array(v, np.float64) if isinstance(v, list) else v for k, v in outputs.items()}


def aggregate(spec: dict, runs: list[dict]) -> dict:
    """One row from a slot's runs: median time, largest peak memory, the first run's outputs."""
    row = {k: v for k, v in spec.items() if k not in ("rounds", "root")}
    row["runs"] = [{k: v for k, v in r.items() if k != "outputs"} for r in runs]
    done = [r for r in runs if "time_s" in r]
    if not done:
        first = runs[0]
        row["error" if "error" in first else "not_run"] = first.get("error",
                                                                    first.get("not_run"))
        if "not_run" in first and "peak_rss_mb" in first:
            row["peak_rss_mb"] = first["peak_rss_mb"]
        return row
    times = [r["time_s"] for r in done]
    row.update(times_s=times, median_s=statistics.median(times),
               peak_rss_mb=max(r["peak_rss_mb"] for r in done),
               setup_s=statistics.median(r["setup_s"] for r in done))
    firsts = [r["first_s"] for r in done if r.get("first_s") is not None]
    row["first_s"] = statistics.median(firsts) if firsts else None
    for key in ("compiles_warmup", "compiles_timed", "params", "n_pairs", "seq_len", "window",
                "response_tokens", "rows", "cols", "train_seq_len"):
        if key in done[0]:
            row[key] = done[0][key]
    if "compiles_timed" in row:
        row["compiles_timed"] = max(r.get("compiles_timed", 0) for r in done)
    row["outputs"] = done[0].get("outputs")
    if len(done) < len(runs):
        row["failed_runs"] = len(runs) - len(done)
    return row


# ------------------------------------------------------------------------------------------------
# agreement, ratios, goals
# ------------------------------------------------------------------------------------------------

def pair_stats_errors(x: dict, ref: dict) -> dict[str, float]:
    """Largest errors over the pairs: ‖g_w‖² and ‖g_l‖² relative, ⟨g_w, g_l⟩ relative to
    ‖g_w‖ ‖g_l‖ (in cosine units: an inner product near 0 has no relative error to speak of)."""
    x, ref = _arrays(x), _arrays(ref)
    scale = np.sqrt(ref["sq_norm_w"] * ref["sq_norm_l"])
    return {"sq_norm_w": float(np.max(np.abs(x["sq_norm_w"] - ref["sq_norm_w"])
                                      / np.abs(ref["sq_norm_w"]))),
            "sq_norm_l": float(np.max(np.abs(x["sq_norm_l"] - ref["sq_norm_l"])
                                      / np.abs(ref["sq_norm_l"]))),
            "inner": float(np.max(np.abs(x["inner"] - ref["inner"]) / scale))}


def gram_error(x, ref, ref_outputs: dict) -> tuple[float, int]:
    """``(max |x − ref| / (‖g_i‖ ‖g_j‖), entries compared)`` over the top-left block both have and
    the entries the reference computed (not NaN / null), with the squared norms the reference
    recorded (``sq_norms`` of a token Gram's rows and columns, ``row_sq_norms`` /
    ``col_sq_norms`` of a kernel's): errors in cosine units, as ⟨g_w, g_l⟩'s."""
    x = np.array(x, np.float64)
    ref = np.array([[np.nan if v is None else v for v in row] for row in ref], np.float64)
    h, w = min(x.shape[0], ref.shape[0]), min(x.shape[1], ref.shape[1])
    x, ref = x[:h, :w], ref[:h, :w]
    rows = ref_outputs.get("row_sq_norms", ref_outputs.get("sq_norms"))
    cols = ref_outputs.get("col_sq_norms", ref_outputs.get("sq_norms"))
    scale = np.sqrt(np.outer(np.asarray(rows, np.float64)[:h], np.asarray(cols, np.float64)[:w]))
    mask = np.isfinite(ref)
    return float(np.max((np.abs(x - ref) / scale)[mask])), int(mask.sum())


def gram_error_of_max(x, ref) -> float:
    """``max |x − ref| / max |ref|`` over the entries ``gram_error`` compares: the error on the
    Gram's own scale (a near-certain token's gradient is tiny, and its float32 value differs
    between implementations far more in cosine units)."""
    x = np.array(x, np.float64)
    ref = np.array([[np.nan if v is None else v for v in row] for row in ref], np.float64)
    h, w = min(x.shape[0], ref.shape[0]), min(x.shape[1], ref.shape[1])
    x, ref = x[:h, :w], ref[:h, :w]
    mask = np.isfinite(ref)
    return float(np.max(np.abs(x - ref)[mask]) / np.max(np.abs(ref[mask])))


def _same_size(a: dict, b: dict) -> bool:
    keys = ("pairs", "response", "eval_pairs", "train_pairs")
    return all(a.get(k) == b.get(k) for k in keys)


def add_comparisons(rows: list[dict]) -> None:
    """Per row: ``vs_loop`` and ``vs_func`` (their median time over the row's, same task and
    size: above 1 = this row is faster), ``agreement`` with the transformers loop, ``goals``."""
    def find(task, method, like=None):
        for r in rows:
            if r["task"] == task and r["method"] == method and "median_s" in r and (
                    like is None or _same_size(r, like)):
                return r
        return None

    for r in rows:
        r["vs_loop"] = r["vs_func"] = r["agreement"] = None
        if "median_s" not in r or r["task"] == "load":
            continue
        loop, func = find(r["task"], "hf_loop", r), find(r["task"], "torch_func", r)
        if loop is not None and r is not loop:
            r["vs_loop"] = loop["median_s"] / r["median_s"]
        if func is not None and r is not func:
            r["vs_func"] = func["median_s"] / r["median_s"]
        ref = loop if r["task"] != "kernel" else find("kernel", "hf_loop")
        if ref is None or r is ref or not r.get("outputs") or not ref.get("outputs"):
            continue
        if r["task"] == "pair_stats":
            r["agreement"] = pair_stats_errors(r["outputs"], ref["outputs"])
        elif r["task"] == "prediction":
            x, y = (np.asarray(o["changes"], np.float64) for o in (r["outputs"], ref["outputs"]))
            r["agreement"] = {"of_max": float(np.max(np.abs(x - y)) / np.max(np.abs(y))),
                              "entries": int(y.size)}
        else:
            name = "gram" if r["task"] == "token_gram" else "kernel"
            err, n = gram_error(r["outputs"][name], ref["outputs"][name], ref["outputs"])
            r["agreement"] = {name: err, "of_max": gram_error_of_max(r["outputs"][name],
                                                                     ref["outputs"][name]),
                              "entries": n}
    for r in rows:
        r["goals"] = _goals(r)


def _judge(what: str, ok: bool, value: str) -> str:
    return f"{what}: {'met' if ok else 'NOT met'} ({value})"


def _goals(r: dict) -> list[str]:
    if r["method"] != "auto" or "median_s" not in r and r["task"] != "kernel":
        return []
    if r["task"] == "pair_stats":
        out = []
        if r.get("vs_loop") is not None:
            out.append(_judge(f"≥ {GOALS['pair_stats_vs_loop']:g}× loop",
                              r["vs_loop"] >= GOALS["pair_stats_vs_loop"], f"{r['vs_loop']:.2f}×"))
        if r.get("vs_func") is not None:
            out.append(_judge(f"≥ {GOALS['pair_stats_vs_func']:g}× torch.func",
                              r["vs_func"] >= GOALS["pair_stats_vs_func"], f"{r['vs_func']:.2f}×"))
        out.append(_judge("peak < 4 GB", r["peak_rss_mb"] < GOALS["pair_stats_peak_mb"],
                          f"{r['peak_rss_mb'] / 1024:.2f} GB"))
        return out
    if r["task"] == "token_gram" and r.get("vs_loop") is not None:
        return [_judge(f"≥ {GOALS['token_gram_vs_loop']:g}× loop (its lower bound)",
                       r["vs_loop"] >= GOALS["token_gram_vs_loop"], f"{r['vs_loop']:.2f}×")]
    if r["task"] in ("kernel", "prediction") and (r.get("eval_pairs"), r.get("train_pairs")) \
            == FULL["kernel_full"]:
        if "median_s" not in r:
            return [f"runs at N=64, B=256 in < 8 GB: NOT met ({r.get('error') or r.get('not_run')})"]
        return [_judge("runs at N=64, B=256 in < 8 GB", r["peak_rss_mb"] < GOALS["kernel_peak_mb"],
                       f"{r['peak_rss_mb'] / 1024:.2f} GB in {r['median_s']:.0f} s")]
    return []


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------

def run_real_benchmark(quick: bool = False, timeout: float = REAL_TIMEOUT, rounds: int | None = None,
                       progress: bool = True, on_row=None, tasks=None) -> dict:
    """Every real-model case (of ``tasks``, default all), interleaved round by round; returns
    ``{"machine", "peers", "quick", "rounds", "rows", "wall_s"}``. ``on_row(result)`` after each
    case (partial results)."""
    from entangle_jax.bench import matmul_gflops

    started = time.perf_counter()
    peers = peer_status()
    machine = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "platform": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "python": platform.python_version(),
               "load_average_1m": os.getloadavg()[0], "matmul_gflops": matmul_gflops()}
    root = tempfile.mkdtemp(prefix="entangle-bench-cache-")
    cases = plan(quick, peers, rounds, root, tasks)
    n_rounds = max(c["rounds"] for c in cases)
    runs: dict[tuple, list[dict]] = {slot(c): [] for c in cases}
    result = {"model": "smollm2", "machine": machine, "peers": peers, "quick": quick,
              "rounds": n_rounds, "budgets": BUDGETS, "rows": []}
    order = []
    for r in range(n_rounds):
        for task in ("load", "pair_stats", "token_gram", "kernel", "prediction"):
            group = [c for c in cases if c["task"] == task and c["rounds"] > r]
            if task != "load":  # rotate the order of a task's methods from round to round
                group = group[r % len(group):] + group[:r % len(group)] if group else group
            order += group
    try:
        for spec in tqdm(order, desc="bench smollm2", disable=not progress):
            runs[slot(spec)].append(run_case(spec, timeout))
            result["rows"] = [aggregate(c, runs[slot(c)]) for c in cases if runs[slot(c)]]
            add_comparisons(result["rows"])
            machine["load_average_1m_end"] = os.getloadavg()[0]
            result["wall_s"] = time.perf_counter() - started
            if on_row is not None:
                on_row(saved(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def saved(result: dict) -> dict:
    """The result as written to JSON: per-pair statistics kept, Gram and kernel matrices left
    out (their agreement is in the row)."""
    rows = []
    for r in result["rows"]:
        r = dict(r)
        if r.get("task") in ("token_gram", "kernel"):
            r.pop("outputs", None)
        rows.append(r)
    return {**result, "rows": rows}


def exit_status(result: dict) -> int:
    """1 when no case ran (every one failed, timed out or was refused), else 0."""
    rows = result["rows"]
    return 1 if rows and all("median_s" not in r for r in rows) else 0


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------

def _size_label(r: dict) -> str:
    if r["task"] == "load":
        return "GGUF → cache" if r["method"] == "convert" else "cache → model"
    if r["task"] == "pair_stats":
        extra = f" · T {r['seq_len']} · {r['response_tokens']} resp. tokens" if "seq_len" in r else ""
        return f"{r['pairs']} pairs{extra}"
    if r["task"] == "token_gram":
        return f"1 pair · R {r['response']}" + (f" · T {r['seq_len']}" if "seq_len" in r else "")
    n, b = r["eval_pairs"], r["train_pairs"]
    return f"{2 * n}×{2 * b} (N {n}, B {b})" + (f" · T {r['seq_len']}" if "seq_len" in r else "")


def _agreement_label(r: dict) -> str:
    a = r.get("agreement")
    if not a:
        return "reference" if r["method"] == "hf_loop" and r["task"] != "load" else ""
    if r["task"] == "pair_stats":
        return f"‖g_w‖² {a['sq_norm_w']:.1e} · ‖g_l‖² {a['sq_norm_l']:.1e} · ⟨g_w,g_l⟩ {a['inner']:.1e}"
    if r["task"] == "prediction":
        return f"{a['of_max']:.1e} of max ({a['entries']} changes)"
    name = "gram" if r["task"] == "token_gram" else "kernel"
    return (f"{a[name]:.1e} cos · {a['of_max']:.1e} of max ({a['entries']} entries)")


def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    """A Markdown table of the real-model rows, with the machine line and notes."""
    m = result["machine"]
    lines = [f"{m['date']} · {m['platform']} · {m['cpus']} CPUs · load {m['load_average_1m']:.1f}"
             f"→{m.get('load_average_1m_end', m['load_average_1m']):.1f} · 2048² matmul "
             f"{m['matmul_gflops']:.0f} GFLOP/s · SmolLM2-135M-Instruct · "
             f"{result['rounds']} round(s) · wall {result.get('wall_s', 0) / 60:.1f} min"
             + (" · QUICK RUN: smaller sizes than the goals'" if result["quick"] else ""), "",
             "| task | method | size | median s | runs | first s | setup s | peak MB | × loop | "
             "× torch.func | max error vs transformers loop | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        head = f"| {r['task']} | {r['method']} | {_size_label(r)} |"
        if "median_s" not in r:
            why = r.get("error") or r.get("not_run")
            goal = "; ".join(r.get("goals") or [])
            lines.append(f"{head} {why} | | | | {_fmt(r.get('peak_rss_mb'), '.0f')} | | | | "
                         f"{goal} |")
            continue
        goals = "; ".join(r.get("goals") or [])
        if result["quick"] and goals:
            goals = f"quick size, not judged — {goals}"
        lines.append(f"{head} {r['median_s']:.2f} | {len(r['times_s'])} | "
                     f"{_fmt(r.get('first_s'), '.1f')} | {_fmt(r.get('setup_s'), '.1f')} | "
                     f"{r['peak_rss_mb']:.0f} | {_fmt(r.get('vs_loop'), '.2f')} | "
                     f"{_fmt(r.get('vs_func'), '.2f')} | {_agreement_label(r)} | {goals} |")
    lines += ["", "× loop / × torch.func: that peer's median time over the row's, same task and "
              "size (above 1: faster than the peer). The token-Gram loop holds "
              "2 per-token gradients a side (all 2R would need 2R × 538 MB): its backward passes "
              "are all timed, so its time is a lower bound of the full loop's and its Gram is "
              "compared in the rows it holds. Kernel errors: over the block of the small kernel "
              "that the transformers loop computed. ‖g‖² errors are relative; ⟨g_w, g_l⟩'s and "
              "every Gram or kernel entry's ⟨g_i, g_j⟩ are relative to ‖g_i‖‖g_j‖ (cos: cosine "
              "units, norms from the loop; a near-certain token's tiny gradient differs most "
              "there) and to the largest entry (of max)."]
    if result["quick"]:
        lines.append("Quick run: ours at N = 64, B = 256 is not run; the goals are stated at the "
                     "full run's sizes (64 pairs, R = 64).")
    for peer, why in result["peers"].items():
        if why is not None:
            lines.append(f"{peer}: skipped — {why}")
    return "\n".join(lines)
