"""Figure 8 (real model only): the probe responses' log-probabilities during DPO from
SmolLM2-135M-Instruct on real pairs, with the probe pairs' gradient geometry.

Runs ``entangle figures --real --only fig8``: the figure is defined in
``entangle_jax/figures/paper/fig8_probe_dynamics.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig8_probe_dynamics_smollm2.png, .pdf and .csv; extra arguments
are passed on, e.g. ``--quick`` or ``--out DIR``.

    python figures/fig8_probe_dynamics.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--real", "--only", "fig8", *sys.argv[1:]]))
