"""The report of a preference run with probe responses (``entangle train --objective dpo --data
FILE --probe-data FILE``): its numbers against the saved models' own log-probs."""

import json
from pathlib import Path

import numpy as np
import pytest

from entangle_jax.checkpoint import load_checkpoint, save_checkpoint
from entangle_jax.cli import main
from entangle_jax.config import ModelConfig, SFTConfig
from entangle_jax.data.records import DataError
from entangle_jax.data.userdata import load_user_data
from entangle_jax.logprob import response_logprobs, sequence_logps
from entangle_jax.train.preference import PreferenceConfig, preference_pairs, read_log
from entangle_jax.train.probe_report import format_probe_report, probe_report
from entangle_jax.train.sft import train_sft

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pairs.jsonl"


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def dpo_probe_run(tmp_path_factory):
    """A tiny word model fine-tuned on 30 example pairs, then 6 DPO steps (SGD, a large rate so
    that log-probs move both ways) probed on 10 pairs carrying two probe fields (records of the
    training file, so that every word is in the model's vocabulary); the first probe record has
    no preference (a skipped record shifts the record numbers)."""
    base = tmp_path_factory.mktemp("dpo_probes")
    records = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:30]]
    for k, record in enumerate(records):
        record["chosen_selfr"] = "I think " + record["chosen"]
        if k % 2:
            record["irr_train"] = records[k - 1]["rejected"]
    held_out = [dict(records[20], rejected=records[20]["chosen"]), *records[:12]]
    train_path, probe_path = _write(base / "train.jsonl", records), base / "probe.jsonl"
    _write(probe_path, held_out)
    ckpt = train_sft(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32),
                     load_user_data(train_path), SFTConfig(steps=6, batch_size=8),
                     progress=False)
    save_checkpoint(base / "sft", ckpt)
    log = base / "dpo.jsonl"
    rc = main(["train", "--objective", "dpo", "--checkpoint", str(base / "sft"), "--data",
               str(train_path), "--probe-data", str(probe_path), "--skip-bad-lines",
               "--optimizer", "sgd", "--learning-rate", "0.5", "--steps", "6", "--batch-size",
               "8", "--probe-every", "3", "--probe-size", "10", "--log", str(log), "--save",
               str(base / "dpo")])
    return rc, base, log


def test_report_is_the_saved_models_own_log_probs(dpo_probe_run):
    rc, base, log = dpo_probe_run
    assert rc == 0
    report = json.loads(log.with_suffix(".report.json").read_text())
    sft, dpo = load_checkpoint(base / "sft"), load_checkpoint(base / "dpo")
    probe_data = load_user_data(base / "probe.jsonl", skip_bad_lines=True)
    sets = preference_pairs(sft, PreferenceConfig(probe_size=10),
                            load_user_data(base / "train.jsonl"), probe_data)
    lines = [int(where.rsplit(":", 1)[1]) for where in sets.probe_sources]
    assert lines == list(range(2, 12))  # line 1 has no preference and is skipped
    before_w, before_l = sequence_logps(sft.graphdef, sft.params, sets.probe)
    after_w, after_l = sequence_logps(dpo.graphdef, dpo.params, sets.probe)
    chosen = report["chosen"]
    assert chosen["n"] == 10 and report["probe_steps"] == [0, 6]
    np.testing.assert_allclose(chosen["start"], before_w.mean(), rtol=1e-5)
    np.testing.assert_allclose(chosen["end"], after_w.mean(), rtol=1e-5)
    np.testing.assert_allclose(report["rejected"]["change"], (after_l - before_l).mean(),
                               rtol=1e-4, atol=1e-6)
    fell = np.flatnonzero(after_w - before_w < 0)
    assert 0 < len(fell) < 10  # the run moves log π_w both ways: both branches are exercised
    assert chosen["fell"] == pytest.approx(len(fell) / 10)
    assert {p["source"] for p in chosen["fell_pairs"]} == {sets.probe_sources[k] for k in fell}
    changes = [p["change"] for p in chosen["fell_pairs"]]
    assert changes == sorted(changes) and max(changes) < 0
    for name, probe_set in sets.responses.items():
        delta = (response_logprobs(dpo.graphdef, dpo.params, probe_set.responses)
                 - response_logprobs(sft.graphdef, sft.params, probe_set.responses))
        r = report["responses"][name]
        assert r["n"] == len(probe_set.rows)
        np.testing.assert_allclose(r["change"], delta.mean(), rtol=1e-4, atol=1e-6)
        assert r["fell"] == pytest.approx(np.mean(delta < 0))
    assert report["responses"]["irr_train"]["kind"] == "irrelevant"
    assert set(report["train_metrics"]) >= {"logps/chosen", "rewards/margins"}


def test_report_says_plainly_what_fell(dpo_probe_run):
    _, _, log = dpo_probe_run
    report = probe_report(read_log(log))
    text = format_probe_report(report)
    assert text.rstrip("\n") == log.with_suffix(".report.md").read_text().rstrip("\n")
    moved = "fell" if report["chosen"]["change"] < 0 else "rose"
    assert f"- The chosen log-prob {moved} on average by" in text
    n_fell = len(report["chosen"]["fell_pairs"])
    assert f"it fell for {n_fell} of 10 probe pairs" in text
    beta = report["reward_beta"]
    assert beta == pytest.approx(0.1)  # DPO's default β, with which TRL's rewards are logged
    last = report["train_metrics"]["rewards/chosen"]["last_steps"] / beta
    assert f"to {last:+.3g} nats (chosen)" in text
    assert "Ren & Sutherland" in text and "| chosen_selfr | chosen rephrased | 10 |" in text


def test_a_log_without_probe_responses_is_refused(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, [{"kind": "config"}, {"kind": "train", "step": 1}])
    with pytest.raises(DataError, match="no per-pair probes"):
        probe_report(read_log(log))


def test_figure_8_draws_the_probe_log(dpo_probe_run):
    """Figure 8's series are the log's probe records: their changes since step 0 are the report's
    mean changes; the case fractions of each probe step sum to 1."""
    from entangle_jax.figures.paper import fig1_training_dynamics as fig1
    from entangle_jax.figures.paper import fig8_probe_dynamics as fig8

    _, _, log = dpo_probe_run
    records = read_log(log)
    report = probe_report(records)
    run = PreferenceConfig(objective="dpo", optimizer="sgd", learning_rate=0.5, steps=6,
                           batch_size=8, probe_every=3, probe_size=10)
    cfg = fig1.Config(settings=None, runs=(("examples", run),))
    results = {"runs": {"examples": {"records": records}}}
    rows = fig8.series(results, cfg)
    last = {r["series"]: r for r in rows if r["step"] == 6}
    # the log's means are float32 sums; the report averages the per-pair float32 values
    close = dict(rel=1e-4, abs=1e-6)
    assert last["chosen (probe pairs)"]["change"] == pytest.approx(report["chosen"]["change"],
                                                                   **close)
    assert last["rejected (probe pairs)"]["change"] == pytest.approx(
        report["rejected"]["change"], **close)
    for field in ("chosen_selfr", "irr_train"):
        assert last[field]["change"] == pytest.approx(report["responses"][field]["change"],
                                                      **close)
    geometry = [r for r in rows if r["series"] == "geometry"]
    assert [r["step"] for r in geometry] == [0, 3, 6]
    for r in geometry:
        assert sum(r[f"case_{k}"] for k in range(1, 5)) == pytest.approx(1.0)
    fig, _ = fig8.plot(results, cfg)
    assert len(fig.axes) == 4  # three panels and the cosine's right axis
