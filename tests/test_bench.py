"""The benchmark's plumbing on the default model: each case runs in its own process, counts its
compilations and formats a table. Nothing here asserts a time."""

import numpy as np
import pytest
from flax import nnx

from entangle_jax.bench import _add_ratios, format_table, plan_cases, run_case
from entangle_jax.bench.configs import CONFIGS, lower_bound_flops
from entangle_jax.models import init_model


@pytest.fixture(scope="module")
def rows():
    specs = [{"config": "default", "task": task, "method": "auto", "pairs": 2, "repeats": 1}
             for task in ("sequence_gram", "token_gram")]
    rows = [run_case(spec, timeout=300) for spec in specs]
    _add_ratios(rows)
    return rows


def test_a_case_reports_its_time_memory_and_compilations(rows):
    for row in rows:
        assert "error" not in row, row
        assert row["median_s"] > 0 and row["peak_rss_mb"] > row["baseline_rss_mb"] > 0
        assert row["compiles_warmup"] > 0
        # one compiled function serves every call, and other suffix lengths of the same shape
        assert row["compiles_timed"] == 0 and row["compiles_other_shape"] == 0
        assert row["vs_auto"] == pytest.approx(1.0)


def test_the_table_has_a_row_per_case_and_names_skipped_peers(rows):
    result = {"machine": {"date": "d", "platform": "p", "cpus": 2, "load_average_1m": 0.0,
                          "load_average_1m_end": 0.0, "matmul_gflops": 1.0},
              "peers": {"torch": None, "neural_tangents": "why not"}, "rows": rows}
    table = format_table(result)
    assert table.count("| default |") == 2
    assert "neural_tangents: skipped — why not" in table and "torch: skipped" not in table


def test_a_failing_case_becomes_a_row_with_its_error():
    row = run_case({"config": "default", "task": "sequence_gram", "method": "no-such-method",
                    "pairs": 1, "repeats": 1}, timeout=300)
    assert "no-such-method" in row["error"]


def test_peer_rows_only_when_the_peer_is_usable():
    with_torch = plan_cases(True, {"torch": None, "neural_tangents": "x"})
    without = plan_cases(True, {"torch": "not installed", "neural_tangents": "x"})
    assert {c["method"] for c in with_torch} - {c["method"] for c in without} == {
        "torch_vmap", "torch_jacrev"}


def test_flop_lower_bound_of_the_sequence_gram():
    """6·P·T per response plus one P-long dot product per unordered pair of responses."""
    cfg = CONFIGS["default"].model
    params = nnx.split(init_model(cfg))[1]
    p = (cfg.n_layers * (4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_mlp)
         + cfg.d_model * cfg.vocab_size)
    n = 2 * 3
    want = 6 * p * cfg.max_len * n + 2 * p * n * (n + 1) / 2
    assert lower_bound_flops("sequence_gram", params, cfg.max_len, 3, 13) == want


def test_torch_port_matches_the_model():
    torch = pytest.importorskip("torch")
    from entangle_jax.bench import torch_port
    from entangle_jax.bench.case import synthetic_pairs
    from entangle_jax.logprob import token_logprobs

    cfg = CONFIGS["default"].model
    graphdef, params = nnx.split(init_model(cfg))
    seq = synthetic_pairs(1, cfg.max_len, 13, cfg.vocab_size, 0, 12).chosen[0]
    as_t = lambda x: torch.from_numpy(np.array(x)).long()  # noqa: E731
    theirs = torch_port.token_logprobs(torch_port.from_jax(params), as_t(seq.tokens),
                                       as_t(seq.start), as_t(seq.length), 13, cfg.n_layers,
                                       cfg.n_heads)
    np.testing.assert_allclose(theirs.numpy(), token_logprobs(graphdef, params, seq), atol=1e-5)
