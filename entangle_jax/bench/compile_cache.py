"""What the persistent compilation cache saves: the first ``pair_geometry`` call on the default
model in fresh processes, with the cache off, cold (empty folder) and warm (filled by the cold run).

    python -m entangle_jax.bench.compile_cache [--rounds 3]

Each process builds the default model (random initialization: compile time does not depend on the
weights) and 8 synthetic pairs, then times the first call (compile + run) and the median of three
more (run); compile = first − run. Rounds are interleaved (off, cold, warm) and the table gives the
median of each column. The cache is what ``entangle`` turns on for every command
(``cli.common.enable_compilation_cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _case() -> None:
    """One process's measurement, printed as JSON (run by ``_process``)."""
    t0 = time.perf_counter()
    from flax import nnx

    from entangle_jax.bench.case import synthetic_pairs
    from entangle_jax.bench.configs import CONFIGS
    from entangle_jax.cli.common import enable_compilation_cache
    from entangle_jax.gradients import pair_geometry
    from entangle_jax.models import init_model

    enable_compilation_cache()
    cfg = CONFIGS["default"]
    graphdef, params = nnx.split(init_model(cfg.model, seed=0))
    pairs = synthetic_pairs(8, cfg.model.max_len, cfg.window, cfg.model.vocab_size, 0,
                            cfg.window - 1)
    setup = time.perf_counter() - t0

    def call():
        start = time.perf_counter()
        geo = pair_geometry(graphdef, params, pairs)
        float(geo.inner.sum())  # waits for the result
        return time.perf_counter() - start

    first = call()
    run = statistics.median(call() for _ in range(3))
    print(json.dumps({"setup_s": setup, "first_s": first, "run_s": run,
                      "compile_s": max(0.0, first - run)}))


def _process(cache: str) -> dict:
    env = {**os.environ, "ENTANGLE_JAX_COMPILATION_CACHE": cache}
    out = subprocess.run([sys.executable, "-m", "entangle_jax.bench.compile_cache", "--case"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(rounds: int) -> dict[str, list[dict]]:
    """``{setting: [one process's numbers per round]}`` for off, cold and warm."""
    results: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            results["off"].append(_process("off"))
            results["cold"].append(_process(folder))
            results["warm"].append(_process(folder))
    return results


def format_table(results: dict[str, list[dict]]) -> str:
    lines = ["| cache | first call s | compile s | run ms | process setup s |",
             "|---|---|---|---|---|"]
    for setting, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        lines.append(f"| {setting} | {med['first_s']:.2f} | {med['compile_s']:.2f} | "
                     f"{1e3 * med['run_s']:.1f} | {med['setup_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _case()
        return
    results = measure(args.rounds)
    print(format_table(results))
    print(f"medians of {args.rounds} interleaved rounds, each setting in a fresh process")


if __name__ == "__main__":
    main()
