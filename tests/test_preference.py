"""The preference loop: TRL metrics with known starting values, probes against independent
measurements, an SGD step against direct autodiff, determinism and crash-safe JSONL logs."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from autodiff_reference import mean_loss_grad

from entangle_jax.checkpoint import save_checkpoint
from entangle_jax.cli import main
from entangle_jax.config import ConfigError, ModelConfig, SFTConfig
from entangle_jax.gradients import pair_geometry
from entangle_jax.train import PreferenceConfig, train_preference, train_sft
from entangle_jax.train import preference as preference_module
from entangle_jax.train.preference import preference_pairs, read_log

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = dict(batch_size=8, probe_size=6, suffix_length=2, probe_every=2)


@pytest.fixture(scope="module")
def dpo_run(tiny_ckpt, tmp_path_factory):
    log = tmp_path_factory.mktemp("pref") / "log.jsonl"
    return train_preference(tiny_ckpt, PreferenceConfig(steps=4, **SMALL), log_path=log,
                            progress=False), log


def test_log_holds_every_record_with_trl_names(dpo_run):
    run, log = dpo_run
    assert read_log(log) == json.loads(json.dumps(run.records))
    kinds = [(r["kind"], r["step"]) for r in run.records if r["kind"] != "config"]
    assert kinds == [("probe", 0), ("train", 1), ("train", 2), ("probe", 2), ("train", 3),
                     ("train", 4), ("probe", 4)]
    train = [r for r in run.records if r["kind"] == "train"]
    for r in train:
        for key in ("logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected",
                    "rewards/margins", "rewards/accuracies", "loss", "grad_norm"):
            assert math.isfinite(r[key]), key
        assert r["rewards/margins"] == pytest.approx(r["rewards/chosen"] - r["rewards/rejected"],
                                                     abs=1e-6)
    # the policy is its own reference before the first update (the reference's log-probs are
    # computed once, before the run, by another compiled program: equal up to float32 rounding)
    first = train[0]
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert first["loss"] == pytest.approx(math.log(2), rel=1e-6)  # −log σ(0)


def test_probe_matches_independent_measurements(dpo_run, tiny_ckpt):
    run, _ = dpo_run
    probe0 = next(r for r in run.records if r["kind"] == "probe")
    pairs = preference_pairs(tiny_ckpt, PreferenceConfig(suffix_length=2, probe_size=6)).probe
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    assert probe0["probe/grad_inner"] == pytest.approx(float(geo.inner.mean()), rel=1e-4)
    assert probe0["probe/grad_cosine"] == pytest.approx(float(geo.cosine.mean()), rel=1e-4)
    assert probe0["probe/grad_norm_chosen"] == pytest.approx(
        float(np.sqrt(geo.sq_norm_w).mean()), rel=1e-4)
    assert probe0["probe/logps/chosen"] == pytest.approx(float(geo.logp_w.mean()), rel=1e-5)
    assert sum(probe0[f"probe/case_{k}"] for k in range(1, 5)) == pytest.approx(1.0)
    # the policy is its own reference: DPO's d = β σ(0) = 0.05 for every pair
    assert probe0["probe/d_w"] == probe0["probe/d_l"] == pytest.approx(0.05)
    assert probe0["probe/frac_d_nonpositive"] == 0.0


def test_sgd_step_is_the_gradient_of_the_mean_loss(tiny_ckpt):
    """With the whole train split as the batch, one SGD step is θ − η ∇ mean ℓ, by autodiff."""
    train = preference_pairs(tiny_ckpt, PreferenceConfig(suffix_length=2)).train
    lr = 0.05
    config = PreferenceConfig(objective="ipo", optimizer="sgd", learning_rate=lr, steps=1,
                              batch_size=len(train), suffix_length=2, probe_every=0)
    run = train_preference(tiny_ckpt, config, progress=False)
    want = jax.tree.map(lambda p, g: p - lr * g, tiny_ckpt.params,
                        mean_loss_grad(tiny_ckpt, train, "ipo"))
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_deterministic_for_a_seed(tiny_ckpt):
    config = PreferenceConfig(steps=3, **{**SMALL, "probe_every": 0})
    a = train_preference(tiny_ckpt, config, progress=False).records
    b = train_preference(tiny_ckpt, config, progress=False).records
    c = train_preference(tiny_ckpt, PreferenceConfig(steps=3, seed=1, **{**SMALL, "probe_every": 0}),
                         progress=False).records
    assert a == b
    assert [r.get("loss") for r in a[2:]] != [r.get("loss") for r in c[2:]]


def test_crash_keeps_the_lines_written_before_it(tiny_ckpt, tmp_path, monkeypatch):
    real, calls = preference_module.step_check, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in the second probe")
        return real(*args, **kwargs)

    monkeypatch.setattr(preference_module, "step_check", failing)
    log = tmp_path / "log.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_preference(tiny_ckpt, PreferenceConfig(steps=4, **SMALL), log_path=log,
                         progress=False)
    kinds = [(r["kind"], r.get("step")) for r in read_log(log)]
    assert kinds == [("config", None), ("probe", 0), ("train", 1), ("train", 2)]


def test_mitigations_train_on_the_same_batches(tiny_ckpt):
    runs = {m: train_preference(tiny_ckpt, PreferenceConfig(steps=2, mitigation=m, mask_l1=0.05,
                                                            mask_learning_rate=1.0, **SMALL),
                                progress=False) for m in ("none", "normalized", "token_mask")}
    firsts = {m: next(r for r in run.records if r["kind"] == "train") for m, run in runs.items()}
    for m in ("normalized", "token_mask"):  # same seed: same first batch, same starting point
        assert firsts[m]["logps/chosen"] == pytest.approx(firsts["none"]["logps/chosen"])
    mask = np.asarray(runs["token_mask"].extra)
    assert mask.shape == (tiny_ckpt.data_config.max_suffix_length + 1,)
    assert np.all((mask >= 0) & (mask <= 1))
    last_probe = [r for r in runs["token_mask"].records if r["kind"] == "probe"][-1]
    assert len(last_probe["mask/weights"]) == 3 and 0 <= last_probe["mask/sentiment_share"] <= 1
    assert runs["normalized"].records[0]["method"] == "dpo+normalized"


def test_user_data_checkpoint_trains(tmp_path):
    from entangle_jax.data.userdata import load_user_data

    data = load_user_data(EXAMPLES / "pairs.jsonl")
    ckpt = train_sft(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32, max_len=48), data,
                     SFTConfig(steps=2, batch_size=8), progress=False)
    run = train_preference(ckpt, PreferenceConfig(steps=2, batch_size=8, probe_every=2,
                                                  probe_size=4), progress=False)
    assert run.records[0]["user_data"]["path"] == str(EXAMPLES / "pairs.jsonl")
    assert [r["kind"] for r in run.records][1:] == ["probe", "train", "train", "probe"]


@pytest.mark.parametrize("kwargs", [dict(objective="kto"), dict(hparams={"beta": -1}),
                                    dict(optimizer="rmsprop"), dict(mitigation="dropout"),
                                    dict(learning_rate=0.0), dict(steps=0), dict(mask_l1=-1.0),
                                    dict(probe_every=-1)])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        PreferenceConfig(**kwargs)


def test_suffix_beyond_the_data_raises(tiny_ckpt):
    with pytest.raises(ConfigError, match="suffix_length"):
        train_preference(tiny_ckpt, PreferenceConfig(suffix_length=13), progress=False)


def test_cli_train_objective_writes_log(tmp_path, tiny_ckpt, capsys):
    save_checkpoint(tmp_path / "ckpt", tiny_ckpt)
    log = tmp_path / "runs" / "dpo.jsonl"
    code = main(["train", "--objective", "sigmoid", "--hparam", "beta=0.2", "--checkpoint",
                 str(tmp_path / "ckpt"), "--steps", "2", "--batch-size", "8", "--probe-every",
                 "1", "--probe-size", "4", "--shape", "long", "--stratify", "--log", str(log)])
    assert code == 0
    records = read_log(log)
    assert records[0]["objective"] == "dpo(beta=0.2)"
    assert records[0]["config"]["suffix_length"] == 6 and records[0]["config"]["stratify"]
    assert [r["kind"] for r in records].count("train") == 2
    assert main(["train", "--objective", "dpo"]) == 2  # a checkpoint is required
    assert "--checkpoint" in capsys.readouterr().err


def test_runs_at_other_learning_rates_reuse_the_compiled_step(tiny_ckpt):
    """The rate is traced (in the optimizer state), so a new rate does not recompile."""
    def run(optimizer, lr):
        config = PreferenceConfig(optimizer=optimizer, learning_rate=lr, steps=1,
                                  **{**SMALL, "probe_every": 0})
        return train_preference(tiny_ckpt, config, progress=False)

    for optimizer in ("sgd", "adam"):
        run(optimizer, 0.1)
        compiled = preference_module._train_step._cache_size()
        a, b = run(optimizer, 0.05), run(optimizer, 0.025)
        assert preference_module._train_step._cache_size() == compiled
        # and each run steps by its own rate: one step from θ₀ is linear in it (SGD and Adam)
        def moved(run_):
            return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in
                       zip(jax.tree.leaves(run_.params), jax.tree.leaves(tiny_ckpt.params)))

        assert moved(a) == pytest.approx(2 * moved(b), rel=1e-3)


def test_read_log_refuses_a_bad_line_before_the_last(tmp_path):
    from entangle_jax.data.records import DataError

    log = tmp_path / "log.jsonl"
    log.write_text('{"kind": "config"}\n{"kind": "tra\n')
    assert read_log(log) == [{"kind": "config"}]  # a crash cut the last line short
    log.write_text('{"kind": "config"}\nnot json\n{"kind": "train"}\n')
    with pytest.raises(DataError, match="log.jsonl:2"):
        read_log(log)
