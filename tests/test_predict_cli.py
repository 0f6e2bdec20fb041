"""``entangle predict``: CHES and the edit distance by hand, and small end-to-end runs (the
sentiment task; a data file with probe responses)."""

import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from entangle_jax.checkpoint import save_checkpoint
from entangle_jax.ches import (ches_scores, edit_distance, pair_edit_distances,
                               response_hidden_sums)
from entangle_jax.cli import main
from entangle_jax.cli.predict import (ENTK_PREDICTORS, FILTER_PREDICTORS, PREDICTORS, SETS,
                                      TARGETS, risk_of)
from entangle_jax.config import ModelConfig, SFTConfig
from entangle_jax.data.userdata import load_user_data
from entangle_jax.filtering import top_risk
from entangle_jax.train.sft import train_sft

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pairs.jsonl"


def test_ches_by_hand():
    # h⁺ = (1, 2), h⁻ = (3, 0), |y⁺| = 2, |y⁻| = 3:
    # CHES = ⟨h⁺, h⁻⟩ − ‖h⁺‖² = 3 − 5; LN-CHES = 3/(2·3) − 5/2² = 0.5 − 1.25
    w, l_ = np.array([[1.0, 2.0]]), np.array([[3.0, 0.0]])
    assert ches_scores(w, l_, [2], [3]).tolist() == [-2.0]
    assert ches_scores(w, l_, [2], [3], normalize=True).tolist() == [-0.75]


def test_hidden_sums_are_the_states_that_predict_the_response(tiny_ckpt, make_pairs):
    responses = make_pairs(2, n=3).chosen
    sums = response_hidden_sums(tiny_ckpt.graphdef, tiny_ckpt.params, responses, chunk_size=2)
    model = nnx.merge(tiny_ckpt.graphdef, tiny_ckpt.params)
    for i in range(3):
        start, length = int(responses.start[i]), int(responses.length[i])
        h = np.asarray(model.features(responses.tokens[i]))
        # the state at position t predicts token t + 1
        np.testing.assert_allclose(sums[i], h[start - 1:start - 1 + length].sum(0), rtol=1e-5,
                                   atol=1e-5)


def test_edit_distance(make_pairs):
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2, 3]) == 3
    assert edit_distance([4, 5], [4, 5]) == 0
    # sentiment pairs differ in the sentiment token only
    assert pair_edit_distances(make_pairs(6)).tolist() == [1.0] * 6


@pytest.fixture(scope="module")
def predict_run(tiny_ckpt, tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    save_checkpoint(base / "ckpt", tiny_ckpt)
    out = base / "out"
    rc = main(["predict", "--checkpoint", str(base / "ckpt"), "--pairs", "32", "--held-out", "16",
               "--batch", "8", "--steps", "3", "--optimizer", "sgd", "--lr", "0.02",
               "--bootstrap", "200", "--filter-seeds", "2", "--out", str(out)])
    return rc, out


def _strict(text):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_predict_writes_every_predictor_and_target(predict_run):
    rc, out = predict_run
    assert rc == 0
    report = _strict((out / "predict.json").read_text())
    assert (out / "roc.png").stat().st_size > 0
    assert "| entk_realized |" in (out / "predict.md").read_text()
    assert [report["targets"][t]["steps"] for t in TARGETS] == [1, 3, 4]  # epoch: ⌈32/8⌉
    assert set(report["cost_s"]) >= set(PREDICTORS)
    for set_name in SETS:
        for target in TARGETS:
            for name, (_, signed) in PREDICTORS.items():
                s = report["scores"][set_name][target][name]
                assert set(s) == {"auroc", "auroc_ci95", "precision_top10", "sign_agreement",
                                  "spearman"}
                assert s["auroc"] is None or 0 <= s["auroc"] <= 1
                assert (s["sign_agreement"] is not None) == signed
            assert len(report["pairs"][set_name]["delta_logp_w"][target]) == (
                32 if set_name == "trained" else 16)


def test_filtering_drops_each_predictors_flagged_pairs(predict_run):
    report = _strict((predict_run[1] / "predict.json").read_text())
    f = report["filtering"]
    assert f["removed_pairs"] == 4 and f["seeds"] == [0, 1] and f["steps"] == 4
    assert {"none", "random", *FILTER_PREDICTORS, f["best_predictor"]} == set(f["rules"])
    for name in (*FILTER_PREDICTORS, f["best_predictor"]):
        risk = risk_of(name, np.asarray(report["pairs"]["trained"][name]["epoch"]))
        assert f["rules"][name]["removed"] == top_risk(risk, 0.1).tolist()
        assert set(np.argsort(-risk)[:4]) == set(f["rules"][name]["removed"])
    # dropping nothing with the planned seed is the run the epoch target was measured on
    none = f["rules"]["none"]["runs"][0]
    assert none["held_out"]["fraction_chosen_fell"] == pytest.approx(
        report["base_rate"]["held_out"]["epoch"])
    assert none["trained"]["pairs"] == 32
    assert "| entk_full |" in (predict_run[1] / "predict.md").read_text().split("## filtering")[1]


def test_realized_batch_prediction_gets_the_k_step_signs(predict_run):
    """Measured on this tiny model with SGD at η = 0.02 for seeds 0-3: sign agreement ≥ 0.96 and
    AUROC ≥ 0.99 on both pair sets after K steps."""
    _, out = predict_run
    report = _strict((out / "predict.json").read_text())
    for set_name in SETS:
        s = report["scores"][set_name]["steps_K"]["entk_realized"]
        assert s["sign_agreement"] >= 0.9
        assert s["auroc"] >= 0.9


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["predict", "--pairs", "4", "--batch", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("entangle: error:") and "\n" not in err


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """A tiny word model trained on 40 example pairs whose records carry two probe responses
    (a rephrased chosen response and an irrelevant one), then predict with a small SGD step."""
    base = tmp_path_factory.mktemp("predict_probes")
    records = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:40]]
    for k, record in enumerate(records):
        record["chosen_selfr"] = "I think " + record["chosen"]
        if k % 2:  # a field some records lack
            record["irr_train"] = records[k - 1]["rejected"]
    path = base / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ckpt = train_sft(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32),
                     load_user_data(path), SFTConfig(steps=6, batch_size=8), progress=False)
    save_checkpoint(base / "ckpt", ckpt)
    out = base / "out"
    rc = main(["predict", "--checkpoint", str(base / "ckpt"), "--data", str(path),
               "--pairs", "24", "--held-out", "16", "--batch", "8", "--steps", "2",
               "--optimizer", "sgd", "--lr", "0.01", "--bootstrap", "50", "--filter-seeds", "1",
               "--out", str(out)])
    return rc, out


def test_probe_responses_of_held_out_prompts_are_predicted_to_first_order(probe_run):
    rc, out = probe_run
    assert rc == 0
    report = _strict((out / "predict.json").read_text())
    probes = report["probes"]
    assert set(probes) == {"chosen_selfr", "irr_train"}
    assert probes["chosen_selfr"]["responses"] == 16 and probes["irr_train"]["responses"] == 8
    assert probes["irr_train"]["kind"] == "irrelevant"
    assert "| chosen_selfr | chosen rephrased | 16 |" in (out / "predict.md").read_text()
    # the filtering runs measure the same probes: all of them pooled, and per field
    filtered = report["filtering"]["rules"]["none"]["runs"][0]["probes"]
    assert set(filtered) == {"chosen_selfr", "irr_train", "all"}
    assert min(filtered.values()) <= filtered["all"] <= max(filtered.values())
    for probe in probes.values():
        for target in TARGETS:
            t = probe["targets"][target]
            real = np.asarray(t["delta_logp"])
            assert t["fraction_fell"] == pytest.approx(np.mean(real < 0))
            assert set(t["predicted"]) == set(ENTK_PREDICTORS)
            # one SGD step at a small η: the realized-batch prediction is the change to first
            # order, so it matches every response's change to a few percent
            if t["steps"] == 1:
                predicted = np.asarray(t["predicted"]["entk_realized"]["delta_logp"])
                np.testing.assert_allclose(predicted, real, rtol=0.1,
                                           atol=0.05 * np.abs(real).max())
