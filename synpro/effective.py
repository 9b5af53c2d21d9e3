"""Effective tokens: how many unique (oracle) tokens a run's loss, or accuracy, is worth.

D_eff(m) inverts the oracle's learning curve M_oracle(D) at the run's metric value m (method.md §3).
One inversion serves every metric: it works on the metric's gap to its best value (`Metric.gap`:
the loss itself; 1 - accuracy), which falls as tokens grow and is positive, so the same
interpolation and the same power-law tail apply whether the metric falls (loss) or rises
(accuracy). Conventions a researcher reads off the outputs, stated for the gap:

- inside the oracle's range: monotone (PCHIP) interpolation of log D against the gap,
  `extrapolated=False`;
- outside it, on either side: a power law gap(D) = E + B/D^beta fitted to the oracle points,
  anchored at the nearest end of the curve so D_eff has no jump there, `extrapolated=True`;
- `inf`: the gap is at or below the power law's irreducible E, so no finite amount of oracle
  data reaches it (the run beats the oracle's asymptote);
- `nan`: cannot be told from this oracle (a NaN value, fewer than 4 usable oracle points for the
  power law, a flat curve, or a power law that contradicts the end of the curve it extends).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import PchipInterpolator

from synpro.errors import InputError
from synpro.scaling.fit import DEFAULT_DELTA, fit_law
from synpro.scaling.laws import PowerLaw


class Metric(NamedTuple):
    """What D_eff inverts: a metric's name, which way it improves, and its best attainable value."""

    name: str
    higher_is_better: bool = False
    best: float = 0.0

    def gap(self, values: ArrayLike) -> np.ndarray:
        """Distance to the best value: positive, and falling as the model improves."""
        values = np.asarray(values, dtype=float)
        return self.best - values if self.higher_is_better else values - self.best


LOSS = Metric("loss")
ACCURACY = Metric("accuracy", higher_is_better=True, best=1.0)  # gap = error rate


@dataclass(frozen=True)
class Curve:
    """A learning curve sorted by tokens seen; NaN values (diverged checkpoints) are allowed."""

    tokens: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens, dtype=float)
        values = np.asarray(self.values, dtype=float)
        if tokens.ndim != 1 or tokens.shape != values.shape:
            raise InputError.one(f"a curve needs as many metric values as token counts "
                                 f"(got shapes {tokens.shape} and {values.shape})", key="tokens")
        if not np.all(np.isfinite(tokens) & (tokens > 0)):
            raise InputError.one("token counts must be finite and positive", key="tokens")
        if np.any(np.isinf(values)):
            raise InputError.one("metric values must be finite (or NaN for a diverged checkpoint)", key="values")
        order = np.argsort(tokens, kind="stable")
        object.__setattr__(self, "tokens", tokens[order])
        object.__setattr__(self, "values", values[order])

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> "Curve":
        """From (tokens_seen, value) pairs, as the pipeline logs them."""
        pairs = np.asarray(list(points), dtype=float)
        if pairs.size == 0:
            pairs = pairs.reshape(0, 2)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise InputError.one(f"curve points must be (tokens, value) pairs, got shape {pairs.shape}",
                                 key="points")
        return cls(pairs[:, 0], pairs[:, 1])


class EffectivePoint(NamedTuple):
    tokens: float
    d_eff: float
    extrapolated: bool


def _decreasing_levels(log_tokens: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-increasing fit of the gap against tokens (pool adjacent violators).

    Isotonic regression rather than a running minimum: a running minimum locks onto the luckiest
    noisy dip and holds it, which makes the oracle look better early than it is; pooling averages
    the noise out. Returns one (mean log tokens, level) per pooled block, levels strictly falling.
    """
    blocks: list[list[float]] = []  # [sum of log tokens, sum of gaps, count]
    for x, y in zip(log_tokens, gap):
        blocks.append([x, y, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] <= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    sums = np.array(blocks)
    return sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]


class OracleInverse:
    """D_eff as a function of a metric for one oracle curve; build once, query for every arm.

    `levels` are the pooled oracle curve in gap units (for LOSS, the losses themselves).
    """

    MIN_TAIL_POINTS = 4  # the power law has 3 free constants; fit_law needs one point more

    def __init__(self, oracle: Curve, *, metric: Metric = LOSS, delta: float = DEFAULT_DELTA):
        self.metric = metric
        gap = metric.gap(oracle.values)
        usable = ~np.isnan(gap)
        tokens, gap = oracle.tokens[usable], gap[usable]
        if tokens.size == 0:
            raise InputError.one(f"the oracle curve has no finite {metric.name}", key="oracle")
        self.log_tokens, self.levels = _decreasing_levels(np.log(tokens), gap)
        self.tail: PowerLaw | None = None
        # A curve that never falls (one pooled level) says nothing about how the gap scales with D.
        if tokens.size >= self.MIN_TAIL_POINTS and self.levels.size > 1:
            try:
                fitted = fit_law("power", gap, D=tokens, delta=delta).build()
            except InputError:  # constants the points leave undetermined: no tail, NaN outside
                fitted = None
            self.tail = fitted if isinstance(fitted, PowerLaw) else None

    def _extrapolate(self, gap: np.ndarray, anchor: int) -> np.ndarray:
        """Power-law D_eff anchored at block `anchor`: D_anchor * D_pl(gap) / D_pl(level)."""
        level = self.levels[anchor]
        if self.tail is None or not level > self.tail.E:
            # No tail, or one whose asymptote lies above the curve end it should extend.
            return np.full(gap.shape, np.nan)
        E, beta = self.tail.E, self.tail.beta
        with np.errstate(divide="ignore", invalid="ignore"):
            anchored = np.exp(self.log_tokens[anchor]) * ((level - E) / (gap - E)) ** (1.0 / beta)
        return np.where(gap <= E, np.inf, anchored)

    def __call__(self, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(d_eff, extrapolated) for each metric value; see the module docstring for inf and nan."""
        m = np.atleast_1d(self.metric.gap(values))
        d_eff = np.full(m.shape, np.nan)
        worst, best = self.levels[0], self.levels[-1]
        inside = (m >= best) & (m <= worst)
        if self.levels.size > 1:
            # Levels fall with tokens; PCHIP wants increasing x, so read the curve backwards.
            inverse = PchipInterpolator(self.levels[::-1], self.log_tokens[::-1])
            d_eff[inside] = np.exp(inverse(m[inside]))
        else:
            d_eff[inside] = np.exp(self.log_tokens[0])
        below, above = m < best, m > worst
        d_eff[below] = self._extrapolate(m[below], len(self.levels) - 1)
        d_eff[above] = self._extrapolate(m[above], 0)
        return d_eff, below | above


def effective_tokens(oracle_tokens: ArrayLike, oracle_values: ArrayLike, values: ArrayLike, *,
                     metric: Metric = LOSS) -> tuple[np.ndarray, np.ndarray]:
    """(d_eff, extrapolated) arrays for `values` against the oracle curve (refits the oracle's
    power-law tail on every call: keep an `OracleInverse` to query one oracle many times)."""
    return OracleInverse(Curve(np.asarray(oracle_tokens), np.asarray(oracle_values)), metric=metric)(values)


def effective_curve(oracle_points: Iterable[tuple[float, float]], arm_points: Iterable[tuple[float, float]],
                    *, metric: Metric = LOSS) -> list[EffectivePoint]:
    """D_eff at every checkpoint of an arm; points are (tokens_seen, value), e.g. val_loss or acc/avg."""
    arm = Curve.from_points(arm_points)
    d_eff, extrapolated = OracleInverse(Curve.from_points(oracle_points), metric=metric)(arm.values)
    return [EffectivePoint(float(t), float(d), bool(x)) for t, d, x in zip(arm.tokens, d_eff, extrapolated)]


def multiplier(d_eff_method: float, d_eff_repetition: float) -> float:
    """D_eff(method) / D_eff(repetition); NaN when either is NaN, the denominator is not
    positive, or both are infinite (nothing can be said), inf when only the method is."""
    method, repetition = float(d_eff_method), float(d_eff_repetition)
    if not repetition > 0 or np.isnan(method) or (np.isinf(method) and np.isinf(repetition)):
        return float("nan")
    return method / repetition
