"""The figures: one module ``figN_<name>`` per figure, each with ``config``, ``compute`` and
``plot`` (``entangle_jax.figures.runner``); ``entangle figures`` runs them."""
