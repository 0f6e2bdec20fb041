"""The run predictions of ``entangle_jax.predict`` against autodiff and real runs, and the batch
draws they share with ``train_preference``."""

import jax
import numpy as np
import pytest
from autodiff_reference import mean_loss_grad

from entangle_jax.config import ConfigError
from entangle_jax.logprob import sequence_logps
from entangle_jax.predict import (own_term_signs, planned_update, predicted_changes,
                                  run_start)
from entangle_jax.train import PreferenceConfig, train_preference
from entangle_jax.train.preference import draw_batches, preference_pairs

RUN = dict(objective="dpo", suffix_length=2, probe_every=0)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_trees_close(a, b, rtol=1e-4, atol=1e-7):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def train(tiny_ckpt):
    return preference_pairs(tiny_ckpt, PreferenceConfig(**RUN)).train


def test_draw_batches_is_deterministic_and_draws_without_replacement_in_a_step():
    config = PreferenceConfig(steps=5, batch_size=8, seed=3)
    a, b = draw_batches(40, config), draw_batches(40, config)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 8) and all(len(set(row)) == 8 for row in a)
    assert not np.array_equal(a, draw_batches(40, PreferenceConfig(steps=5, batch_size=8, seed=4)))


def test_stratified_batches_hold_both_classes_equally():
    labels = np.arange(50) < 35  # 35 positive, 15 negative
    config = PreferenceConfig(steps=6, batch_size=7, stratify=True)
    batches = draw_batches(50, config, labels)
    positives = labels[batches].sum(1)
    assert set(positives) == {3, 4} and positives.sum() == 6 * 7 / 2  # the odd one alternates
    plain = draw_batches(200, PreferenceConfig(steps=40, batch_size=8), np.arange(200) < 140)
    assert (np.arange(200) < 140)[plain].mean() > 0.6  # plain draws keep the 70% share
    with pytest.raises(ConfigError, match="needs class labels"):
        draw_batches(50, config)
    with pytest.raises(ConfigError, match="a class has only 15"):
        draw_batches(50, PreferenceConfig(steps=1, batch_size=40, stratify=True), labels)


def test_the_run_trains_on_the_drawn_batches(tiny_ckpt, train):
    """A run's first step equals one SGD step on the first drawn batch (autodiff)."""
    config = PreferenceConfig(optimizer="sgd", learning_rate=0.1, steps=1, batch_size=8, **RUN)
    idx = draw_batches(len(train), config)[0]
    run = train_preference(tiny_ckpt, config, progress=False)
    want = jax.tree.map(lambda p, g: p - 0.1 * g, tiny_ckpt.params,
                        mean_loss_grad(tiny_ckpt, train[idx], "dpo"))
    _assert_trees_close(run.params, want)


def test_sgd_plan_is_the_sum_of_the_batch_gradients_at_the_start(tiny_ckpt, train):
    """U = Σ_t −η ∇L_{B_t}(θ₀): each step's update by autodiff of its batch's mean loss."""
    config = PreferenceConfig(optimizer="sgd", learning_rate=0.1, steps=3, batch_size=8, **RUN)
    batches = draw_batches(len(train), config)
    start = run_start(tiny_ckpt.graphdef, tiny_ckpt.params, config, train)
    plan = planned_update(start, config, train, batches)
    grads = [mean_loss_grad(tiny_ckpt, train[b], "dpo") for b in batches]
    want = jax.tree.map(lambda *gs: -0.1 * sum(gs), *grads)
    _assert_trees_close(plan, want, rtol=1e-4, atol=1e-8)


def test_full_batch_plan_counts_every_pair_at_its_expected_draws(tiny_ckpt, train):
    n = len(train)
    config = PreferenceConfig(optimizer="sgd", learning_rate=0.1, steps=2, batch_size=n, **RUN)
    start = run_start(tiny_ckpt.graphdef, tiny_ckpt.params, config, train)
    every_pair_twice = np.stack([np.arange(n), np.arange(n)[::-1]])
    _assert_trees_close(planned_update(start, config, train),
                        planned_update(start, config, train, every_pair_twice))
    with pytest.raises(ConfigError, match="needs the batch order"):
        planned_update(start, PreferenceConfig(optimizer="adam", **RUN), train)


def test_adam_plan_of_one_step_is_the_runs_first_update(tiny_ckpt, train):
    """From θ₀ the prediction's gradient is the real one, so Adam's first step is exact."""
    config = PreferenceConfig(optimizer="adam", learning_rate=1e-3, steps=1, batch_size=8, **RUN)
    start = run_start(tiny_ckpt.graphdef, tiny_ckpt.params, config, train)
    plan = planned_update(start, config, train, draw_batches(len(train), config))
    run = train_preference(tiny_ckpt, config, progress=False)
    moved = jax.tree.map(lambda a, b: a - b, run.params, tiny_ckpt.params)
    # Adam's steps are about ±η; float32 parameters near 1 resolve a difference to ~1e-7, and
    # where |g| ~ Adam's ε the step g/(|g|+ε) magnifies the gradient's own rounding
    _assert_trees_close(plan, moved, rtol=1e-3, atol=5e-3 * config.learning_rate)


def test_predicted_changes_match_a_short_run_to_first_order(tiny_ckpt, train):
    """Trained and held-out log-probs after 4 SGD steps: the relative error of the prediction
    shrinks linearly with η (the second-order remainder over a first-order term)."""
    held_out = preference_pairs(tiny_ckpt, PreferenceConfig(probe_size=12, **RUN)).probe
    errors = []
    for lr in (0.02, 0.01):
        config = PreferenceConfig(optimizer="sgd", learning_rate=lr, steps=4, batch_size=8,
                                  **RUN)
        start = run_start(tiny_ckpt.graphdef, tiny_ckpt.params, config, train)
        plan = planned_update(start, config, train, draw_batches(len(train), config))
        predicted = np.concatenate([predicted_changes(start, r, plan)
                                    for r in (held_out.chosen, held_out.rejected)])
        run = train_preference(tiny_ckpt, config, progress=False)
        real = np.concatenate([a - b for a, b in zip(
            sequence_logps(tiny_ckpt.graphdef, run.params, held_out),
            sequence_logps(tiny_ckpt.graphdef, tiny_ckpt.params, held_out))])
        assert np.mean(np.sign(real) == np.sign(predicted)) >= 0.9
        errors.append(np.median(np.abs(real - predicted) / np.abs(predicted)))
    assert errors[0] < 0.2
    assert 1.5 < errors[0] / errors[1] < 2.7  # ≈ 2: first-order error


def test_own_term_signs_are_the_per_pair_condition():
    d_w, d_l = np.array([1.0, 1.0, 2.0]), np.array([1.0, 3.0, 1.0])
    sq_w, sq_l, inner = np.array([4.0, 1.0, 1.0]), np.array([1.0, 1.0, 9.0]), \
        np.array([-1.0, 2.0, 1.0])
    w, l_ = own_term_signs(d_w, d_l, sq_w, sq_l, inner)
    np.testing.assert_array_equal(w, np.sign(d_w * sq_w - d_l * inner))
    np.testing.assert_array_equal(w, [1, -1, 1])
    np.testing.assert_array_equal(l_, [-1, -1, -1])
