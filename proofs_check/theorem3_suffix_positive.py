"""Theorem 3: with a shared suffix (L = 2..12) after the sentiment token, ⟨g_w, g_l⟩ > 0.

Headline regime: pretrained. The fixed_suffix regime is the negative control (its own suffix is
deterministic, so the shared tokens' gradients vanish).

Runs ``entangle verify --only theorem3_suffix_positive`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/theorem3_suffix_positive/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/theorem3_suffix_positive.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "theorem3_suffix_positive",
                   "--out", "reports/proofs_check/theorem3_suffix_positive", *sys.argv[1:]]))
