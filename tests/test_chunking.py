"""The chunks every chunked computation shares: each row exactly once, the padding marked."""

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from entangle_jax import memory
from entangle_jax.chunking import chunk_indices, map_chunks, real_rows
from entangle_jax.config import ConfigError


@given(st.integers(1, 50), st.integers(1, 20))
def test_chunks_cover_every_row_once_and_mark_their_padding(n, chunk_size):
    chunks = chunk_indices(n, chunk_size)
    assert len(chunks) == -(-n // chunk_size)
    assert all(len(idx) == chunk_size for idx in chunks)
    real = np.concatenate([idx[real_rows(idx, n)] for idx in chunks])
    np.testing.assert_array_equal(real, np.arange(n))
    # padding repeats the last row
    assert all((idx[~real_rows(idx, n)] == n - 1).all() for idx in chunks)


def test_map_chunks_drops_the_padding_rows_outputs():
    batch = {"x": np.arange(7.0)}
    seen = []
    out = map_chunks(lambda chunk: chunk["x"] * 2, batch, 7, 3, progress=seen.append)
    np.testing.assert_array_equal(out, np.arange(7.0) * 2)
    assert seen == [3, 6, 7]


@pytest.mark.parametrize("chunk_size", [0, -1, 2.0, True])
def test_a_chunk_size_that_is_not_a_positive_integer_is_refused(chunk_size):
    with pytest.raises(ConfigError, match="chunk_size"):
        chunk_indices(5, chunk_size)


class _Device:
    def __init__(self, platform, stats):
        self.platform, self._stats = platform, stats

    def memory_stats(self):
        return self._stats


def test_chunk_budget_is_the_variable_else_a_share_of_an_accelerator_else_the_cpu_default(
        monkeypatch):
    monkeypatch.delenv(memory.BUDGET_VARIABLE, raising=False)
    assert memory.budget_bytes() == memory.MEMORY_BUDGET  # this machine: a CPU
    monkeypatch.setattr(memory.jax, "devices", lambda: [_Device("gpu", {"bytes_limit": 8 * 10**9})])
    assert memory.budget_bytes() == 2 * 10**9
    monkeypatch.setattr(memory.jax, "devices", lambda: [_Device("gpu", None)])  # no statistics
    assert memory.budget_bytes() == memory.MEMORY_BUDGET
    monkeypatch.setenv(memory.BUDGET_VARIABLE, "3e9")
    assert memory.budget_bytes() == 3 * 10**9
    # the chunk follows: 3e9 bytes hold 3 items of 1e9, 2**30 one
    assert memory.fit(10**9, cap=16) == 3
    monkeypatch.delenv(memory.BUDGET_VARIABLE)
    assert memory.fit(10**9, cap=16) == 1


@pytest.mark.parametrize("value", ["lots", "0", "-5", "nan", "inf"])
def test_a_bad_chunk_budget_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(memory.BUDGET_VARIABLE, value)
    with pytest.raises(ConfigError, match=memory.BUDGET_VARIABLE):
        memory.budget_bytes()


def test_peak_resident_memory_counts_what_the_process_holds_in_mib():
    held = np.ones(256 * 2**20 // 8)  # 256 MiB, every page written
    peak = memory.peak_resident_mb()
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert 256 <= peak < total_mib and held[-1] == 1.0
