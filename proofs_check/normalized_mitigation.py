"""Mitigation: the pairwise-normalized update gives case 1 (log π_w ↑, log π_l ↓) for every pair.

Headline regime: pretrained; the plain DPO step on the same pairs is the control.

Runs ``entangle verify --only normalized_mitigation`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/normalized_mitigation/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/normalized_mitigation.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "normalized_mitigation",
                   "--out", "reports/proofs_check/normalized_mitigation", *sys.argv[1:]]))
