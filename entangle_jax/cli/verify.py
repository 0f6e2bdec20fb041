"""``entangle verify``: check every claim of the paper in every regime; exit 0 when all hold in
their own regime, 1 when one does not, 2 on bad input. The last line printed is a one-line summary
(``summary_line``): which claims do not hold in their own regime, where the report is and where
the explanation is."""

from __future__ import annotations

CLAIM_IDS = ("theorem1_single_token", "output_layer_identity", "theorem3_suffix_positive",
             "theorem3_suffix_growth", "tokenwise_sentiment_negative", "gradient_condition",
             "batched_dynamics", "normalized_mitigation")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="check every claim of the paper across training regimes, write "
                       "verify.json and verify.md",
        description="Trains (or reuses from --cache-dir) one model per regime and seed, measures "
                    "each claim's statistic over eval pairs, and judges it with a pass rule fixed "
                    "in code: HOLDS, FAILS or NOT_APPLICABLE (hypothesis not met). Prints the "
                    "claim x regime table and writes OUT/verify.json and OUT/verify.md, then one "
                    "summary line. Exit status 0 when every claim holds in its own regime, 1 "
                    "when one does not (a finding, not a crash: the summary names it), 2 on bad "
                    "input (a bad option, an --out that cannot be written or that another run "
                    "is writing), checked before any model is trained. `make verify` runs this "
                    "command; on status 1 or 2 make adds its own line `make: *** [Makefile:...: "
                    "verify] Error 1` (or Error 2) and exits 2 itself. See docs/verification.md.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one seed, 16 pairs per seed (numbers are coarse)")
    parser.add_argument("--real", action="store_true",
                        help="the real-model regimes instead (SmolLM2-135M-Instruct as shipped "
                             "and after a short fine-tuning, on the chat sentiment task, float32; "
                             "make verify-real): hours on 2 CPU cores, even with --quick (times in "
                             "the README)")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; 0 with --quick)")
    parser.add_argument("--pairs", type=int,
                        help="eval pairs per seed (default 64; 16 with --quick)")
    parser.add_argument("--only", help="comma-separated claim ids to run (default: all): "
                                       + ", ".join(CLAIM_IDS))
    parser.add_argument("--out", help="output directory (default reports, reports/real with "
                                      "--real)")
    parser.add_argument("--cache-dir", default=".cache/models",
                        help="where regime models and each claim's measurements on them are "
                             "cached, keyed by settings and code, so that a stopped run resumes "
                             "(default .cache/models)")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure every claim again, even where its measurements on a model "
                             "were saved by an earlier run (the models are still reused)")
    parser.set_defaults(run=run)


def _seeds(text: str) -> tuple[int, ...]:
    from entangle_jax.cli import UsageError

    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give comma-separated integers such as 0,1,2") \
            from None
    return seeds


def summary_line(report: dict, out) -> str:
    """One line: whether every claim holds in its own regime, which do not, where to read on."""
    from pathlib import Path

    claims = report["claims"]
    failing = [c for c in claims if c["headline_verdict"] != "HOLDS"]
    where = f"report: {Path(out) / 'verify.md'}"
    if not failing:
        return (f"verify: all {len(claims)} claim(s) hold in their own regime; {where} "
                "(exit status 0)")
    named = ", ".join(f"{c['id']} ({c['headline_verdict']} in {c['headline_regime']})"
                      for c in failing)
    return (f"verify: {len(failing)} of {len(claims)} claim(s) do not hold in their own regime: "
            f"{named}; {where}; why: docs/verification.md (exit status 1: a finding, not a "
            "crash)")


def run(args) -> int:
    import dataclasses
    import time
    from pathlib import Path

    from entangle_jax.cli.common import check_output_dir, locked_outputs
    from entangle_jax.io import atomic_write_json, atomic_write_text
    from entangle_jax.verify import (VerifySettings, exit_status, format_table, run_verify,
                                     select_claims, to_markdown)
    from entangle_jax.verify.regimes import QUICK, real_settings

    overrides = {}
    if args.seeds is not None:
        overrides["seeds"] = _seeds(args.seeds)
    base = real_settings() if args.real else VerifySettings()
    if args.quick:
        base = dataclasses.replace(base, **QUICK)
    if args.pairs is not None:  # fewer pairs than the eNTK sample shrink that sample too
        overrides.update(n_pairs=args.pairs, ntk_pairs=max(1, min(base.ntk_pairs, args.pairs)))
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    claims = select_claims(only)  # an unknown id raises ConfigError (exit 2)
    settings = dataclasses.replace(base, **overrides)  # validated: a bad value exits 2
    out = Path(args.out or ("reports/real" if args.real else "reports"))
    check_output_dir(out, "--out", ("verify.json", "verify.md"))
    check_output_dir(args.cache_dir, "--cache-dir")
    with locked_outputs((out, "--out")):
        start = time.perf_counter()
        report = run_verify(settings, claims, cache_dir=args.cache_dir,
                            remeasure=args.remeasure)
        atomic_write_json(out / "verify.json", report)
        atomic_write_text(out / "verify.md", to_markdown(report))
    print(format_table(report))
    t = report["timings"]
    print(f"time: models {sum(t['models'].values()):.0f} s, "
          + ", ".join(f"{k} {v:.0f} s" for k, v in t["measure"].items())
          + f", evaluation {t['evaluate']:.0f} s; total {time.perf_counter() - start:.0f} s, "
          f"peak memory {t['peak_memory_mb'] / 1024:.1f} GB"
          + (f" ({t['saved_earlier']} claim × model measurement(s) saved by an earlier run)"
             if t["saved_earlier"] else ""))
    print(f"wrote {out / 'verify.json'} and {out / 'verify.md'}")
    print(summary_line(report, out))
    return exit_status(report)
