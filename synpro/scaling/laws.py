"""Parametric loss laws: Chinchilla, Muennighoff's data-constrained law, and a data-only power law.

Each law is a small frozen dataclass of its constants plus class-level facts the fitter needs
(which inputs it reads, which constants are fitted in log space, bounds, a default start grid).
`log_loss` is written with plain numpy broadcasting so the fitter can score a whole grid of
constants at once; `predict` is the user-facing evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from synpro.registry import Registry

Value = float | np.ndarray
"""A constant: a float for one law, or an array of candidate values when the fitter scores a grid."""

_LOG_SPACE_STARTS = (0.0, 4.0, 8.0, 12.0, 16.0, 20.0)
_SCALE_BOUNDS = (float(np.exp(-10.0)), float(np.exp(30.0)))
_EXPONENT_BOUNDS = (0.01, 3.0)
_EXPONENT_STARTS = (0.1, 0.25, 0.4, 0.6, 1.0)
_E_BOUNDS = (float(np.exp(-10.0)), float(np.exp(3.0)))
_E_STARTS = tuple(float(x) for x in np.exp([-1.0, -0.5, 0.0, 0.5, 1.0]))
_SCALE_STARTS = tuple(float(x) for x in np.exp(_LOG_SPACE_STARTS))
_DECAY_BOUNDS = (1e-3, 1e5)
_DECAY_STARTS = (1.0, 3.0, 10.0, 30.0, 100.0)
_BISECTION_STEPS = 60  # halves a bracket of a few e-folds of D far below float precision


class ScalingLaw:
    """Subclass as a frozen dataclass whose fields are `param_names`, and register in `LAWS`."""

    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    inputs: ClassVar[tuple[str, ...]]
    # Positive scale constants are fitted as logarithms (Hoffmann et al.), exponents as they are.
    log_scaled: ClassVar[frozenset[str]]
    bounds: ClassVar[Mapping[str, tuple[float, float]]]
    default_grid: ClassVar[Mapping[str, tuple[float, ...]]]
    # A law that extends a simpler one is fitted in two stages: base constants first (see fit.py).
    base_law: ClassVar[type["ScalingLaw"] | None] = None

    @staticmethod
    def log_loss(p: Mapping[str, Value], *columns: np.ndarray) -> np.ndarray:
        """log L for constants `p` (scalars, or arrays broadcasting against the columns)."""
        raise NotImplementedError

    @staticmethod
    def base_points(*columns: np.ndarray, base: "ScalingLaw | None" = None) -> np.ndarray:
        """For a law with a `base_law`: which points the base law alone describes (given the
        fitted base, or before it is known when `base` is None)."""
        raise NotImplementedError

    def constants(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def _predict(self, *columns: ArrayLike) -> Value:
        arrays = [np.asarray(c, dtype=float) for c in columns]
        return _scalar_or_array(np.exp(self.log_loss(self.constants(), *arrays)))


LAWS: Registry[type[ScalingLaw]] = Registry("scaling law")


def _registered(cls: type[ScalingLaw]) -> type[ScalingLaw]:
    return LAWS.register(cls.name)(cls)


def _scalar_or_array(x: np.ndarray) -> Value:
    return float(x) if np.ndim(x) == 0 else x


def _log_sum(*logs: np.ndarray) -> np.ndarray:
    """log(sum(exp(.))) of the terms, without overflow for very large or small constants."""
    total = logs[0]
    for term in logs[1:]:
        total = np.logaddexp(total, term)
    return total


def _allocation_constant(A: Value, B: Value, alpha: Value, beta: Value) -> Value:
    """Hoffmann et al.'s G: at compute C = 6ND the optimum is N = G (C/6)^(beta/(alpha+beta))
    and D = (C/6)^(alpha/(alpha+beta)) / G."""
    return (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))


def optimal_params(D: ArrayLike, A: Value, B: Value, alpha: Value, beta: Value) -> Value:
    """Compute-optimal N for D tokens under a Chinchilla law: eliminating C from the optimum
    (see `_allocation_constant`) gives N = G (G D)^(beta/alpha)."""
    G = _allocation_constant(A, B, alpha, beta)
    return G * (G * np.asarray(D, dtype=float)) ** (beta / alpha)


def _repetition_value(unique: Value, total: Value, decay: Value) -> Value:
    """Muennighoff's effective count: unique + unique R* (1 - exp(-R/R*)), R = total/unique - 1 >= 0."""
    repeats = np.maximum(total / unique - 1.0, 0.0)
    return unique * (1.0 + decay * -np.expm1(-repeats / decay))


_BASE_BOUNDS = {"A": _SCALE_BOUNDS, "B": _SCALE_BOUNDS, "E": _E_BOUNDS,
                "alpha": _EXPONENT_BOUNDS, "beta": _EXPONENT_BOUNDS}
_BASE_GRID = {"A": _SCALE_STARTS, "B": _SCALE_STARTS, "E": _E_STARTS,
              "alpha": _EXPONENT_STARTS, "beta": _EXPONENT_STARTS}


@_registered
@dataclass(frozen=True)
class ChinchillaLaw(ScalingLaw):
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)."""

    A: float
    B: float
    E: float
    alpha: float
    beta: float

    name: ClassVar[str] = "chinchilla"
    param_names: ClassVar[tuple[str, ...]] = ("A", "B", "E", "alpha", "beta")
    inputs: ClassVar[tuple[str, ...]] = ("N", "D")
    log_scaled: ClassVar[frozenset[str]] = frozenset({"A", "B", "E"})
    bounds: ClassVar[Mapping[str, tuple[float, float]]] = _BASE_BOUNDS
    default_grid: ClassVar[Mapping[str, tuple[float, ...]]] = _BASE_GRID

    @staticmethod
    def log_loss(p: Mapping[str, Value], *columns: np.ndarray) -> np.ndarray:
        N, D = columns
        return _log_sum(np.log(p["A"]) - p["alpha"] * np.log(N),
                        np.log(p["B"]) - p["beta"] * np.log(D),
                        np.log(p["E"]))

    def predict(self, N: ArrayLike, D: ArrayLike) -> Value:
        return self._predict(N, D)

    def tokens_for_loss(self, N: ArrayLike, L: ArrayLike) -> Value:
        """Tokens D at which an N-parameter model reaches loss L; ValueError if it never does."""
        N, L = np.asarray(N, dtype=float), np.asarray(L, dtype=float)
        gap = L - self.E - self.A / N**self.alpha
        if np.any(~(gap > 0)):
            raise ValueError(f"loss {L} is not reachable by N={N}: the floor E + A/N^alpha is "
                             f"{self.E + self.A / N**self.alpha}")
        return _scalar_or_array((self.B / gap) ** (1.0 / self.beta))

    def optimal_params(self, D: ArrayLike) -> Value:
        """Compute-optimal parameter count for D training tokens."""
        return _scalar_or_array(np.asarray(optimal_params(D, self.A, self.B, self.alpha, self.beta)))

    def compute_optimal(self, C: ArrayLike) -> tuple[Value, Value]:
        """(N, D) minimising the loss for C = 6 N D training FLOPs."""
        C = np.asarray(C, dtype=float)
        G = _allocation_constant(self.A, self.B, self.alpha, self.beta)
        total = self.alpha + self.beta
        N = G * (C / 6.0) ** (self.beta / total)
        D = (C / 6.0) ** (self.alpha / total) / G
        return _scalar_or_array(N), _scalar_or_array(D)


@_registered
@dataclass(frozen=True)
class DataConstrainedLaw(ScalingLaw):
    """Muennighoff et al. 2023: L = E + A/N'^alpha + B/D'^beta with U unique tokens.

    D' discounts repeated epochs with decay constant R_D_star; N' discounts parameters beyond the
    compute-optimal count for the unique data, with R_N_star. Only min(U, D) unique tokens are
    ever seen, so D <= U means no repetition (D' = D).
    """

    A: float
    B: float
    E: float
    alpha: float
    beta: float
    R_D_star: float
    R_N_star: float

    name: ClassVar[str] = "data-constrained"
    param_names: ClassVar[tuple[str, ...]] = ("A", "B", "E", "alpha", "beta", "R_D_star", "R_N_star")
    inputs: ClassVar[tuple[str, ...]] = ("N", "D", "U")
    log_scaled: ClassVar[frozenset[str]] = frozenset({"A", "B", "E", "R_D_star", "R_N_star"})
    bounds: ClassVar[Mapping[str, tuple[float, float]]] = {
        **_BASE_BOUNDS, "R_D_star": _DECAY_BOUNDS, "R_N_star": _DECAY_BOUNDS}
    default_grid: ClassVar[Mapping[str, tuple[float, ...]]] = {
        **_BASE_GRID, "R_D_star": _DECAY_STARTS, "R_N_star": _DECAY_STARTS}
    base_law: ClassVar[type[ScalingLaw] | None] = ChinchillaLaw

    @staticmethod
    def _effective(p: Mapping[str, Value], N: np.ndarray, D: np.ndarray,
                   U: np.ndarray) -> tuple[Value, Value]:
        seen = np.minimum(U, D)
        D_eff = _repetition_value(seen, D, p["R_D_star"])
        U_N = np.minimum(N, optimal_params(seen, p["A"], p["B"], p["alpha"], p["beta"]))
        N_eff = _repetition_value(U_N, N, p["R_N_star"])
        return N_eff, D_eff

    @staticmethod
    def log_loss(p: Mapping[str, Value], *columns: np.ndarray) -> np.ndarray:
        N_eff, D_eff = DataConstrainedLaw._effective(p, *columns)
        return ChinchillaLaw.log_loss(p, N_eff, D_eff)

    def base(self) -> ChinchillaLaw:
        """The Chinchilla law this one reduces to without repetition or excess parameters."""
        return ChinchillaLaw(self.A, self.B, self.E, self.alpha, self.beta)

    @staticmethod
    def base_points(*columns: np.ndarray, base: ScalingLaw | None = None) -> np.ndarray:
        """Points where this law equals its base: at most one epoch and, once the base constants
        are known, N at most compute-optimal for the unique data seen."""
        N, D, U = columns
        mask = D <= U
        if isinstance(base, ChinchillaLaw):
            mask &= N <= np.asarray(base.optimal_params(np.minimum(U, D)))
        return mask

    def effective_data(self, U: ArrayLike, D: ArrayLike) -> Value:
        """D': what D tokens drawn from U unique ones are worth in unique tokens."""
        U, D = np.asarray(U, dtype=float), np.asarray(D, dtype=float)
        seen = np.minimum(U, D)
        return _scalar_or_array(np.asarray(_repetition_value(seen, D, self.R_D_star)))

    def effective_params(self, N: ArrayLike, U: ArrayLike) -> Value:
        """N': what N parameters are worth when only U unique tokens exist."""
        N = np.asarray(N, dtype=float)
        U_N = np.minimum(N, self.base().optimal_params(U))
        return _scalar_or_array(np.asarray(_repetition_value(U_N, N, self.R_N_star)))

    def predict(self, N: ArrayLike, D: ArrayLike, U: ArrayLike) -> Value:
        return self._predict(N, D, U)

    def tokens_for_loss(self, N: ArrayLike, U: ArrayLike, L: ArrayLike) -> Value:
        """Total tokens D (U unique ones, repeated as needed) at which the loss reaches L.

        No closed form below one epoch (N' then depends on D), so this bisects on log D: the
        loss falls monotonically with D. ValueError when L is at or below the floor that
        endless repetition approaches.
        """
        N, U, L = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (N, U, L)))
        floor = (self.E + self.A / np.asarray(self.effective_params(N, U)) ** self.alpha
                 + self.B / (U * (1.0 + self.R_D_star)) ** self.beta)
        if np.any(~(L > floor)):
            raise ValueError(f"loss {L} is not reachable by N={N} with U={U} unique tokens: "
                             f"the floor with endless repetition is {floor}")
        log_lo, log_hi = np.log(U), np.log(U)
        while np.any(too_low := self.predict(N, np.exp(log_lo), U) <= L):
            log_lo = np.where(too_low, log_lo - 1.0, log_lo)
        while np.any(too_high := self.predict(N, np.exp(log_hi), U) > L):
            log_hi = np.where(too_high, log_hi + 1.0, log_hi)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (log_lo + log_hi)
            above = self.predict(N, np.exp(mid), U) > L
            log_lo, log_hi = np.where(above, mid, log_lo), np.where(above, log_hi, mid)
        return _scalar_or_array(np.exp(0.5 * (log_lo + log_hi)))


@_registered
@dataclass(frozen=True)
class PowerLaw(ScalingLaw):
    """L(D) = E + B/D^beta: one model's loss against tokens (used to extend an oracle curve)."""

    B: float
    E: float
    beta: float

    name: ClassVar[str] = "power"
    param_names: ClassVar[tuple[str, ...]] = ("B", "E", "beta")
    inputs: ClassVar[tuple[str, ...]] = ("D",)
    log_scaled: ClassVar[frozenset[str]] = frozenset({"B", "E"})
    bounds: ClassVar[Mapping[str, tuple[float, float]]] = {k: _BASE_BOUNDS[k] for k in param_names}
    default_grid: ClassVar[Mapping[str, tuple[float, ...]]] = {k: _BASE_GRID[k] for k in param_names}

    @staticmethod
    def log_loss(p: Mapping[str, Value], *columns: np.ndarray) -> np.ndarray:
        (D,) = columns
        return np.logaddexp(np.log(p["B"]) - p["beta"] * np.log(D), np.log(p["E"]))

    def predict(self, D: ArrayLike) -> Value:
        return self._predict(D)

    def tokens_for_loss(self, L: ArrayLike) -> Value:
        """Tokens at which the loss reaches L; ValueError when L is at or below E."""
        L = np.asarray(L, dtype=float)
        if np.any(~(L > self.E)):
            raise ValueError(f"loss {L} is not above the irreducible loss E={self.E}")
        return _scalar_or_array((self.B / (L - self.E)) ** (1.0 / self.beta))


CHINCHILLA = ChinchillaLaw(A=406.4, B=410.7, E=1.69, alpha=0.3392, beta=0.2849)
"""Hoffmann et al. 2022, approach 3."""

MUENNIGHOFF_C4 = DataConstrainedLaw(A=520.82, B=1487.72, E=1.8691, alpha=0.35266, beta=0.35266,
                                    R_D_star=15.388, R_N_star=5.310)
"""Muennighoff et al. 2023, fitted on C4 (alpha tied to beta)."""
