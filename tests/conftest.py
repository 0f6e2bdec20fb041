"""Shared tiny fixtures: a small model and a briefly fine-tuned checkpoint."""

import os
import re
import subprocess
import sys

import pytest
from hypothesis import settings

from entangle_jax.config import DataConfig, ModelConfig, SFTConfig
from entangle_jax.data import make_sentiment_data, response_window, sentiment_pairs
from entangle_jax.train import train_sft

# Property tests draw the same examples on every run, so a CI result is reproducible
# (HYPOTHESIS_PROFILE=explore draws fresh ones).
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))

# The commands the tests call through `main` would turn on JAX's persistent compilation cache for
# the rest of the session; writing a CPU executable into it crashed a clean-clone run once
# (segfault in jax's put_executable_and_time, test_verify_cli). The suite runs without it; the
# cache's own tests set the variable themselves.
os.environ.setdefault("ENTANGLE_JAX_COMPILATION_CACHE", "off")

# The tests check mathematics, not machine code: XLA's backend (LLVM) optimizations are turned off,
# which cuts the suite's CPU time, mostly compilation, by about a quarter (docs/performance.md).
# Tests marked `full_codegen` (the miscompilation guards, which are about the code users run)
# rerun themselves in a pytest process with XLA's default flags; ENTANGLE_JAX_TEST_FULL_CODEGEN=1
# runs the whole suite with them.
FAST_CODEGEN = "--xla_backend_optimization_level=0"
FULL_CODEGEN = "ENTANGLE_JAX_TEST_FULL_CODEGEN"
if os.environ.get(FULL_CODEGEN) != "1":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_CODEGEN}".strip()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A `full_codegen` test outside such a process: run it in one and pass if it passes there."""
    if pyfuncitem.get_closest_marker("full_codegen") is None or os.environ.get(FULL_CODEGEN) == "1":
        return None
    flags = os.environ["XLA_FLAGS"].replace(FAST_CODEGEN, "").strip()
    env = {**os.environ, FULL_CODEGEN: "1", "XLA_FLAGS": flags}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-m", "full_codegen", pyfuncitem.nodeid],
                          cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^1 passed", done.stdout, re.M), done.stdout[-2000:]
    return True


TINY_MODEL = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32)
TINY_DATA = DataConfig(n_statements=200, n_unused_words=16)


@pytest.fixture(scope="session")
def tiny_data():
    return make_sentiment_data(TINY_DATA)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_data):
    """A tiny model after a few SFT steps with label noise (uncertain at the sentiment token)."""
    return train_sft(TINY_MODEL, tiny_data, SFTConfig(steps=20, batch_size=16, label_flip=0.3),
                     progress=False)


@pytest.fixture(scope="session")
def make_pairs(tiny_data, tiny_ckpt):
    def make(suffix_length, n=6):
        return sentiment_pairs(tiny_data.eval[:n], tiny_data.vocab, suffix_length,
                               tiny_ckpt.model_config.max_len, response_window(tiny_data.config))
    return make


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, converted from its GGUF once into the cache (ENTANGLE_JAX_CACHE)."""
    from entangle_jax.pretrained import load_pretrained

    return load_pretrained()
