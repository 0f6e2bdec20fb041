"""The chunks every chunked computation shares: each row exactly once, the padding marked."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
