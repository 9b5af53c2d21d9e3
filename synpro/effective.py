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

The power-law tail is fitted only on the oracle points past `tail_from_tokens` (the warmup): the
steep start of a curve is not a power law in D, and fitting it leaves the floor E unidentified.

Summaries a researcher reports (one implementation each, used by every consumer):

- `tail_multiplier`: D_eff(method) / D_eff(repetition) from the mean D_eff over the last k
  checkpoints of each curve (under a constant LR single checkpoints jitter), extrapolated if any
  point behind it is;
- `seed_multiplier`: the mean multiplier over seeds with a 95% interval (paired t on log ratios);
- `first_pass_calibration`: repetition's D_eff / tokens seen within its first epoch, when its data
  is as unique as the oracle's: the noise floor of the method, ideally 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
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


@dataclass(frozen=True)
class TailFit:
    """The oracle's power-law tail, the points it was fitted on, and how well it fits them."""

    law: PowerLaw | None  # None: too few points past `from_tokens`, a flat curve, or no fit
    from_tokens: float  # only points with more tokens than this were fitted
    n_points: int
    r2: float  # of the loss on the fitted points; NaN without a law
    rmse_log_loss: float  # root mean square of log(fitted) - log(observed); NaN without a law

    def to_dict(self) -> dict[str, Any]:
        constants = self.law.constants() if self.law is not None else {"B": None, "E": None, "beta": None}
        return {**constants, "from_tokens": self.from_tokens, "n_points": self.n_points,
                "r2": self.r2, "rmse_log_loss": self.rmse_log_loss}


MIN_TAIL_POINTS = 4  # the power law has 3 free constants; fit_law needs one point more


def fit_tail(oracle: Curve, *, from_tokens: float = 0.0, delta: float = DEFAULT_DELTA) -> TailFit:
    """L(D) = E + B/D^beta fitted to the finite oracle points with tokens > from_tokens (pass the
    warmup tokens: the warmup part of a curve is not a power law), with its fit quality. `oracle`
    holds the metric's gap to its best value (for loss, the loss itself)."""
    keep = (oracle.tokens > from_tokens) & ~np.isnan(oracle.values)
    tokens, loss = oracle.tokens[keep], oracle.values[keep]
    law = None
    # A curve that never falls (one pooled level) says nothing about how loss scales with D.
    if tokens.size >= MIN_TAIL_POINTS and _decreasing_levels(np.log(tokens), loss)[1].size > 1:
        try:
            fitted = fit_law("power", loss, D=tokens, delta=delta).build()
        except InputError:  # constants the points leave undetermined: no tail
            fitted = None
        law = fitted if isinstance(fitted, PowerLaw) else None
    if law is None:
        return TailFit(None, float(from_tokens), int(tokens.size), math.nan, math.nan)
    predicted = np.asarray(law.predict(tokens), dtype=float)
    spread = float(np.sum((loss - loss.mean()) ** 2))
    r2 = 1.0 - float(np.sum((loss - predicted) ** 2)) / spread if spread > 0 else math.nan
    rmse = float(np.sqrt(np.mean((np.log(predicted) - np.log(loss)) ** 2)))
    return TailFit(law, float(from_tokens), int(tokens.size), r2, rmse)


class OracleInverse:
    """D_eff as a function of a metric for one oracle curve; build once, query for every arm.

    `levels` are the pooled oracle curve in gap units (for LOSS, the losses themselves).
    """

    def __init__(self, oracle: Curve, *, metric: Metric = LOSS, delta: float = DEFAULT_DELTA,
                 tail_from_tokens: float = 0.0):
        self.metric = metric
        gap = metric.gap(oracle.values)
        usable = ~np.isnan(gap)
        tokens, gap = oracle.tokens[usable], gap[usable]
        if tokens.size == 0:
            raise InputError.one(f"the oracle curve has no finite {metric.name}", key="oracle")
        self.log_tokens, self.levels = _decreasing_levels(np.log(tokens), gap)
        self.tail_fit = fit_tail(Curve(tokens, gap), from_tokens=tail_from_tokens, delta=delta)
        self.tail: PowerLaw | None = self.tail_fit.law

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
                    *, metric: Metric = LOSS, tail_from_tokens: float = 0.0) -> list[EffectivePoint]:
    """D_eff at every checkpoint of an arm; points are (tokens_seen, value), e.g. val_loss or acc/avg."""
    arm = Curve.from_points(arm_points)
    oracle = OracleInverse(Curve.from_points(oracle_points), metric=metric, tail_from_tokens=tail_from_tokens)
    d_eff, extrapolated = oracle(arm.values)
    return [EffectivePoint(float(t), float(d), bool(x)) for t, d, x in zip(arm.tokens, d_eff, extrapolated)]


def multiplier(d_eff_method: float, d_eff_repetition: float) -> float:
    """D_eff(method) / D_eff(repetition); NaN when either is NaN, the denominator is not
    positive, or both are infinite (nothing can be said), inf when only the method is."""
    method, repetition = float(d_eff_method), float(d_eff_repetition)
    if not repetition > 0 or np.isnan(method) or (np.isinf(method) and np.isinf(repetition)):
        return float("nan")
    return method / repetition


# ---- summaries -----------------------------------------------------------------------------------

DEFAULT_TAIL_CHECKPOINTS = 3
CONFIDENCE = 0.95


@dataclass(frozen=True)
class TailDEff:
    """One run's D_eff at the end of training: the mean over its last `n_points` checkpoints."""

    d_eff: float
    extrapolated: bool  # any point behind the mean was extrapolated
    n_points: int


def tail_d_eff(points: Sequence[tuple[float, float, bool]], k: int = DEFAULT_TAIL_CHECKPOINTS) -> TailDEff:
    """Mean D_eff over the last k checkpoints (fewer if the curve is shorter); NaN if any is NaN,
    inf if any is infinite. Points are (tokens, d_eff, extrapolated), e.g. `EffectivePoint`s."""
    if k < 1:
        raise ValueError(f"the tail needs at least one checkpoint, got k={k}")
    if not points:
        raise ValueError("the curve has no checkpoint")
    tail = sorted(points, key=lambda p: p[0])[-k:]
    return TailDEff(float(np.mean([p[1] for p in tail])), any(bool(p[2]) for p in tail), len(tail))


@dataclass(frozen=True)
class Multiplier:
    """D_eff(method) / D_eff(repetition) at the end of training, and how it was computed."""

    multiplier: float
    method: str  # e.g. "tail-mean-k3": ratio of the mean D_eff over the last 3 checkpoints
    extrapolated: bool
    d_eff: float  # the method's tail D_eff
    d_eff_repetition: float

    def to_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "method": self.method, "extrapolated": self.extrapolated,
                "d_eff": self.d_eff, "d_eff_repetition": self.d_eff_repetition}


def tail_multiplier(method: Sequence[tuple[float, float, bool]], repetition: Sequence[tuple[float, float, bool]],
                    k: int = DEFAULT_TAIL_CHECKPOINTS) -> Multiplier:
    """The robust multiplier: ratio of the two curves' tail-mean D_eff (both end at the same T).

    The method name records the checkpoints actually averaged (a curve shorter than k gives fewer).
    """
    arm, base = tail_d_eff(method, k), tail_d_eff(repetition, k)
    return Multiplier(multiplier(arm.d_eff, base.d_eff), f"tail-mean-k{min(arm.n_points, base.n_points)}",
                      arm.extrapolated or base.extrapolated, arm.d_eff, base.d_eff)


@dataclass(frozen=True)
class SeedMultiplier:
    """An arm's multiplier over seeds: the geometric mean of per-seed ratios and its interval."""

    multiplier: float
    ci: tuple[float, float] | None  # None with one seed (no spread to measure) or a non-finite ratio
    n_seeds: int
    method: str
    per_seed: dict[int, float]
    extrapolated: bool  # any seed's D_eff (of the arm or of repetition) was extrapolated
    unpaired_seeds: tuple[int, ...]  # seeds only one of the two arms has: left out

    def to_dict(self) -> dict[str, Any]:
        return {"multiplier_vs_repetition": self.multiplier,
                "multiplier_ci": list(self.ci) if self.ci is not None else None,
                "n_seeds": self.n_seeds, "multiplier_method": self.method,
                "per_seed": {str(s): v for s, v in self.per_seed.items()},
                "extrapolated": self.extrapolated, "unpaired_seeds": list(self.unpaired_seeds)}


def seed_multiplier(method: Mapping[int, TailDEff], repetition: Mapping[int, TailDEff], *,
                    confidence: float = CONFIDENCE) -> SeedMultiplier:
    """Mean multiplier over seeds with a `confidence` interval, paired by seed.

    Paired t-interval on log ratios: a multiplier is a ratio, so its logs are what averages
    symmetrically (2x and 0.5x cancel); pairing by seed removes what a seed's data order and init do
    to both arms alike; and with the 2-5 seeds a pretraining study affords a bootstrap has a handful
    of distinct resamples and undercovers, while t's heavier tails pay for estimating the spread from
    few points. The interval is exp(mean log ratio +- t * sd / sqrt(n)). One seed: no interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    seeds = sorted(set(method) & set(repetition))
    unpaired = tuple(sorted(set(method) ^ set(repetition)))
    name = f"paired-t-log-ratio-{round(confidence * 100):g}"
    ratios = {s: multiplier(method[s].d_eff, repetition[s].d_eff) for s in seeds}
    extrapolated = any(method[s].extrapolated or repetition[s].extrapolated for s in seeds)
    values = np.array(list(ratios.values()), dtype=float)
    n = len(seeds)
    if n == 0 or np.isnan(values).any():
        return SeedMultiplier(math.nan, None, n, name, ratios, extrapolated, unpaired)
    if np.isinf(values).any() or (values == 0).any():  # log ratio unbounded: the mean says which way
        return SeedMultiplier(math.inf if np.isinf(values).any() else 0.0, None, n, name, ratios,
                              extrapolated, unpaired)
    logs = np.log(values)
    mean = float(np.exp(logs.mean()))
    if n == 1:
        return SeedMultiplier(mean, None, n, name, ratios, extrapolated, unpaired)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * logs.std(ddof=1) / math.sqrt(n))
    ci = (float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)))
    return SeedMultiplier(mean, ci, n, name, ratios, extrapolated, unpaired)


@dataclass(frozen=True)
class FirstPassCalibration:
    """Repetition's D_eff / tokens seen while its data is still unique (its first epoch).

    Its data then is as unique as the oracle's, so the ratio should be 1: how far it is from 1 is
    the noise floor of effective tokens (different documents, different mixture, eval noise).
    """

    ratio: float  # geometric mean over the first-pass checkpoints; NaN if there are none
    points: tuple[tuple[float, float], ...]  # (tokens, d_eff / tokens) per first-pass checkpoint
    extrapolated: bool
    first_pass_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "n_points": len(self.points), "points": [list(p) for p in self.points],
                "extrapolated": self.extrapolated, "first_pass_tokens": self.first_pass_tokens}


def first_pass_calibration(repetition: Sequence[tuple[float, float, bool]],
                           unique_tokens: int) -> FirstPassCalibration:
    """Calibration of effective tokens from repetition's checkpoints at 0 < tokens <= unique_tokens."""
    first = [p for p in sorted(repetition, key=lambda p: p[0]) if 0 < p[0] <= unique_tokens]
    points = tuple((float(t), float(d) / float(t)) for t, d, _ in first)
    ratios = np.array([r for _, r in points], dtype=float)
    with np.errstate(divide="ignore"):
        ratio = float(np.exp(np.log(ratios).mean())) if ratios.size else math.nan
    return FirstPassCalibration(ratio, points, any(bool(p[2]) for p in first), int(unique_tokens))
