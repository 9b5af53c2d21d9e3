"""Effective tokens against oracle curves whose inverse is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synpro.effective import (ACCURACY, LOSS, Curve, EffectivePoint, Metric, OracleInverse, TailDEff, effective_curve,
                              effective_tokens, first_pass_calibration, fit_tail, multiplier, seed_multiplier,
                              tail_d_eff, tail_multiplier)
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


# ---- the oracle's tail past warmup -------------------------------------------------------------

WARMUP = 1e8


def _oracle_with_warmup() -> Curve:
    """A power law past WARMUP; before it, losses far above the law (the LR is still rising)."""
    warm = np.logspace(6.5, 8, 6)
    later = np.logspace(np.log10(WARMUP) + 0.1, 10, 10)
    tokens = np.concatenate([warm, later])
    losses = ORACLE.predict(tokens) + np.where(tokens <= WARMUP, 3.0 * (1 - np.log(tokens) / np.log(WARMUP * 3)), 0)
    return Curve(tokens, losses)


def test_tail_fitted_past_warmup_recovers_the_law_and_reports_its_fit():
    oracle = _oracle_with_warmup()
    tail = fit_tail(oracle, from_tokens=WARMUP)
    assert tail.n_points == 10 and tail.from_tokens == WARMUP
    assert tail.law.E == pytest.approx(ORACLE.E, rel=0.02) and tail.law.beta == pytest.approx(ORACLE.beta, rel=0.05)
    assert tail.r2 > 0.9999 and tail.rmse_log_loss < 1e-3
    whole = fit_tail(oracle)
    assert whole.n_points == 16 and whole.rmse_log_loss > 10 * tail.rmse_log_loss
    assert abs(whole.law.E - ORACLE.E) > 10 * abs(tail.law.E - ORACLE.E)
    # The inverse extrapolates with the tail fitted past warmup.
    inverse = OracleInverse(oracle, tail_from_tokens=WARMUP)
    assert inverse.tail_fit == tail and inverse.tail == tail.law
    d_eff, extrapolated = inverse(ORACLE.predict(np.array([1e11])))
    assert extrapolated[0] and d_eff[0] == pytest.approx(1e11, rel=0.05)
    assert effective_curve(zip(oracle.tokens, oracle.values), [(1e11, ORACLE.predict(1e11))],
                           tail_from_tokens=WARMUP)[0].d_eff == pytest.approx(d_eff[0])


def test_too_few_points_past_warmup_give_no_tail_and_no_fit_quality():
    tail = fit_tail(Curve(TOKENS, ORACLE.predict(TOKENS)), from_tokens=TOKENS[-4])
    assert tail.law is None and tail.n_points == 3 and math.isnan(tail.r2) and math.isnan(tail.rmse_log_loss)
    assert tail.to_dict()["E"] is None


# ---- tail multiplier -----------------------------------------------------------------------------

def _points(d_effs, extrapolated=None, start=1e5):
    flags = extrapolated or [False] * len(d_effs)
    return [EffectivePoint(start * (i + 1), d, x) for i, (d, x) in enumerate(zip(d_effs, flags))]


def test_tail_multiplier_averages_the_last_k_checkpoints_and_names_the_method():
    # Repetition's last three D_eff from the quickstart: the final point alone jitters by 4%.
    repetition = _points([50e3, 136.9e3, 136.9e3, 142.6e3])
    method = _points([90e3, 500e3, 560e3, 520e3])
    result = tail_multiplier(method, repetition)
    assert result.method == "tail-mean-k3" and not result.extrapolated
    assert result.d_eff == pytest.approx(1580e3 / 3) and result.d_eff_repetition == pytest.approx(416.4e3 / 3)
    assert result.multiplier == pytest.approx(1580 / 416.4)
    assert result.to_dict()["method"] == "tail-mean-k3"
    assert tail_multiplier(method, repetition, k=1).multiplier == pytest.approx(520 / 142.6)
    assert tail_multiplier(method[:2], repetition, k=5).method == "tail-mean-k2"  # a short curve says so


def test_tail_multiplier_carries_extrapolation_flags_of_the_tail_only():
    repetition = _points([1e5, 2e5, 3e5, 4e5], extrapolated=[True, False, False, False])
    method = _points([1e5, 2e5, 3e5, 4e5])
    assert not tail_multiplier(method, repetition).extrapolated  # the flagged point is outside the tail
    method = _points([1e5, 2e5, 3e5, 4e5], extrapolated=[False, True, False, False])
    assert tail_multiplier(method, repetition).extrapolated
    assert tail_d_eff(method, k=2) == TailDEff(3.5e5, False, 2)
    assert math.isnan(tail_multiplier(_points([1e5, math.nan]), repetition).multiplier)
    assert tail_multiplier(_points([1e5, math.inf]), repetition).multiplier == math.inf
    with pytest.raises(ValueError):
        tail_d_eff(method, k=0)


# ---- seeds -----------------------------------------------------------------------------------------

def _tails(values, extrapolated=False):
    return {seed: TailDEff(v, extrapolated, 3) for seed, v in enumerate(values)}


def test_seed_multiplier_is_a_paired_t_interval_on_log_ratios():
    repetition = _tails([1e5, 2e5, 4e5])  # seeds differ a lot; the ratios 3, 4, 5 much less
    result = seed_multiplier(_tails([3e5, 8e5, 20e5]), repetition)
    logs = np.log([3.0, 4.0, 5.0])
    half = 4.302652729911275 * logs.std(ddof=1) / math.sqrt(3)  # t(0.975, df=2) from tables
    assert result.multiplier == pytest.approx(60 ** (1 / 3))
    assert result.ci == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert result.n_seeds == 3 and result.method == "paired-t-log-ratio-95"
    assert result.per_seed == pytest.approx({0: 3.0, 1: 4.0, 2: 5.0}) and not result.extrapolated
    shown = result.to_dict()
    assert shown["multiplier_ci"] == pytest.approx(list(result.ci)) and shown["n_seeds"] == 3


def test_seed_interval_covers_the_true_multiplier_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        base = np.exp(rng.normal(12, 0.5, 3))  # shared seed effect on both arms
        ratio = np.exp(np.log(4.0) + rng.normal(0, 0.1, 3))
        ci = seed_multiplier(_tails(base * ratio), _tails(base)).ci
        covered += ci[0] <= 4.0 <= ci[1]
    assert 0.935 <= covered / 2000 <= 0.965


def test_one_seed_has_no_interval_and_unpaired_or_broken_seeds_are_visible():
    one = seed_multiplier({7: TailDEff(4e5, True, 3)}, {7: TailDEff(1e5, False, 3), 8: TailDEff(1e5, False, 3)})
    assert one.multiplier == pytest.approx(4.0) and one.ci is None and one.n_seeds == 1
    assert one.extrapolated and one.unpaired_seeds == (8,) and one.to_dict()["multiplier_ci"] is None
    broken = seed_multiplier(_tails([4e5, math.nan]), _tails([1e5, 1e5]))
    assert math.isnan(broken.multiplier) and broken.ci is None and broken.n_seeds == 2
    beyond = seed_multiplier(_tails([4e5, math.inf]), _tails([1e5, 1e5]))
    assert beyond.multiplier == math.inf and beyond.ci is None
    with pytest.raises(ValueError):
        seed_multiplier(_tails([1.0]), _tails([1.0]), confidence=1.0)


# ---- first-pass calibration --------------------------------------------------------------------

def test_first_pass_calibration_reads_repetition_within_its_first_epoch():
    unique = 40_000
    curve = [EffectivePoint(t, 0.77 * t, False) for t in (10_000, 20_000, 40_000)]
    curve += [EffectivePoint(60_000, 1e3, True), EffectivePoint(80_000, 2e3, False)]  # repeated data: left out
    calibration = first_pass_calibration(curve, unique)
    assert calibration.ratio == pytest.approx(0.77) and len(calibration.points) == 3
    assert not calibration.extrapolated and calibration.first_pass_tokens == unique
    uneven = first_pass_calibration([(1e4, 2e4, True), (2e4, 1e4, False)], 20_000)
    assert uneven.ratio == pytest.approx(1.0) and uneven.extrapolated  # geometric mean of 2 and 0.5
    assert math.isnan(first_pass_calibration(curve, 5_000).ratio)
