"""The performance benchmark behind ``entangle bench``: the Gram strategies against the peers.

Every case runs in its own process (``entangle_jax.bench.case``) on the same seed-0 weights, so its
peak resident memory is its own. Rows: our ``materialize``, ``structured`` and ``auto``; (a)
``loop_grad``, a Python loop of per-example ``jax.grad``; (b) ``loop_token``, one backward per
response token (the paper's analysis code); (c) ``torch_vmap`` / ``torch_jacrev`` on the same
architecture and weights, when PyTorch is installed; (d) neural-tangents, when it imports. The
``entk_prediction`` rows (``entangle predict``'s first-order change of N pairs under the update
of B training pairs) set ``auto``, the toolkit's backward pass plus Jacobian-vector products,
against ``materialize``, every per-example gradient from ``vmap(grad)`` and the kernel.
The ratio column is each row's median time over ``auto``'s median in the same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

from tqdm.auto import tqdm

JAX_METHODS = ("materialize", "structured", "auto")


def _peer_status() -> dict[str, str | None]:
    """``{peer: None if usable else why not}`` for torch and neural-tangents."""
    status: dict[str, str | None] = {}
    try:
        import torch  # noqa: F401
        status["torch"] = None
    except ImportError:
        status["torch"] = "PyTorch is not installed (pip install -e '.[bench]')"
    try:
        import neural_tangents  # noqa: F401
        status["neural_tangents"] = None
    except ModuleNotFoundError:
        status["neural_tangents"] = ("not installed: its last release, 0.6.5, cannot run against "
                                     "jax 0.10 (it imports jax.core.Jaxpr, since removed, and "
                                     "pulls TensorFlow)")
    except Exception as err:  # installed, but broken against this JAX
        status["neural_tangents"] = f"does not import: {type(err).__name__}: {err}"
    return status


def plan_cases(quick: bool, peers: dict[str, str | None]) -> list[dict]:
    """The cases of a full (``quick=False``) or quick run."""
    torch_ok = peers["torch"] is None
    reps = 2 if quick else 5
    sizes = ["default"] if quick else ["default", "4L-256"]
    cases = []
    for config in sizes:
        for method in (*JAX_METHODS, "loop_grad", *(["torch_vmap"] if torch_ok else [])):
            # the ghost-only full Gram of a wide model takes ~30 s a call: timed once
            slow = method == "structured" and config != "default"
            cases.append({"config": config, "task": "sequence_gram", "method": method,
                          "pairs": 8 if quick else 32, "repeats": 1 if slow else reps})
        for method in (*JAX_METHODS, "loop_token", *(["torch_jacrev"] if torch_ok else [])):
            cases.append({"config": config, "task": "token_gram", "method": method, "pairs": 1,
                          "repeats": reps})
    # the first-order change of N pairs under the update of B training pairs (entangle predict)
    for method in ("auto", "materialize"):
        cases.append({"config": "default", "task": "entk_prediction", "method": method,
                      "pairs": 16 if quick else 256, "train_pairs": 32 if quick else 640,
                      "repeats": reps})
    cases.append({"config": "gpt2-small", "task": "forward", "method": "forward",
                  "pairs": 4 if quick else 32, "repeats": 1})
    cases.append({"config": "gpt2-small", "task": "pair_stats", "method": "auto",
                  "pairs": 8 if quick else 64, "repeats": 0})
    return cases


def matmul_gflops() -> float:
    """GFLOP/s of a 2048² float32 matmul now, in a fresh process (the machine's current peak)."""
    code = ("import jax,jax.numpy as jnp,time;a=jnp.ones((2048,2048));f=jax.jit(lambda a:a@a);"
            "f(a).block_until_ready();t=time.perf_counter();"
            "[f(a).block_until_ready() for _ in range(5)];"
            "print(2*2048**3/((time.perf_counter()-t)/5)/1e9)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def run_in_child(module: str, spec: dict, timeout: float) -> dict:
    """``python -m module <spec as JSON>`` in a child process (each case gets a fresh process, so
    its peak memory and compile time are its own): the child's last stdout line, parsed. A
    failure or timeout becomes ``{**spec, "error": …}``."""
    try:
        done = subprocess.run([sys.executable, "-m", module, json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {**spec, "error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(spec: dict, timeout: float) -> dict:
    """One tiny-model case (``entangle_jax.bench.case``) in a child process."""
    return run_in_child("entangle_jax.bench.case", spec, timeout)


def run_benchmark(quick: bool = False, timeout: float = 300.0, progress: bool = True,
                  on_row=None) -> dict:
    """Run every case; returns ``{"machine": …, "peers": …, "rows": [...]}``. ``on_row(result)`` is
    called after each case with the result so far (to save partial results of a long run).
    ``timeout`` (seconds per case) must be a finite number > 0 (``ConfigError``)."""
    from entangle_jax.config import ConfigError

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"timeout={timeout!r} is invalid: must be a finite number of seconds > 0")
    started = time.perf_counter()
    peers = _peer_status()
    machine = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "platform": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "python": platform.python_version(),
               "load_average_1m": os.getloadavg()[0], "matmul_gflops": matmul_gflops()}
    result = {"machine": machine, "peers": peers, "quick": quick, "rows": []}
    for spec in tqdm(plan_cases(quick, peers), desc="bench", disable=not progress):
        result["rows"].append(run_case(spec, timeout))
        machine["load_average_1m_end"] = os.getloadavg()[0]
        result["wall_s"] = time.perf_counter() - started
        _add_ratios(result["rows"])
        if on_row is not None:
            on_row(result)
    return result


def exit_status(result: dict) -> int:
    """1 when every case failed or timed out (nothing was measured), else 0."""
    rows = result["rows"]
    return 1 if rows and all("error" in r for r in rows) else 0


def _add_ratios(rows: list[dict]) -> None:
    """``vs_auto`` = row median / ``auto``'s median for the same config and task."""
    auto = {(r["config"], r["task"]): r["median_s"] for r in rows
            if r.get("method") == "auto" and "median_s" in r}
    for r in rows:
        ref = auto.get((r["config"], r["task"]))
        r["vs_auto"] = r["median_s"] / ref if ref and "median_s" in r else None


def format_table(result: dict) -> str:
    """A Markdown table of the rows, with the machine line and the skipped peers."""
    m = result["machine"]
    lines = [f"{m['date']} · {m['platform']} · {m['cpus']} CPUs · load {m['load_average_1m']:.1f}"
             f"→{m['load_average_1m_end']:.1f} · 2048² matmul {m['matmul_gflops']:.0f} GFLOP/s", "",
             "| config | task | method | pairs | median ms | compile s | peak MB | GFLOP/s | "
             "× auto time | compiles (warm/timed/other) | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        pairs = r["pairs"] if "train_pairs" not in r else f"{r['pairs']} × {r['train_pairs']}"
        head = f"| {r['config']} | {r['task']} | {r['method']} | {pairs} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error']} | | | | | | |")
            continue
        diff = "" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.1e}"
        ratio = "" if r["vs_auto"] is None else f"{r['vs_auto']:.2f}"
        lines.append(f"{head} {1e3 * r['median_s']:.1f} | {r['compile_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['gflops']:.1f} | {ratio} | "
                     f"{r['compiles_warmup']}/{r['compiles_timed']}/{r['compiles_other_shape']} | "
                     f"{diff} |")
    for peer, why in result["peers"].items():
        if why is not None:
            lines.append(f"\n{peer}: skipped — {why}")
    return "\n".join(lines)
