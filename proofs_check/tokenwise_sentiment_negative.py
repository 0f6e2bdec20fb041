"""Token-wise: at the sentiment token, ⟨g_w^i, g_l^i⟩ < 0 even for pairs whose ⟨g_w, g_l⟩ > 0;
which blocks of the token-wise Gram carry the positive mass.

Headline regime: pretrained, at the paper's long suffix (L = 6).

Runs ``entangle verify --only tokenwise_sentiment_negative`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/tokenwise_sentiment_negative/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/tokenwise_sentiment_negative.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "tokenwise_sentiment_negative",
                   "--out", "reports/proofs_check/tokenwise_sentiment_negative", *sys.argv[1:]]))
