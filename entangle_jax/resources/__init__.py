"""Data files the package reads at run time (see README.md here for their sources and licences)."""
