"""Figure 2: ⟨g_w, g_l⟩, ‖g_w‖², ‖g_l‖² and the cosine against the suffix length L = 0…12, one line
per training regime, with 95% bands over seeds.

Runs ``entangle figures --only fig2``: the figure is defined in
``entangle_jax/figures/paper/fig2_gradient_geometry.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig2_gradient_geometry.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig2_gradient_geometry.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig2", *sys.argv[1:]]))
