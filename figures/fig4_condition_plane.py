"""Figure 4: the gradient-condition plane, and how the pairs move on it during DPO training.

Runs ``entangle figures --only fig4``: the figure is defined in
``entangle_jax/figures/paper/fig4_condition_plane.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig4_condition_plane.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig4_condition_plane.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig4", *sys.argv[1:]]))
