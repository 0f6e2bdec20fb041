"""``entangle bench``: time the gradient-Gram strategies against the peers, write bench.json (or,
with ``--model smollm2``, the real-model rows into bench-smollm2.json)."""

from __future__ import annotations

from entangle_jax.cli.common import positive_float, positive_int

#: ``--model`` values: the pretrained models with real-model rows.
REAL_MODELS = ("smollm2",)
#: The real-model rows' tasks (``--tasks``).
REAL_TASKS = ("load", "pair_stats", "token_gram", "kernel", "prediction")


def _tasks(text: str) -> tuple[str, ...]:
    import argparse

    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in tasks if t not in REAL_TASKS]
    if not tasks or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: give tasks among {', '.join(REAL_TASKS)}")
    return tasks


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark the gradient Grams (ours vs loops, torch.func, neural-tangents)",
        description="Times the sequence-level Gram (B pairs) and the token-wise Gram (one long "
                    "pair) of each strategy against a loop of per-example jax.grad, the per-token "
                    "backward loop, torch.func vmap(grad)/jacrev on the same weights (when torch "
                    "is installed) and neural-tangents (when it imports), plus GPT-2-small-sized "
                    "feasibility rows. Each case runs in its own process. Prints a Markdown table "
                    "and writes OUT/bench.json and OUT/bench.md. The full run takes ~10 min on an "
                    "idle 2-core CPU; --quick a few minutes. With --model smollm2: the real-model "
                    "rows instead (SmolLM2-135M-Instruct on real HH-RLHF pairs against "
                    "transformers' per-pair and per-token backward loops and torch.func, the "
                    "cross-pair kernel and entangle predict's first-order changes, load times; "
                    "docs/performance.md), written to "
                    "OUT/bench-smollm2.json and .md: hours in full on 2 cores, --quick ~15 min. "
                    "Exit status 0 when at least one case ran, 1 when every case failed or timed "
                    "out, 2 on bad input.")
    parser.add_argument("--quick", action="store_true",
                        help="default model only, 8 pairs, 2 repeats; GPT-2 rows on a few pairs "
                             "(with --model: 4 pairs, an 8-token response for the token Gram, the "
                             "small kernel only, one round)")
    parser.add_argument("--model", choices=REAL_MODELS,
                        help="run the real-model rows of this pretrained model instead of the "
                             "default benchmark (needs torch and transformers for the peers: "
                             "pip install -e '.[reference]'; without them only our rows run)")
    parser.add_argument("--rounds", type=positive_int,
                        help="with --model: interleaved rounds, each running every case once in "
                             "its own process; a row's time is the median over rounds (default "
                             "3, 1 with --quick; the N=64, B=256 kernel runs once)")
    parser.add_argument("--tasks", type=_tasks,
                        help="with --model: comma-separated tasks to run, of "
                             f"{', '.join(REAL_TASKS)} (default all)")
    parser.add_argument("--out", default="reports", help="output directory (default reports)")
    parser.add_argument("--timeout", type=positive_float,
                        help="seconds allowed to each case before it is reported as timed out "
                             "(a finite number > 0; default 300, 10800 with --model)")
    parser.set_defaults(run=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from entangle_jax.cli.common import check_output_dir, locked_outputs, not_applicable
    from entangle_jax.io import atomic_write_json, atomic_write_text

    if args.model is None:
        not_applicable(args, ("rounds", "tasks"), "without --model (the default benchmark "
                                                  "repeats each case inside its process)")
        from entangle_jax.bench import exit_status, format_table, run_benchmark

        stem = "bench"
        bench = lambda save: run_benchmark(  # noqa: E731
            quick=args.quick, timeout=300.0 if args.timeout is None else args.timeout,
            on_row=save)
    else:
        from entangle_jax.bench.real_suite import (
            REAL_TIMEOUT,
            exit_status,
            format_table,
            run_real_benchmark,
            saved,
        )

        stem = f"bench-{args.model}"
        bench = lambda save: saved(run_real_benchmark(  # noqa: E731
            quick=args.quick, timeout=REAL_TIMEOUT if args.timeout is None else args.timeout,
            rounds=args.rounds, tasks=args.tasks, on_row=save))
    out = Path(args.out)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    check_output_dir(out, "--out", (json_path.name, md_path.name))

    def save(result):  # after every case, so a long run leaves its partial results
        atomic_write_json(json_path, result)
        atomic_write_text(md_path, format_table(result) + "\n")

    with locked_outputs((out, "--out")):
        result = bench(save)
        save(result)
    print(format_table(result))
    print(f"\nwrote {json_path} and {md_path}")
    status = exit_status(result)
    if status:
        first = result["rows"][0]
        print(f"entangle: bench: every one of the {len(result['rows'])} cases failed or timed "
              f"out (first: {first.get('error') or first.get('not_run')}); exit status 1",
              file=sys.stderr)
    return status
