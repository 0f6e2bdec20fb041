"""Rules, checks, hypotheses and verdicts of the verification framework."""

import math

import pytest

from entangle_jax.config import ConfigError
from entangle_jax.verify import (Check, Condition, Evaluation, Hypothesis, Rule, Verdict,
                                 VerifySettings)


def test_rule_bounds_and_ops():
    ci = (0.85, 0.97)
    assert Rule("ci_lo", ">=", 0.8).passes(0.9, ci)
    assert not Rule("ci_lo", ">=", 0.9).passes(0.9, ci)
    assert Rule("value", ">=", 0.9).passes(0.9, ci)
    assert Rule("ci_hi", "<", 1.0).passes(0.9, ci)
    assert not Rule("value", ">", 0.0).passes(math.nan, ci)  # undefined never passes
    assert Rule("ci_lo", ">=", 0.9).describe() == "the 95% CI lower bound >= 0.9"


def test_rule_rejects_unknown_bound():
    with pytest.raises(ValueError, match="bound"):
        Rule("median", ">=", 0.5)


def _check(value, lo, threshold=0.9):
    return Check("s", value, (lo, 1.0), Rule("ci_lo", ">=", threshold))


MET = Hypothesis("premise", (Condition("x", 1.0, Rule("value", ">=", 0.5)),))
NOT_MET = Hypothesis("premise", (Condition("x", 0.1, Rule("value", ">=", 0.5)),))


@pytest.mark.parametrize("hypothesis, checks, verdict", [
    (MET, (_check(1.0, 0.95),), Verdict.HOLDS),
    (MET, (_check(1.0, 0.95), _check(0.5, 0.4)), Verdict.FAILS),
    (MET, (_check(0.8, 0.7),), Verdict.FAILS),
    (NOT_MET, (_check(1.0, 0.95),), Verdict.NOT_APPLICABLE),
    (Hypothesis("by construction"), (_check(1.0, 0.95),), Verdict.HOLDS),
])
def test_verdict(hypothesis, checks, verdict):
    assert Evaluation(hypothesis, checks, 10).verdict is verdict


def test_control_is_reported_but_does_not_change_the_verdict():
    passing_control = _check(1.0, 0.95)
    ev = Evaluation(MET, (_check(1.0, 0.95),), 10, passing_control, "setting")
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is False
    row = ev.to_row("regime", [0, 1])
    assert row["control"]["as_expected"] is False and row["control"]["setting"] == "setting"


def test_row_contract_and_nan_as_null():
    ev = Evaluation(MET, (Check("s", math.nan, (math.nan, 0.5), Rule("value", ">=", 0.1)),), 7,
                    details={"x": math.inf, "y": [1.0, math.nan]})
    row = ev.to_row("r", [0])
    assert {"regime", "verdict", "statistic", "value", "ci", "rule", "seeds", "n_pairs"} <= set(row)
    assert row["value"] is None and row["ci"] == [None, 0.5] and row["verdict"] == "FAILS"
    assert row["details"] == {"x": None, "y": [1.0, None]}


@pytest.mark.parametrize("field, value", [("seeds", ()), ("seeds", (0, 0)), ("n_pairs", 1),
                                          ("precision", "float16"), ("long_suffix", 13), ("long_suffix", 1),
                                          ("ntk_pairs", 100), ("n_boot", 10)])
def test_settings_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        VerifySettings(**{field: value})
