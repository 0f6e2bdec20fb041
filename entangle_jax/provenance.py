"""What a report needs to be traced back to its run: package versions and a hash of its config.

``provenance(config)`` gives ``{"config_hash", "versions", "backend"}``; the hash is the first 16
hex digits of sha256 over the sorted-key JSON of the config, so two reports with the same hash
were made with the same settings. Nothing here depends on time or on the host name, so the same
command on the same machine writes byte-identical reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from importlib import metadata

PACKAGES = ("entangle_jax", "jax", "jaxlib", "flax", "optax", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages the numbers depend on (``"missing"`` if absent)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _plain(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__, **dataclasses.asdict(obj)}
    raise TypeError(f"cannot hash a {type(obj).__name__}")


def json_hash(obj) -> str:
    """16 hex digits of sha256 over the sorted-key JSON of ``obj`` (dataclasses allowed)."""
    text = json.dumps(obj, sort_keys=True, default=_plain, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def provenance(config) -> dict:
    """``{"config_hash", "versions", "backend"}`` for a report made with ``config``."""
    import jax

    return {"config_hash": json_hash(config), "versions": package_versions(),
            "backend": jax.default_backend()}
