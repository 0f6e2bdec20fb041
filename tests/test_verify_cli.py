"""End to end on a tiny config: every claim in every regime, the verify.json contract, the CLI's
exit statuses on bad input."""

import dataclasses
import json

import pytest

from entangle_jax.cli import main
from entangle_jax.cli.verify import CLAIM_IDS
from entangle_jax.config import DataConfig, ModelConfig
from entangle_jax.verify import (CLAIMS, REGIMES, Regime, VerifySettings, exit_status,
                                 format_table, run_verify, select_claims, to_markdown)

# The two regimes the claims name as their own, untrained (training is tested elsewhere; every
# check still runs on a real model)
REGIMES = tuple(Regime(r.name, r.description, dataclasses.replace(r.sft, steps=0,
                                                                  pretrain_steps=0))
                for r in REGIMES if r.name in {c.headline_regime for c in CLAIMS})
TINY = VerifySettings(
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32),
    data=DataConfig(n_statements=200, max_suffix_length=3, n_unused_words=8),
    regimes=REGIMES, seeds=(0,), n_pairs=4, long_suffix=3, ntk_pairs=1, n_boot=100)


#: The gradient-only claims; the two that take real steps and a DPO run are in the slow test.
FAST = select_claims(["theorem1_single_token", "output_layer_identity",
                      "theorem3_suffix_positive", "theorem3_suffix_growth",
                      "tokenwise_sentiment_negative"])


def _run(claims, tmp_path_factory):
    return run_verify(TINY, claims, cache_dir=tmp_path_factory.mktemp("models"),
                      progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _run(FAST, tmp_path_factory)


def _check_contract(report, claims):
    assert [c["id"] for c in report["claims"]] == [c.id for c in claims]
    assert {"versions", "config_hash", "settings", "timings"} <= set(report)
    # the process has at least the model's runtime resident: more than 50 MiB, not terabytes
    assert 50 < report["timings"]["peak_memory_mb"] < 2**20
    for claim in report["claims"]:
        assert claim["headline_verdict"] in ("HOLDS", "FAILS", "NOT_APPLICABLE")
        assert [r["regime"] for r in claim["regimes"]] == [r.name for r in REGIMES]
        for row in claim["regimes"]:
            assert row["verdict"] in ("HOLDS", "FAILS", "NOT_APPLICABLE")
            assert row["seeds"] == [0] and row["n_pairs"] == 4
            assert len(row["ci"]) == 2 and isinstance(row["rule"], str) and row["statistic"]
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN anywhere
    assert exit_status(report) == (0 if all(c["headline_verdict"] == "HOLDS"
                                            for c in report["claims"]) else 1)


def test_report_contract(report):
    _check_contract(report, FAST)


@pytest.mark.slow
def test_step_claims_end_to_end(tmp_path_factory):
    report = _run(CLAIMS, tmp_path_factory)
    _check_contract(report, CLAIMS)
    rows = {(c["id"], r["regime"]): r for c in report["claims"] for r in c["regimes"]}
    for regime in TINY.regimes:
        checks = {x["statistic"]: x for x in rows["gradient_condition", regime.name]["checks"]}
        # Cauchy–Schwarz: no pair is in case 4, and the margin never falls, to first order
        assert checks["fraction of pairs in case 4 (predicted or real)"]["value"] == 0.0
        assert checks["fraction of pairs whose DPO margin falls to first order"]["value"] == 0.0
        norm = rows["normalized_mitigation", regime.name]["checks"][1]
        assert norm["statistic"].endswith("to first order") and norm["value"] == 1.0


def test_exact_identities_hold_in_every_regime(report):
    claim = next(c for c in report["claims"] if c["id"] == "output_layer_identity")
    assert all(r["verdict"] == "HOLDS" for r in claim["regimes"])


def test_human_outputs(report):
    table = format_table(report)
    assert all(c.id in table for c in FAST)
    assert "## theorem1_single_token" in to_markdown(report)


def test_saved_measurements_resume_a_run(tmp_path):
    """Each claim's measurements on each model are saved as taken: a later run reuses them
    (same report), measures only what is missing or unreadable, and ``remeasure`` measures
    everything again, to the same numbers."""
    from entangle_jax.verify.runner import measurement_path

    kwargs = dict(cache_dir=tmp_path, progress=False, log=lambda line: None)
    calls = []

    def counted(claim):
        def measure(ctx):
            calls.append(claim.id)
            return claim.measure(ctx)
        return dataclasses.replace(claim, measure=measure)

    first = run_verify(TINY, select_claims(["theorem1_single_token"]), **kwargs)
    t1, t3 = (counted(c) for c in select_claims(["theorem1_single_token",
                                                  "theorem3_suffix_positive"]))
    measurement_path(TINY, t1, TINY.regimes[0], 0, tmp_path).write_bytes(b"cut short")
    second = run_verify(TINY, [t1, t3], **kwargs)
    assert sorted(calls) == ["theorem1_single_token"] + ["theorem3_suffix_positive"] * 2
    assert second["timings"]["saved_earlier"] == 1
    assert second["claims"][0]["regimes"] == first["claims"][0]["regimes"]
    calls.clear()
    again = run_verify(TINY, [t1, t3], remeasure=True, **kwargs)
    assert len(calls) == 4 and again["timings"]["saved_earlier"] == 0
    assert [c["regimes"] for c in again["claims"]] == [c["regimes"] for c in second["claims"]]


def test_cli_claim_ids_match_the_registry():
    assert set(CLAIM_IDS) == {c.id for c in CLAIMS}


@pytest.mark.parametrize("argv", [["--seeds", "a"], ["--only", "no_such_claim"],
                                  ["--pairs", "1"], ["--seeds", "0,0"]])
def test_cli_bad_input_exits_2(argv, capsys):
    assert main(["verify", *argv]) == 2
    assert "entangle: error:" in capsys.readouterr().err


def test_batched_dynamics_end_to_end_on_a_short_run(tmp_path_factory):
    """The claim's runs and predictions on the tiny config: 3 steps of 8 pairs, SGD and Adam."""
    settings = dataclasses.replace(TINY, run_steps=3, run_batch=8)
    report = run_verify(settings, select_claims(["batched_dynamics"]),
                        cache_dir=tmp_path_factory.mktemp("models"), progress=False,
                        log=lambda line: None)
    (claim,) = report["claims"]
    for row in claim["regimes"]:
        assert len(row["checks"]) == 8 and row["control"]["statistic"].startswith("fraction")
        # three small steps: the prediction has the real sign (measured: every response, 8 each)
        for sign_check in row["checks"][::2]:
            assert sign_check["value"] >= 0.75, sign_check
        seed = row["details"]["seeds"][0]
        assert -0.5 <= seed["batch_imbalance_positive_minus_half"] <= 0.5
    json.dumps(report, allow_nan=False)


def test_cli_real_selects_the_real_regimes(monkeypatch, tmp_path):
    import entangle_jax.verify as verify_module

    seen = {}

    def capture(settings, claims, **kwargs):
        seen["settings"] = settings
        raise KeyboardInterrupt  # stop before any model is loaded

    monkeypatch.setattr(verify_module, "run_verify", capture)
    assert main(["verify", "--real", "--quick", "--out", str(tmp_path)]) == 130
    settings = seen["settings"]
    assert [r.name for r in settings.regimes] == ["smollm2", "smollm2_sft"]
    assert settings.seeds == (0,) and settings.n_pairs == 16 and settings.precision == "float32"
    assert settings.run_train_params == "last:2"
