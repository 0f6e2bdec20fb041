"""The filtering experiment: its removal rules, training on a subset of the pairs (against a task
built from those pairs only) and the experiment's bookkeeping on a tiny run."""

import dataclasses

import jax
import numpy as np
import pytest

from entangle_jax.data.tasks import make_task_data
from entangle_jax.logprob import sequence_logps
from entangle_jax.filtering import filtering_experiment, random_removal, top_risk
from entangle_jax.train import PreferenceConfig, train_preference
from entangle_jax.train.preference import preference_pairs

CONFIG = PreferenceConfig(objective="dpo", optimizer="sgd", learning_rate=0.05, steps=2,
                          batch_size=4, suffix_length=2, probe_every=0)


def test_top_risk_takes_the_highest_risks_and_the_earlier_of_ties():
    risk = [0.1, 0.9, 0.5, 0.9, -2.0]
    assert top_risk(risk, 0.4).tolist() == [1, 3]
    assert top_risk(risk, 0.1).tolist() == [1]  # ceil(0.5) = 1; the tie goes to the earlier
    assert top_risk(risk, 0.5).tolist() == [1, 2, 3]


def test_random_removal_is_deterministic_per_seed():
    a = random_removal(50, 5, seed=1)
    assert a.tolist() == random_removal(50, 5, seed=1).tolist()
    assert len(set(a.tolist())) == 5 and a.tolist() == sorted(a.tolist())
    assert a.tolist() != random_removal(50, 5, seed=2).tolist()


def test_training_on_rows_is_training_on_a_task_of_those_pairs_only(tiny_ckpt):
    task = make_task_data(tiny_ckpt.data_config, tiny_ckpt.tokenizer)
    kept = np.arange(0, len(task.train), 3)
    by_rows = train_preference(tiny_ckpt, CONFIG, train_rows=kept, progress=False)
    by_task = train_preference(
        tiny_ckpt, CONFIG, progress=False,
        task=dataclasses.replace(task, train=tuple(task.train[i] for i in kept)))
    for a, b in zip(jax.tree.leaves(by_rows.params), jax.tree.leaves(by_task.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert by_rows.records[0]["train_rows"] == kept.tolist()
    assert by_rows.records[0]["train_pairs"] == len(kept)


@pytest.fixture(scope="module")
def experiment(tiny_ckpt):
    sets = preference_pairs(tiny_ckpt, CONFIG)
    train, held = sets.train[:24], sets.probe[:8]
    task = make_task_data(tiny_ckpt.data_config, tiny_ckpt.tokenizer)
    source = {"task": dataclasses.replace(task, train=task.train[:24])}
    rules = {"none": np.array([], int), "random": None, "first": np.array([0, 1, 2])}
    result = filtering_experiment(tiny_ckpt, CONFIG, source, train, rules, held=held,
                                  probes={"held_chosen": held.chosen}, seeds=(0, 1),
                                  fraction=0.1)
    return result, train, held, source


def test_dropping_nothing_is_the_plain_run(experiment, tiny_ckpt):
    result, train, held, source = experiment
    run = train_preference(tiny_ckpt, dataclasses.replace(CONFIG, seed=1), progress=False,
                           **source)
    before = sequence_logps(tiny_ckpt.graphdef, tiny_ckpt.params, held)
    after = sequence_logps(tiny_ckpt.graphdef, run.params, held)
    d_w, d_l = after[0] - before[0], after[1] - before[1]
    measured = result["none"]["runs"][1]["held_out"]
    assert measured["fraction_chosen_fell"] == pytest.approx(np.mean(d_w < 0))
    assert measured["mean_delta_margin"] == pytest.approx(np.mean(d_w - d_l), rel=1e-5)
    # the probe here is the held-out chosen response itself: two paths to one number
    assert result["none"]["runs"][1]["probes"]["held_chosen"] == pytest.approx(
        measured["mean_delta_chosen"], rel=1e-4, abs=1e-7)


def test_the_experiment_drops_what_each_rule_says_and_averages_over_seeds(experiment):
    result, train, _, _ = experiment
    assert result["first"]["removed"] == [0, 1, 2]
    assert [run["removed"] for run in result["first"]["runs"]] == [[0, 1, 2]] * 2
    randoms = [run["removed"] for run in result["random"]["runs"]]
    assert randoms == [random_removal(24, 3, seed).tolist() for seed in (0, 1)]
    for rule, pairs in (("none", 24), ("random", 21), ("first", 21)):
        runs = result[rule]["runs"]
        assert [run["trained"]["pairs"] for run in runs] == [pairs, pairs]
        mean, sd = result[rule]["mean"]["held_out"]["mean_delta_margin"]
        values = [run["held_out"]["mean_delta_margin"] for run in runs]
        assert mean == pytest.approx(np.mean(values)) and sd == pytest.approx(np.std(values))
