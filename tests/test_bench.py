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
    specs.append({"config": "default", "task": "entk_prediction", "method": "auto", "pairs": 2,
                  "train_pairs": 4, "repeats": 1})
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
    assert table.count("| default |") == 3 and "| 2 × 4 |" in table
    assert "neural_tangents: skipped — why not" in table and "torch: skipped" not in table


def test_the_entk_prediction_agrees_with_the_materialized_kernel(rows):
    # auto (a weighted backward pass and Jacobian-vector products) against every per-example
    # gradient from vmap(grad) and the kernel, computed in the same case
    row = next(r for r in rows if r["task"] == "entk_prediction")
    assert row["max_rel_diff"] < 1e-4


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


# ------------------------------------------------------------------------------------------------
# The real-model rows (entangle bench --model smollm2): plumbing only, nothing timed
# ------------------------------------------------------------------------------------------------

def test_cross_gram_is_the_off_diagonal_block_of_the_union_gram():
    """Both kernel strategies, either side held, row groups and recomputed segments, on an
    untied and a tied model with an unembedding bias."""
    import jax
    import jax.numpy as jnp

    from entangle_jax.bench.case import synthetic_pairs
    from entangle_jax.bench.kernel import as_responses, cross_gram
    from entangle_jax.config import ModelConfig
    from entangle_jax.gradients import sequence_gram

    for cfg in (ModelConfig(vocab_size=64, n_layers=3),
                ModelConfig(vocab_size=64, n_layers=2, tie_embeddings=True, unembed_bias=True)):
        graphdef, params = nnx.split(init_model(cfg))
        rows = synthetic_pairs(2, cfg.max_len, 13, cfg.vocab_size, 0, 7)
        cols = synthetic_pairs(3, cfg.max_len, 13, cfg.vocab_size, 1, 10)
        union = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), as_responses(rows),
                             as_responses(cols))
        want = sequence_gram(graphdef, params, union)[:4, 4:]
        for kwargs in ({"implementation": "materialize", "chunk_size": 4},
                       {"implementation": "stagewise", "chunk_size": 4, "ends_chunk_size": 3},
                       {"implementation": "stagewise", "chunk_size": 3, "ends_chunk_size": 2,
                        "segment": 2, "budget": 1}):
            k = cross_gram(graphdef, params, rows, cols, **kwargs)
            np.testing.assert_allclose(k, want, rtol=0, atol=2e-6 * np.abs(want).max())
            np.testing.assert_allclose(cross_gram(graphdef, params, cols, rows, **kwargs).T, k,
                                       rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.fixture(scope="module")
def real_rows(smollm2):
    """Every real-model method on SmolLM2 cut to 2 blocks, 1 or 2 short pairs (prompt ≤ 16,
    response ≤ 4 tokens), as the bench's cases compute them (without their processes), with the
    agreement the table reports."""
    from entangle_jax.bench import real
    from entangle_jax.bench.real_suite import add_comparisons

    graphdef, params = real.truncated(smollm2, 2)
    hf = None
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from entangle_jax.bench import hf_peers
        hf = hf_peers.load_model(2)
    except ImportError:
        pass
    base = {"layers": 2, "max_prompt": 16, "max_response": 4}
    tasks = {("pair_stats", ("hf_loop", "torch_func", "materialize", "structured", "auto",
                             "auto_by_length")): {"pairs": 2},
             ("token_gram", ("hf_loop", "structured", "auto")): {"response": 4},
             ("kernel", ("hf_loop", "torch_func", "materialize", "stagewise", "auto")):
             {"eval_pairs": 1, "train_pairs": 2},
             ("prediction", ("hf_loop", "materialize", "auto")):
             {"eval_pairs": 1, "train_pairs": 2}}
    rows = []
    for (task, methods), size in tasks.items():
        for method in methods:
            spec = {"task": task, "method": method, **base, **size}
            inputs = real.prepare_inputs(spec, smollm2)
            if method in real.TORCH_METHODS:
                if hf is None:
                    continue
                _, call, outputs = real.torch_calls(spec, hf, inputs)
            else:
                _, call, outputs = real.jax_calls(spec, graphdef, params, inputs)
            out = {k: v if isinstance(v, (int, float)) else np.asarray(v).tolist()
                   for k, v in outputs(call()).items()}
            rows.append({**spec, "median_s": 1.0, "peak_rss_mb": 1.0, "outputs": out})
    add_comparisons(rows)
    return rows, hf is not None


def test_real_pairs_are_chat_formatted_and_budgeted(smollm2):
    from entangle_jax.bench import real

    pairs = real.real_pairs(smollm2, 2, 0, 16, 4)
    assert len(pairs) == 2 and pairs.chosen.window <= 4
    assert all(int(s) <= 16 for s in np.asarray(pairs.chosen.start))
    prompt = smollm2.tokenizer.decode(pairs.chosen.prompt_ids(0))
    assert prompt.endswith("<|im_start|>assistant\n")
    token = real.real_pairs(smollm2, 1, 0, 16, 4, min_response=4)
    assert int(token.chosen.length[0]) == int(token.rejected.length[0]) == 4


def test_every_real_method_agrees_with_the_transformers_loop(real_rows):
    rows, with_torch = real_rows
    if not with_torch:
        pytest.skip("torch or transformers is not installed: no reference")
    for row in rows:
        if row["method"] == "hf_loop":
            assert row["agreement"] is None
            continue
        errors = {k: v for k, v in row["agreement"].items() if k not in ("entries", "of_max")}
        if row["task"] == "prediction":  # changes, on the scale of the largest
            errors = {"changes": row["agreement"]["of_max"]}
        assert max(errors.values()) < 1e-4, (row["task"], row["method"], errors)
    loop = next(r for r in rows if r["task"] == "token_gram" and r["method"] == "hf_loop")
    assert loop["outputs"]["backward_passes"] == 8  # one per response token, 4 a side
    kernel = next(r for r in rows if r["task"] == "kernel" and r["method"] == "stagewise")
    assert np.asarray(kernel["outputs"]["kernel"]).shape == (2, 4)


def test_our_real_methods_agree_with_each_other(real_rows):
    """Without torch too: every strategy against materialize (the token Gram: structured)."""
    rows, _ = real_rows
    for task, ref_method, name in (("pair_stats", "materialize", "inner"),
                                   ("token_gram", "structured", "gram"),
                                   ("kernel", "materialize", "kernel"),
                                   ("prediction", "materialize", "changes")):
        ours = [r for r in rows if r["task"] == task and r["method"] not in ("hf_loop",
                                                                             "torch_func")]
        ref = np.asarray(next(r for r in ours if r["method"] == ref_method)["outputs"][name])
        for row in ours:
            got = np.asarray(row["outputs"][name])
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max(),
                                       err_msg=f"{task} {row['method']}")


def test_an_unknown_real_method_is_refused_before_any_work():
    from entangle_jax.bench import real

    with pytest.raises(ValueError, match="unknown method 'no-such'"):
        real.run_case({"task": "kernel", "method": "no-such", "eval_pairs": 1, "train_pairs": 1,
                       "max_prompt": 16, "max_response": 4})


def test_per_example_gradients_of_a_large_prediction_are_refused_before_any_work():
    from entangle_jax.bench import real

    row = real.run_case({"task": "prediction", "method": "materialize", "eval_pairs": 64,
                         "train_pairs": 256, "max_prompt": 16, "max_response": 4, "layers": 2})
    assert row["not_run"].startswith("not run: needs ≈") and "time_s" not in row


def test_real_plan_and_table():
    from entangle_jax.bench import real_suite

    peers = {"transformers": None}
    full, quick = real_suite.plan(False, peers), real_suite.plan(True, peers)
    without = real_suite.plan(True, {"transformers": "not installed"})
    assert {c["method"] for c in quick} - {c["method"] for c in without} == {"hf_loop",
                                                                            "torch_func"}
    big = [c for c in full if c["task"] == "kernel" and c.get("eval_pairs") == 64]
    assert {c["method"] for c in big} == {"auto", "torch_func"} and all(
        c["rounds"] == 1 for c in big)
    assert not any(c["task"] == "kernel" and c["method"] == "auto" for c in quick)
    big = [c for c in full if c["task"] == "prediction" and c.get("eval_pairs") == 64]
    assert {c["method"] for c in big} == {"auto", "materialize"} and all(
        c["rounds"] == 1 for c in big)
    assert {c["method"] for c in quick if c["task"] == "prediction"} == {
        "hf_loop", "materialize", "auto"} and not any(
        c["task"] == "prediction" and c["method"] == "auto" and c["eval_pairs"] == 64
        for c in quick)
    chosen = real_suite.plan(False, peers, tasks=("load", "pair_stats"))
    assert chosen == [c for c in full if c["task"] in ("load", "pair_stats")] and chosen
    stats = {"task": "pair_stats", "pairs": 4, "max_prompt": 128, "max_response": 64}
    rows = [{**stats, "method": "hf_loop", "median_s": 9.0, "times_s": [9.0],
             "peak_rss_mb": 3000.0, "outputs": {"sq_norm_w": [4.0], "sq_norm_l": [9.0],
                                                "inner": [1.0]}},
            {**stats, "method": "auto", "median_s": 4.0, "times_s": [4.0], "peak_rss_mb": 5000.0,
             "outputs": {"sq_norm_w": [4.0], "sq_norm_l": [9.0], "inner": [1.06]}},
            {"task": "kernel", "method": "torch_func", "eval_pairs": 64, "train_pairs": 256,
             "not_run": "not run: needs ≈ 70 GiB"}]
    real_suite.add_comparisons(rows)
    assert rows[1]["vs_loop"] == pytest.approx(2.25)
    assert rows[1]["agreement"]["inner"] == pytest.approx(0.01)  # 0.06 / (2 · 3)
    assert any("NOT met (2.25×)" in g for g in rows[1]["goals"])
    assert any("peak < 4 GB: NOT met" in g for g in rows[1]["goals"])
    result = {"machine": {"date": "d", "platform": "p", "cpus": 2, "load_average_1m": 0.0,
                          "matmul_gflops": 1.0}, "peers": {"transformers": None}, "quick": False,
              "rounds": 1, "rows": rows}
    table = real_suite.format_table(result)
    assert table.count("| pair_stats |") == 2 and "not run: needs ≈ 70 GiB" in table
    assert real_suite.exit_status(result) == 0


def test_rounds_apply_only_to_the_real_model_rows(capsys):
    from entangle_jax.cli import main

    assert main(["bench", "--rounds", "2"]) == 2
    assert "--rounds does not apply without --model" in capsys.readouterr().err


def test_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    import jax

    from entangle_jax.cli.common import enable_compilation_cache

    monkeypatch.setenv("ENTANGLE_JAX_COMPILATION_CACHE", "off")
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir == before
        monkeypatch.setenv("ENTANGLE_JAX_COMPILATION_CACHE", str(tmp_path / "xla"))
        assert enable_compilation_cache() == (tmp_path / "xla").resolve()
        assert jax.config.jax_compilation_cache_dir == str((tmp_path / "xla").resolve())
        monkeypatch.delenv("ENTANGLE_JAX_COMPILATION_CACHE")
        monkeypatch.setenv("ENTANGLE_JAX_CACHE", str(tmp_path / "cache"))
        assert enable_compilation_cache() == (tmp_path / "cache" / "jax").resolve()
    finally:  # the setting is process-wide
        jax.config.update("jax_compilation_cache_dir", before)


def test_compile_cache_bench_table():
    from entangle_jax.bench.compile_cache import format_table

    row = {"setup_s": 1.0, "first_s": 2.5, "run_s": 0.1, "compile_s": 2.4}
    table = format_table({"off": [row], "cold": [row], "warm": [{**row, "compile_s": 0.2}]})
    assert table.splitlines()[-1] == "| warm | 2.50 | 0.20 | 100.0 | 1.00 |"


def test_the_by_length_warm_up_takes_one_chunk_of_each_cut_length():
    from entangle_jax.bench import real
    from entangle_jax.data.pairs import Pairs, Responses

    lengths = np.array([5, 20, 9, 33, 34, 6])
    side = Responses(np.zeros((6, 40), np.int32), np.ones(6, np.int32), lengths - 1, 40)
    warm = real._one_chunk_per_length(Pairs(side, side), chunk=2, bucket=32)
    # sorted: (5, 6) and (9, 20) cut to 32, (33, 34) to 64
    np.testing.assert_array_equal(warm.widths(), [5, 6, 33, 34])
