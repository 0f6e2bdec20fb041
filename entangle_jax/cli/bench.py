"""``entangle bench``: time the gradient-Gram strategies against the peers, write bench.json."""

from __future__ import annotations

from entangle_jax.cli.common import positive_float


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark the gradient Grams (ours vs loops, torch.func, neural-tangents)",
        description="Times the sequence-level Gram (B pairs) and the token-wise Gram (one long "
                    "pair) of each strategy against a loop of per-example jax.grad, the per-token "
                    "backward loop, torch.func vmap(grad)/jacrev on the same weights (when torch "
                    "is installed) and neural-tangents (when it imports), plus GPT-2-small-sized "
                    "feasibility rows. Each case runs in its own process. Prints a Markdown table "
                    "and writes OUT/bench.json and OUT/bench.md. The full run takes ~10 min on an "
                    "idle 2-core CPU; --quick a few minutes. Exit status 0 when at least one case "
                    "ran, 1 when every case failed or timed out, 2 on bad input.")
    parser.add_argument("--quick", action="store_true",
                        help="default model only, 8 pairs, 2 repeats; GPT-2 rows on a few pairs")
    parser.add_argument("--out", default="reports", help="output directory (default reports)")
    parser.add_argument("--timeout", type=positive_float, default=300.0,
                        help="seconds allowed to each case before it is reported as timed out "
                             "(a finite number > 0; default 300)")
    parser.set_defaults(run=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from entangle_jax.bench import exit_status, format_table, run_benchmark
    from entangle_jax.cli.common import check_output_dir, locked_outputs
    from entangle_jax.io import atomic_write_json, atomic_write_text

    out = Path(args.out)
    check_output_dir(out, "--out", ("bench.json", "bench.md"))

    def save(result):  # after every case, so a long run leaves its partial results
        atomic_write_json(out / "bench.json", result)
        atomic_write_text(out / "bench.md", format_table(result) + "\n")

    with locked_outputs((out, "--out")):
        result = run_benchmark(quick=args.quick, timeout=args.timeout, on_row=save)
    print(format_table(result))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.md'}")
    status = exit_status(result)
    if status:
        print(f"entangle: bench: every one of the {len(result['rows'])} cases failed or timed "
              f"out (first: {result['rows'][0]['error']}); exit status 1", file=sys.stderr)
    return status
