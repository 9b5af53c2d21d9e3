"""Effective tokens: how many unique (oracle) tokens a run's loss is worth.

D_eff(m) inverts the oracle's learning curve M_oracle(D) at the run's loss m (method.md §3).
Conventions a researcher reads off the outputs:

- inside the oracle's loss range: monotone (PCHIP) interpolation of log D against loss,
  `extrapolated=False`;
- outside it, on either side: a power law L(D) = E + B/D^beta fitted to the oracle points,
  anchored at the nearest end of the curve so D_eff has no jump there, `extrapolated=True`;
- `inf`: the loss is at or below the power law's irreducible loss E, so no finite amount of
  oracle data reaches it (the run beats the oracle's asymptote);
- `nan`: cannot be told from this oracle (a NaN loss, fewer than 4 usable oracle points for the
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


@dataclass(frozen=True)
class Curve:
    """A learning curve sorted by tokens seen; NaN losses (diverged checkpoints) are allowed."""

    tokens: np.ndarray
    loss: np.ndarray

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens, dtype=float)
        loss = np.asarray(self.loss, dtype=float)
        if tokens.ndim != 1 or tokens.shape != loss.shape:
            raise InputError.one(f"a curve needs as many losses as token counts "
                                 f"(got shapes {tokens.shape} and {loss.shape})", key="tokens")
        if not np.all(np.isfinite(tokens) & (tokens > 0)):
            raise InputError.one("token counts must be finite and positive", key="tokens")
        if np.any(np.isinf(loss)):
            raise InputError.one("losses must be finite (or NaN for a diverged checkpoint)", key="loss")
        order = np.argsort(tokens, kind="stable")
        object.__setattr__(self, "tokens", tokens[order])
        object.__setattr__(self, "loss", loss[order])

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> "Curve":
        """From (tokens_seen, loss) pairs, as the pipeline logs them."""
        pairs = np.asarray(list(points), dtype=float)
        if pairs.size == 0:
            pairs = pairs.reshape(0, 2)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise InputError.one(f"curve points must be (tokens, loss) pairs, got shape {pairs.shape}",
                                 key="points")
        return cls(pairs[:, 0], pairs[:, 1])


class EffectivePoint(NamedTuple):
    tokens: float
    d_eff: float
    extrapolated: bool


def _decreasing_levels(log_tokens: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-increasing fit of loss against tokens (pool adjacent violators).

    Isotonic regression rather than a running minimum: a running minimum locks onto the luckiest
    noisy dip and holds it, which makes the oracle look better early than it is; pooling averages
    the noise out. Returns one (mean log tokens, level) per pooled block, levels strictly falling.
    """
    blocks: list[list[float]] = []  # [sum of log tokens, sum of losses, count]
    for x, y in zip(log_tokens, loss):
        blocks.append([x, y, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] <= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    sums = np.array(blocks)
    return sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]


class OracleInverse:
    """D_eff as a function of loss for one oracle curve; build once, query for every arm."""

    MIN_TAIL_POINTS = 4  # the power law has 3 free constants; fit_law needs one point more

    def __init__(self, oracle: Curve, *, delta: float = DEFAULT_DELTA):
        usable = ~np.isnan(oracle.loss)
        tokens, loss = oracle.tokens[usable], oracle.loss[usable]
        if tokens.size == 0:
            raise InputError.one("the oracle curve has no finite loss", key="oracle")
        self.log_tokens, self.levels = _decreasing_levels(np.log(tokens), loss)
        self.tail: PowerLaw | None = None
        # A curve that never falls (one pooled level) says nothing about how loss scales with D.
        if tokens.size >= self.MIN_TAIL_POINTS and self.levels.size > 1:
            try:
                fitted = fit_law("power", loss, D=tokens, delta=delta).build()
            except InputError:  # constants the points leave undetermined: no tail, NaN outside
                fitted = None
            self.tail = fitted if isinstance(fitted, PowerLaw) else None

    def _extrapolate(self, loss: np.ndarray, anchor: int) -> np.ndarray:
        """Power-law D_eff anchored at block `anchor`: D_anchor * D_pl(loss) / D_pl(level)."""
        level = self.levels[anchor]
        if self.tail is None or not level > self.tail.E:
            # No tail, or one whose asymptote lies above the curve end it should extend.
            return np.full(loss.shape, np.nan)
        E, beta = self.tail.E, self.tail.beta
        with np.errstate(divide="ignore", invalid="ignore"):
            anchored = np.exp(self.log_tokens[anchor]) * ((level - E) / (loss - E)) ** (1.0 / beta)
        return np.where(loss <= E, np.inf, anchored)

    def __call__(self, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(d_eff, extrapolated) for each loss; see the module docstring for inf and nan."""
        m = np.atleast_1d(np.asarray(losses, dtype=float))
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


def effective_tokens(oracle_tokens: ArrayLike, oracle_losses: ArrayLike,
                     losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(d_eff, extrapolated) arrays for `losses` against the oracle curve (refits the oracle's
    power-law tail on every call: keep an `OracleInverse` to query one oracle many times)."""
    return OracleInverse(Curve(np.asarray(oracle_tokens), np.asarray(oracle_losses)))(losses)


def effective_curve(oracle_points: Iterable[tuple[float, float]],
                    arm_points: Iterable[tuple[float, float]]) -> list[EffectivePoint]:
    """D_eff at every checkpoint of an arm; points are (tokens_seen, val_loss)."""
    arm = Curve.from_points(arm_points)
    d_eff, extrapolated = OracleInverse(Curve.from_points(oracle_points))(arm.loss)
    return [EffectivePoint(float(t), float(d), bool(x)) for t, d, x in zip(arm.tokens, d_eff, extrapolated)]


def multiplier(d_eff_method: float, d_eff_repetition: float) -> float:
    """D_eff(method) / D_eff(repetition); NaN when either is NaN, the denominator is not
    positive, or both are infinite (nothing can be said), inf when only the method is."""
    method, repetition = float(d_eff_method), float(d_eff_repetition)
    if not repetition > 0 or np.isnan(method) or (np.isinf(method) and np.isinf(repetition)):
        return float("nan")
    return method / repetition
