"""Each claim's pass rule on synthetic measurements whose answer is known: one that must hold, one
that must fail, and where the claim has a premise, one where it is not met."""

import numpy as np
import pytest

from entangle_jax.verify import Verdict, VerifySettings
from entangle_jax.verify.claims import (batched_dynamics, gradient_condition, mitigation,
                                        output_layer, theorem1, theorem3, tokenwise)

SETTINGS = VerifySettings(n_boot=200)
N, SEEDS = 64, 3
RNG = np.random.default_rng(0)
L = SETTINGS.max_suffix + 1


def _seeds(make):
    return [make(RNG) for _ in range(SEEDS)]


def _theorem1(sign=-1.0, p_w=0.6, p_l=0.39, control_sign=1.0):
    def make(rng):
        return {"inner": sign * rng.uniform(1, 2, N), "scale": np.full(N, 10.0),
                "inner_control": control_sign * rng.uniform(1, 2, N),
                "scale_control": np.full(N, 10.0), "p_w": np.full(N, p_w),
                "p_l": np.full(N, p_l), "dpo_case": np.ones(N, int)}
    return _seeds(make)


def test_theorem1_holds_when_every_pair_is_negative():
    ev = theorem1.evaluate(_theorem1(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.checks[0].value == 1.0
    assert ev.control_ok is True


def test_theorem1_fails_when_signs_are_mixed():
    per_seed = _theorem1()
    for m in per_seed:
        m["inner"][::3] *= -1  # a third of the pairs positive
    ev = theorem1.evaluate(per_seed, SETTINGS)
    assert ev.verdict is Verdict.FAILS
    assert ev.checks[0].value == pytest.approx(np.mean(np.arange(N) % 3 != 0))


def test_theorem1_unresolved_magnitudes_do_not_count_as_negative():
    per_seed = _theorem1()
    for m in per_seed:
        m["inner"] = np.full(N, -1e-13)  # below 1e-10 of the scale 10
    ev = theorem1.evaluate(per_seed, SETTINGS)
    assert ev.verdict is Verdict.FAILS and ev.details["fraction_unresolved"] == 1.0


@pytest.mark.parametrize("p_w, p_l", [(0.999, 0.0005), (0.004, 0.004)])
def test_theorem1_not_applicable_without_uncertainty(p_w, p_l):
    ev = theorem1.evaluate(_theorem1(p_w=p_w, p_l=p_l), SETTINGS)
    assert ev.verdict is Verdict.NOT_APPLICABLE
    assert ev.checks[0].value == 1.0  # the numbers are still reported


def test_theorem1_control_that_passes_is_flagged():
    ev = theorem1.evaluate(_theorem1(control_sign=-1.0), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is False


def _identity(error=1e-15, bad_pairs=0):
    def make(rng):
        layer = np.full(N, error)
        layer[:bad_pairs] = 1e-3
        ntk = np.full(N, np.nan)
        ntk[:SETTINGS.ntk_pairs] = error
        return {"layer_error": layer, "layer_error_control": np.full(N, 0.5),
                "p_w": np.full(N, 0.7), "p_l": np.full(N, 0.295), "inner": -np.ones(N),
                "ntk_error": ntk, "two_token_gap": ntk.copy()}
    return _seeds(make)


def test_output_layer_identity_holds_to_rounding():
    ev = output_layer.evaluate(_identity(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True
    assert ev.details["ntk_pairs"] == SEEDS * SETTINGS.ntk_pairs


def test_output_layer_identity_fails_on_one_bad_pair():
    ev = output_layer.evaluate(_identity(bad_pairs=1), SETTINGS)
    assert ev.verdict is Verdict.FAILS and ev.checks[0].value == pytest.approx(1 - 1 / N)


def _suffix(fn):
    def make(rng):
        inner = fn(rng)
        return {"inner": inner, "scale": np.full_like(inner, 1e3),
                "dpo_case": np.ones(inner.shape, int)}
    return _seeds(make)


def _growing(rng):
    return np.arange(L) * 10.0 - 5.0 + rng.normal(0, 1, (N, L))


def test_suffix_positive_holds_and_control_at_zero_does_not():
    ev = theorem3.evaluate_positive(_suffix(_growing), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True


def test_suffix_positive_fails_at_its_worst_length():
    def dip(rng):
        x = _growing(rng)
        x[::2, 7] = -1.0  # half the pairs negative at L = 7
        return x
    ev = theorem3.evaluate_positive(_suffix(dip), SETTINGS)
    assert ev.verdict is Verdict.FAILS
    assert ev.details["worst_L"] == 7 and ev.checks[0].value == pytest.approx(0.5)


def test_suffix_growth_holds_for_a_monotone_trend():
    ev = theorem3.evaluate_growth(_suffix(_growing), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.checks[0].value > 0.9
    assert ev.control_ok is True  # shuffled lengths carry no trend


def test_suffix_growth_fails_for_a_flat_positive_plateau():
    # positive at every L >= 1 but no trend beyond the first step: the case of a trained model
    ev = theorem3.evaluate_growth(_suffix(lambda rng: np.where(
        np.arange(L) == 0, -5.0, 100.0) + rng.normal(0, 10, (N, L))), SETTINGS)
    assert ev.verdict is Verdict.FAILS and ev.checks[0].value < 0.5


def test_gram_blocks_match_loops():
    cross = RNG.normal(size=(3, 5, 5))
    blocks = tokenwise.gram_blocks(cross)
    for b in range(3):
        m = cross[b]
        assert blocks["sentiment_x_sentiment"][b] == m[0, 0]
        assert blocks["suffix_diagonal"][b] == pytest.approx(sum(m[i, i] for i in range(1, 5)))
        assert blocks["suffix_off_diagonal"][b] == pytest.approx(
            sum(m[i, j] for i in range(1, 5) for j in range(1, 5) if i != j))
        assert blocks["sentiment_x_suffix"][b] == pytest.approx(
            sum(m[0, j] + m[j, 0] for j in range(1, 5)))
        assert sum(v[b] for v in blocks.values()) == pytest.approx(m.sum())


def _tokenwise(m00_sign=-1.0, inner_sign=1.0, p_w=0.6, p_l=0.39):
    def make(rng):
        out = {"m00": m00_sign * rng.uniform(1, 2, N), "m11": rng.uniform(1, 2, N),
               "scale_00": np.full(N, 5.0), "scale_11": np.full(N, 5.0),
               "inner": inner_sign * rng.uniform(10, 20, N), "scale": np.full(N, 50.0),
               "sum_error": np.zeros(N), "p_w": np.full(N, p_w), "p_l": np.full(N, p_l)}
        for k in tokenwise.BLOCKS:
            out[f"block_{k}"] = rng.normal(size=N)
        return out
    return _seeds(make)


def test_tokenwise_holds_when_the_sentiment_entry_is_negative():
    ev = tokenwise.evaluate(_tokenwise(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True


def test_tokenwise_fails_when_the_sentiment_entry_is_positive():
    assert tokenwise.evaluate(_tokenwise(m00_sign=1.0), SETTINGS).verdict is Verdict.FAILS


def test_tokenwise_not_applicable_without_positive_pairs_or_uncertainty():
    assert tokenwise.evaluate(_tokenwise(inner_sign=-1.0), SETTINGS).verdict \
        is Verdict.NOT_APPLICABLE
    assert tokenwise.evaluate(_tokenwise(p_w=0.9995, p_l=0.0004), SETTINGS).verdict \
        is Verdict.NOT_APPLICABLE


def _condition(agree=True, order=2.0, case4=False, margin_falls=False):
    def make(rng):
        rows = 3 * N  # the pairs of the three shapes
        return {"agree": np.full(rows, agree), "relative_error": rng.uniform(0.01, 0.03, rows),
                "order": order + rng.normal(0, 0.01, rows), "case4": np.full(rows, case4),
                "margin_falls": np.full(rows, margin_falls), "control_case4": np.ones(rows, bool),
                "pooled_order": np.full(rows, order)}
    return _seeds(make)


def test_gradient_condition_holds_when_every_check_passes():
    ev = gradient_condition.evaluate(_condition(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True


@pytest.mark.parametrize("kwargs", [{"agree": False}, {"order": 1.0}, {"order": 3.0},
                                    {"case4": True}, {"margin_falls": True}])
def test_gradient_condition_fails_when_one_check_fails(kwargs):
    ev = gradient_condition.evaluate(_condition(**kwargs), SETTINGS)
    assert ev.verdict is Verdict.FAILS
    assert sum(not c.passed for c in ev.checks) >= 1


class _Steps:
    """A stand-in for dynamics.OneStepCheck whose errors scale as c·η^order."""

    def __init__(self, order, scale):
        self.lrs = 0.1 * 2.0 ** -np.arange(4)
        self.order, self.scale = order, np.asarray(scale)

    def errors(self, k):
        e = self.scale * self.lrs[k] ** self.order
        return e / 2, e / 2


def test_error_orders_recovers_the_power_of_eta():
    np.testing.assert_allclose(gradient_condition.error_orders(_Steps(2.0, [1.0, 5.0, 0.3])), 2.0)
    np.testing.assert_allclose(gradient_condition.error_orders(_Steps(1.0, [2.0])), 1.0)


def _mitigation(real=True, dpo=False):
    def make(rng):
        rows = 3 * N
        return {"real_case1": np.full(rows, real), "first_order_case1": np.ones(rows, bool),
                "dpo_real_case1": np.full(rows, dpo)}
    return _seeds(make)


def test_mitigation_holds_with_case1_everywhere_and_reports_a_passing_control():
    ev = mitigation.evaluate(_mitigation(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True
    ev = mitigation.evaluate(_mitigation(dpo=True), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is False  # nothing to mitigate


def test_mitigation_fails_when_real_steps_leave_case1():
    per_seed = _mitigation()
    for m in per_seed:
        m["real_case1"][: N // 2] = False
    assert mitigation.evaluate(per_seed, SETTINGS).verdict is Verdict.FAILS


def _batched(agree=True, error=0.03, own_agree=0.5):
    def make(rng):
        out = {}
        for optimizer in batched_dynamics.SETTINGS:
            for name in batched_dynamics.SETS:
                out[f"{optimizer}_{name}_agree"] = np.full((N, 2), agree)
                out[f"{optimizer}_{name}_error"] = rng.uniform(0.5, 1.5, (N, 2)) * error
        out["own_term_agree"] = rng.random((N, 2)) < own_agree
        positive = np.arange(N) % 3 == 0
        out.update(imbalance=np.full(N, 0.02), falls_w=positive, positive=positive,
                   stratified_falls_w=np.zeros(N, bool))
        return out
    return _seeds(make)


def test_batched_dynamics_holds_and_its_control_fails():
    ev = batched_dynamics.evaluate(_batched(), SETTINGS)
    assert ev.verdict is Verdict.HOLDS and ev.control_ok is True  # the own term fails, as it should
    assert len(ev.checks) == 2 * len(batched_dynamics.SETTINGS) * len(batched_dynamics.SETS)
    seed = ev.details["seeds"][0]
    assert seed["batch_imbalance_positive_minus_half"] == pytest.approx(0.02)
    assert seed["held_out_log_pi_w_falls_by_class"] == {"positive": 1.0, "negative": 0.0}


@pytest.mark.parametrize("kwargs", [{"agree": False}, {"error": 0.3}])
def test_batched_dynamics_fails_with_wrong_signs_or_large_errors(kwargs):
    assert batched_dynamics.evaluate(_batched(**kwargs), SETTINGS).verdict is Verdict.FAILS


def test_batched_dynamics_flags_an_own_term_control_that_passes():
    assert batched_dynamics.evaluate(_batched(own_agree=1.0), SETTINGS).control_ok is False
