"""Figure 3: the token-wise Gram matrices of a long-suffix pair.

Runs ``entangle figures --only fig3``: the figure is defined in
``entangle_jax/figures/paper/fig3_token_grams.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig3_token_grams.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig3_token_grams.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig3", *sys.argv[1:]]))
