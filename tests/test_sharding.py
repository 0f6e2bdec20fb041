"""Sharded over 4 CPU devices equals one device (to float32 rounding): the pair statistics, the
Grams, a preference gradient step and entangle predict's cross-pair kernel. The device count is
fixed at JAX start-up, so the check runs in a child process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from entangle_jax.sharding import batch_mesh, padded_size, shard_batch

CHILD = textwrap.dedent("""
    import json
    import jax, numpy as np
    from flax import nnx
    from entangle_jax.config import DataConfig, ModelConfig
    from entangle_jax.data import make_sentiment_data, response_window, sentiment_pairs
    from entangle_jax.gradients import pair_geometry, sequence_gram, token_grams
    from entangle_jax.models import init_model
    from entangle_jax.config import SFTConfig
    from entangle_jax.sharding import batch_mesh, shard_batch
    from entangle_jax.train import PreferenceConfig, train_preference, train_sft

    assert len(jax.devices()) == 4, jax.devices()
    mesh = batch_mesh()
    data = make_sentiment_data(DataConfig(n_statements=200, n_unused_words=16))
    cfg = ModelConfig(vocab_size=len(data.vocab), d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    graphdef, params = nnx.split(init_model(cfg, seed=0))
    pairs = sentiment_pairs(data.eval[:6], data.vocab, 3, cfg.max_len, response_window(data.config))
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(a).max())
    gaps = {}
    for impl in ("materialize", "auto"):
        one = pair_geometry(graphdef, params, pairs, chunk_size=4, implementation=impl)
        many = pair_geometry(graphdef, params, pairs, chunk_size=4, implementation=impl, mesh=mesh)
        gaps[f"pair_geometry/{impl}"] = max(rel(getattr(one, f), getattr(many, f))
                                            for f in ("logp_w", "sq_norm_w", "inner"))
    one = token_grams(graphdef, params, pairs[:4], chunk_size=4, implementation="auto")
    many = token_grams(graphdef, params, pairs[:4], chunk_size=4, implementation="auto", mesh=mesh)
    gaps["token_grams/auto"] = rel(one.cross, many.cross)
    one = sequence_gram(graphdef, params, pairs, chunk_size=8, implementation="auto")
    many = sequence_gram(graphdef, params, pairs, chunk_size=8, implementation="auto", mesh=mesh)
    gaps["sequence_gram/auto"] = rel(one, many)

    # The real preference loop (DPO, SGD, 2 steps of 4 pairs), sharded against one device.
    ckpt = train_sft(cfg, data, SFTConfig(steps=3, batch_size=8), progress=False)
    config = PreferenceConfig(objective="dpo", optimizer="sgd", learning_rate=0.1, steps=2,
                              batch_size=4, suffix_length=3, probe_every=0, probe_size=4)
    one = train_preference(ckpt, config, progress=False)
    many = train_preference(ckpt, config, progress=False, mesh=mesh)
    gaps["train_step"] = max(rel(a, b) for a, b in zip(jax.tree.leaves(one.params),
                                                        jax.tree.leaves(many.params)))
    gaps["train_log"] = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6)
                            for a, b in zip(one.records, many.records) if a["kind"] == "train"
                            for k in ("loss", "logps/chosen", "logps/rejected"))
    # The cross-pair kernel of entangle predict: the planned update of a 2-step Adam run on the
    # last block and its first-order change of every response (backward pass + jvp).
    from entangle_jax.predict import planned_update, predicted_changes, run_start
    config = PreferenceConfig(objective="dpo", steps=2, batch_size=4, suffix_length=3,
                              train_params="last:1")
    batches = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    responses = pairs[np.arange(5)].chosen
    for name, m in (("one", None), ("many", mesh)):
        start = run_start(ckpt.graphdef, ckpt.params, config, pairs, mesh=m)
        gaps[name] = predicted_changes(start, responses, planned_update(start, config, pairs,
                                                                       batches))
    gaps["entk_kernel"] = rel(gaps.pop("one"), gaps.pop("many"))
    batch = pairs[np.arange(4)]
    sharded = shard_batch(batch, mesh).chosen.tokens.sharding
    gaps["devices_used"] = len(sharded.device_set)
    print(json.dumps(gaps))
""")


@pytest.fixture(scope="module")
def sharded_gaps():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sharded_results_equal_one_device(sharded_gaps):
    assert sharded_gaps.pop("devices_used") == 4
    # Relative gaps: a device's share of the chunk compiles to other kernels (and the batch mean
    # is reduced across devices), so equality holds to float32 rounding, not bit for bit.
    for name, gap in sharded_gaps.items():
        assert gap <= 1e-5, (name, gap)


def test_shard_batch_refuses_a_batch_the_devices_do_not_divide():
    mesh = batch_mesh()
    assert padded_size(5, mesh) % mesh.devices.size == 0 and padded_size(5, mesh) >= 5
    if mesh.devices.size > 1:
        import numpy as np
        with pytest.raises(ValueError, match="must be a multiple"):
            shard_batch(np.zeros((mesh.devices.size + 1, 2)), mesh)
