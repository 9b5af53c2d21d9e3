"""Effective tokens against oracle curves whose inverse is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synpro.effective import (ACCURACY, LOSS, Curve, Metric, OracleInverse, effective_curve, effective_tokens,
                              multiplier)
from synpro.errors import InputError
from synpro.scaling import PowerLaw

ORACLE = PowerLaw(B=400.0, E=1.8, beta=0.3)
TOKENS = np.logspace(8, 10, 12)


def test_exact_power_law_oracle_inverts_to_its_tokens():
    d_eff, extrapolated = effective_tokens(TOKENS, ORACLE.predict(TOKENS), ORACLE.predict(TOKENS))
    assert d_eff == pytest.approx(TOKENS, rel=1e-9)
    assert not extrapolated.any()
    between = np.sqrt(TOKENS[1:] * TOKENS[:-1])
    d_eff, extrapolated = effective_tokens(TOKENS, ORACLE.predict(TOKENS), ORACLE.predict(between))
    assert d_eff == pytest.approx(between, rel=1e-3)
    assert not extrapolated.any()


def test_a_run_matching_the_oracle_at_other_token_counts_gets_those_counts():
    oracle = list(zip(TOKENS, ORACLE.predict(TOKENS)))
    seen = TOKENS[3:9] * 2.5
    run = list(zip(seen, ORACLE.predict(TOKENS[:6])))
    curve = effective_curve(oracle, run)
    assert [p.tokens for p in curve] == pytest.approx(seen)
    assert [p.d_eff for p in curve] == pytest.approx(TOKENS[:6], rel=1e-9)
    assert not any(p.extrapolated for p in curve)


def test_losses_beyond_either_end_are_extrapolated_along_the_power_law_and_flagged():
    inverse = OracleInverse(Curve(TOKENS, ORACLE.predict(TOKENS)))
    outside = np.array([1e7, 3e7, 1e11, 1e12])
    d_eff, extrapolated = inverse(ORACLE.predict(outside))
    assert extrapolated.all()
    assert d_eff == pytest.approx(outside, rel=0.01)


def test_a_loss_below_the_fitted_asymptote_is_infinite():
    d_eff, extrapolated = effective_tokens(TOKENS, ORACLE.predict(TOKENS), [ORACLE.E - 0.01])
    assert d_eff[0] == math.inf and extrapolated[0]


def test_noisy_non_monotone_oracle_is_pooled_into_a_falling_curve():
    losses = ORACLE.predict(TOKENS)
    losses[4] = losses[2]  # a bump: later checkpoint as bad as an earlier one
    losses[9] = losses[10] - 0.01  # a lucky dip below its successor
    inverse = OracleInverse(Curve(TOKENS, losses))
    assert np.all(np.diff(inverse.levels) < 0)
    # The dip is pooled with its successor (their mean), not kept as a running minimum would.
    assert inverse.levels[-2] == pytest.approx((losses[9] + losses[10]) / 2)
    queries = np.linspace(losses.max(), losses.min(), 50)
    d_eff, extrapolated = inverse(queries)
    assert not extrapolated.any() and np.all(np.diff(d_eff) > 0)
    untouched = [0, 1, 2, 5, 6, 7, 8, 11]  # checkpoints that were not pooled keep their tokens
    assert inverse(losses[untouched])[0] == pytest.approx(TOKENS[untouched], rel=1e-9)


def test_randomly_noisy_oracle_stays_close_to_the_truth():
    rng = np.random.default_rng(0)
    dense = np.logspace(8, 10, 40)
    losses = ORACLE.predict(dense) * np.exp(rng.normal(0, 0.005, dense.size))
    queries = ORACLE.predict(np.array([2e8, 1e9, 5e9]))
    d_eff, _ = effective_tokens(dense, losses, queries)
    assert d_eff == pytest.approx([2e8, 1e9, 5e9], rel=0.25)


def test_degenerate_oracles_return_nan_instead_of_crashing():
    d_eff, extrapolated = effective_tokens([1e9], [3.0], [3.0, 2.5])
    assert d_eff[0] == pytest.approx(1e9) and not extrapolated[0]
    assert math.isnan(d_eff[1]) and extrapolated[1]
    flat = OracleInverse(Curve(TOKENS, np.full(TOKENS.size, 3.0)))
    assert flat.tail is None
    d_eff, extrapolated = flat([2.9, 3.1])
    assert np.isnan(d_eff).all() and extrapolated.all()


def test_nan_losses_give_nan_and_nan_oracle_points_are_ignored():
    losses = ORACLE.predict(TOKENS)
    broken = losses.copy()
    broken[5] = np.nan
    d_eff, extrapolated = effective_tokens(TOKENS, broken, [np.nan, losses[3]])
    assert math.isnan(d_eff[0]) and not extrapolated[0]
    assert d_eff[1] == pytest.approx(TOKENS[3])


def test_bad_oracle_input_raises_input_error():
    with pytest.raises(InputError):
        effective_tokens([0.0, 1e9], [3.0, 2.9], [3.0])
    with pytest.raises(InputError):
        effective_tokens([1e8, 1e9], [3.0], [3.0])
    with pytest.raises(InputError):
        effective_tokens([1e8, 1e9], [np.nan, np.nan], [3.0])


# An accuracy oracle whose error rate 1 - acc follows the power law: acc(D) = 1 - ORACLE(D).
ERROR = PowerLaw(B=30.0, E=0.35, beta=0.25)


def test_accuracy_oracle_inverts_to_its_tokens_in_the_rising_direction():
    accuracy = 1 - ERROR.predict(TOKENS)
    assert np.all(np.diff(accuracy) > 0)
    between = np.sqrt(TOKENS[1:] * TOKENS[:-1])
    d_eff, extrapolated = effective_tokens(TOKENS, accuracy, 1 - ERROR.predict(between), metric=ACCURACY)
    assert d_eff == pytest.approx(between, rel=1e-3)
    assert not extrapolated.any()
    # Higher accuracy is worth more tokens; the loss reading of the same numbers would say the opposite.
    assert np.all(np.diff(d_eff) > 0)
    as_loss, _ = effective_tokens(TOKENS, accuracy, 1 - ERROR.predict(between))
    assert not np.allclose(as_loss, between, rtol=0.1)


def test_accuracy_beyond_the_oracle_extrapolates_along_the_error_power_law():
    inverse = OracleInverse(Curve(TOKENS, 1 - ERROR.predict(TOKENS)), metric=ACCURACY)
    outside = np.array([3e7, 1e11])
    d_eff, extrapolated = inverse(1 - ERROR.predict(outside))
    assert extrapolated.all()
    assert d_eff == pytest.approx(outside, rel=0.02)
    d_eff, extrapolated = inverse([1 - ERROR.E + 0.01])  # above the oracle's asymptotic accuracy
    assert d_eff[0] == math.inf and extrapolated[0]


def test_noisy_accuracy_curve_is_pooled_into_a_rising_one_and_arms_are_read_off_it():
    rng = np.random.default_rng(1)
    accuracy = 1 - ERROR.predict(TOKENS) + rng.normal(0, 0.004, TOKENS.size)
    oracle = list(zip(TOKENS, accuracy))
    arm = [(t, a) for t, a in zip(TOKENS[::3], 1 - ERROR.predict(TOKENS[1::3]))]
    curve = effective_curve(oracle, arm, metric=ACCURACY)
    assert [p.d_eff for p in curve] == pytest.approx(TOKENS[1::3], rel=0.2)
    assert np.all(np.diff([p.d_eff for p in curve]) > 0)


def test_loss_is_the_default_metric_and_a_metric_measures_its_gap_to_the_best_value():
    assert OracleInverse(Curve(TOKENS, ORACLE.predict(TOKENS))).metric == LOSS
    assert ACCURACY.gap([0.25, 0.75]) == pytest.approx([0.75, 0.25])
    assert LOSS.gap([3.0]) == pytest.approx([3.0])
    assert Metric("bits", best=1.0).gap([3.0]) == pytest.approx([2.0])


@pytest.mark.parametrize("method, repetition, expected", [
    (4e9, 1e9, 4.0), (math.inf, 1e9, math.inf), (1e9, math.inf, 0.0),
    (math.inf, math.inf, math.nan), (1e9, 0.0, math.nan), (math.nan, 1e9, math.nan), (1e9, math.nan, math.nan),
])
def test_multiplier(method, repetition, expected):
    result = multiplier(method, repetition)
    assert (math.isnan(result) and math.isnan(expected)) or result == expected
