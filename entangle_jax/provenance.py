"""What a report needs to be traced back to its run, and what keys a cached result: package
versions, a fingerprint of this package's code and a hash of the config.

``provenance(config)`` gives ``{"config_hash", "versions", "backend"}``; the hash (``json_hash``,
the only one the project publishes) is the first 16 hex digits of sha256 over the sorted-key JSON
of the config, so two reports with the same hash were made with the same settings. ``cache_key``
adds the versions and the code, so a cached model or figure made by other code is never reused.
Nothing here depends on time or on the host name, so the same command on the same machine writes
byte-identical reports.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

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


def source_fingerprint(root: Path) -> str:
    """16 hex digits of sha256 over the Python files under ``root`` (relative path and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """``source_fingerprint`` of this package."""
    return source_fingerprint(Path(__file__).resolve().parent)


def cache_key(*parts) -> str:
    """The key of a result cached from ``parts`` (configs, dicts): their hash, the package
    versions and the code."""
    return json_hash({"parts": list(parts), "versions": package_versions(),
                      "code": code_fingerprint()})


def provenance(config) -> dict:
    """``{"config_hash", "versions", "backend"}`` for a report made with ``config``."""
    import jax

    return {"config_hash": json_hash(config), "versions": package_versions(),
            "backend": jax.default_backend()}
