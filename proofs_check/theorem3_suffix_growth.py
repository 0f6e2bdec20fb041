"""Theorem 3: ⟨g_w, g_l⟩ grows as the shared suffix gets longer (per-pair Spearman ρ with L).

Headline regime: pretrained. Rule: the 95% CI lower bound of the mean per-pair ρ ≥ 0.5.

Runs ``entangle verify --only theorem3_suffix_growth`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/theorem3_suffix_growth/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/theorem3_suffix_growth.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "theorem3_suffix_growth",
                   "--out", "reports/proofs_check/theorem3_suffix_growth", *sys.argv[1:]]))
