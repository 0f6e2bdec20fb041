"""End to end on a tiny config: every claim in every regime, the verify.json contract, the CLI's
exit statuses on bad input."""

import dataclasses
import json

import pytest

from entangle_jax.cli import main
from entangle_jax.cli.verify import CLAIM_IDS
from entangle_jax.config import DataConfig, ModelConfig
from entangle_jax.verify import (CLAIMS, REGIMES, Regime, VerifySettings, exit_status,
                                 format_table, run_verify, to_markdown)

TINY = VerifySettings(
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32),
    data=DataConfig(n_statements=200, max_suffix_length=3, n_unused_words=8),
    regimes=tuple(Regime(r.name, r.description,
                         dataclasses.replace(r.sft, steps=min(r.sft.steps, 3),
                                             pretrain_steps=min(r.sft.pretrain_steps, 3)))
                  for r in REGIMES),
    seeds=(0,), n_pairs=4, grams_length=2, ntk_pairs=1, n_boot=100)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_verify(TINY, cache_dir=tmp_path_factory.mktemp("models"), progress=False,
                      log=lambda line: None)


def test_report_contract(report):
    assert [c["id"] for c in report["claims"]] == [c.id for c in CLAIMS]
    assert {"versions", "config_hash", "settings", "timings"} <= set(report)
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


def test_exact_identities_hold_in_every_regime(report):
    claim = next(c for c in report["claims"] if c["id"] == "output_layer_identity")
    assert all(r["verdict"] == "HOLDS" for r in claim["regimes"])


def test_human_outputs(report):
    table = format_table(report)
    assert all(c.id in table for c in CLAIMS)
    assert "## theorem1_single_token" in to_markdown(report)


def test_cli_claim_ids_match_the_registry():
    assert set(CLAIM_IDS) == {c.id for c in CLAIMS}


@pytest.mark.parametrize("argv", [["--seeds", "a"], ["--only", "no_such_claim"],
                                  ["--pairs", "1"], ["--seeds", "0,0"]])
def test_cli_bad_input_exits_2(argv, capsys):
    assert main(["verify", *argv]) == 2
    assert "entangle: error:" in capsys.readouterr().err
