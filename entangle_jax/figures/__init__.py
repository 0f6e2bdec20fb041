"""Figures: the shared style (``style``), where runs are cached (``context``), the models and
preference runs they come from (``sources``), the plotted numbers (``tables``) and the runner of the
scripts in ``figures/`` (``runner``, ``entangle figures``). See ``runner`` for what a figure script
defines."""
