"""Fit a scaling law to (N, D, U, loss) points: Chinchilla approach 3, saying how sure it is.

The objective is the Huber loss between predicted and observed log-losses (Hoffmann et al.).
Scale constants are fitted as logarithms and predictions combined with log-sum-exp, so the
optimiser never sees a negative constant or an overflow. Instead of running L-BFGS-B from every
point of the start grid, the whole grid is scored in one vectorised pass and L-BFGS-B runs from
the `n_starts` best points: the same answer as the full multi-start in practice, in a fraction of
the time.

A law with a `base_law` (the data-constrained law) is fitted in two stages, as Muennighoff et
al. do: first its base constants on the points the base law alone describes (at most one epoch
and not over-parameterised for the unique data; the second condition needs the base fit, so
the selection is refined until it stops changing), then the remaining constants on all points
with the base frozen.

How sure a fit is (a fitted constant is never shown as more certain than the points allow):

- an interval exists only from a bootstrap (`n_boot` > 0): percentile intervals of refits on
  resampled points, run in a process pool, each refit seeded by (seed, refit number) so the
  answer does not depend on the number of workers. Without one, `ci` is None; a zero-width
  interval (every refit returned the same value) is never reported as one (`no_spread`);
- each fitted constant is `identified` or not, with a one-line reason: its estimate or its
  interval reaches a bound of the search, or its profile (the objective with the constant held
  half a decade either side of the estimate and the others refitted) rises by less than
  `PROFILE_TOLERANCE` allows;
- the residual spread and the number of points per free constant say how much the fit had to
  go on.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from synpro.errors import InputError
from synpro.scaling.laws import LAWS, ScalingLaw

DEFAULT_DELTA = 1e-3
_BASE_SELECTION_PASSES = 5
_GRID_CELLS_PER_CHUNK = 2_000_000  # grid rows x points scored at once: bounds memory
_NO_INFORMATION = 1e-12  # a log-prediction change below this means the points ignore a constant
_DEGENERATE_WIDTH = 1e-9  # an interval narrower than this (relative) is no interval: every refit agreed
INTERVAL_METHOD = "percentile bootstrap"
ON_BOUND_TOLERANCE = 0.02
"""Within 2% of a search bound counts as on it: near a bound the objective is flat, so L-BFGS-B
stops a little short of it, and a bootstrap's 2.5th/97.5th percentile interpolates between draws."""
PROFILE_TOLERANCE = 1e-3
"""A constant is not identified when holding it half a decade above or below its estimate (the
others refitted) raises the objective by less than every point's log-loss residual growing by
this much would (0.1%, i.e. n_points x Huber(1e-3)). 0.1% is about the run-to-run spread of a
validation loss measured on a few million tokens: a fit that moves less than that over a whole
decade of the constant cannot tell the values apart, so the estimate is an accident of the noise
(and of where the optimiser stopped), not something the points say."""
PROFILE_SPAN = float(np.sqrt(10.0))  # half a decade each way: the profile spans one decade around the estimate


@dataclass(frozen=True)
class Identification:
    """Whether the points pin a fitted constant down; `reason` says why not, in one line."""

    identified: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"identified": self.identified, "reason": self.reason}


@dataclass(frozen=True)
class FitResult:
    """A fitted law, how sure it is and how it was obtained (`summary()` is the JSON form).

    `ci` is None without a bootstrap; with one it holds every fitted (and tied) constant whose
    refits spread, never a zero-width interval (those without spread are named in `no_spread`:
    exact points, or a constant stuck on a bound, which its identification then says).
    `identified` covers every fitted and tied constant; frozen ones are neither.
    """

    law: str
    constants: dict[str, float]
    ci: dict[str, tuple[float, float]] | None
    identified: dict[str, Identification]
    loss: float
    n_points: int
    residuals: np.ndarray
    settings: dict[str, Any]
    no_spread: tuple[str, ...] = ()  # bootstrapped, but every refit gave the same value: no interval

    def build(self) -> ScalingLaw:
        return LAWS.get(self.law)(**self.constants)

    @property
    def interval(self) -> dict[str, Any] | None:
        """How the intervals were made (None: there are none)."""
        if self.ci is None:
            return None
        return {"method": INTERVAL_METHOD, "n": self.settings["n_boot"], "level": self.settings["ci_level"],
                "seed": self.settings["seed"], "no_spread": list(self.no_spread)}

    @property
    def residual_spread(self) -> float:
        """RMS of log(predicted / observed): the typical relative miss of the fit."""
        return float(np.sqrt(np.mean(self.residuals**2)))

    @property
    def points_per_free_constant(self) -> float:
        free = len(self.identified) - (1 if self.settings["tie_exponents"] and "beta" in self.identified else 0)
        return self.n_points / max(free, 1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: constants, intervals (or null), identification, residual spread, settings."""
        return {"law": self.law, "constants": self.constants,
                "ci": None if self.ci is None else {k: list(v) for k, v in self.ci.items()},
                "interval": self.interval, "identified": {k: v.to_dict() for k, v in self.identified.items()},
                "residual_spread": self.residual_spread, "points_per_free_constant": self.points_per_free_constant,
                "loss": self.loss, "n_points": self.n_points, "frozen": self.settings["frozen"],
                "settings": self.settings}


@dataclass(frozen=True)
class _Stage:
    """One optimisation: which constants move (in fitted space), which are fixed or tied."""

    law: type[ScalingLaw]
    free: tuple[str, ...]
    fixed: Mapping[str, float]
    ties: Mapping[str, str]  # follower -> leader
    delta: float

    def to_fitted(self, name: str, value: ArrayLike) -> np.ndarray:
        return np.log(value) if name in self.law.log_scaled else np.asarray(value, dtype=float)

    def to_natural(self, name: str, value: float) -> float:
        return float(np.exp(value)) if name in self.law.log_scaled else float(value)

    def constants(self, theta: np.ndarray) -> dict[str, Any]:
        """Natural-unit constants; a (G, k) theta gives (G, 1) columns that broadcast over points."""
        p: dict[str, Any] = dict(self.fixed)
        for i, name in enumerate(self.free):
            value = theta[..., i : i + 1] if theta.ndim == 2 else theta[i]
            p[name] = np.exp(value) if name in self.law.log_scaled else value
        for follower, leader in self.ties.items():
            p[follower] = p[leader]
        return p

    def objective(self, theta: np.ndarray, columns: Sequence[np.ndarray], log_loss: np.ndarray) -> Any:
        residuals = self.law.log_loss(self.constants(theta), *columns) - log_loss
        return np.sum(_huber(residuals, self.delta), axis=-1)

    def bounds(self) -> list[tuple[float, float]]:
        fitted = []
        for name in self.free:
            lo, hi = self.law.bounds[name]
            fitted.append((float(self.to_fitted(name, lo)), float(self.to_fitted(name, hi))))
        return fitted

    def scaled(self, theta: np.ndarray, columns: Sequence[np.ndarray], log_loss: np.ndarray) -> float:
        """The objective over delta: its gradient is O(1), so the optimiser's default tolerances are meaningful."""
        return float(self.objective(theta, columns, log_loss)) / self.delta

    def minimize(self, columns: Sequence[np.ndarray], log_loss: np.ndarray, start: np.ndarray,
                 bounds: Sequence[tuple[float, float]]) -> Any:
        """One L-BFGS-B run on the scaled objective."""
        return minimize(self.scaled, start, args=(columns, log_loss), method="L-BFGS-B", bounds=bounds)

    def optimise(self, columns: Sequence[np.ndarray], log_loss: np.ndarray,
                 starts: np.ndarray) -> np.ndarray:
        """Best L-BFGS-B optimum over the start rows."""
        best_theta, best_value = starts[0], np.inf
        bounds = self.bounds()
        for start in starts:
            result = self.minimize(columns, log_loss, start, bounds)
            if result.fun < best_value:
                best_theta, best_value = result.x, result.fun
        return best_theta

    def snap_to_bounds(self, theta: np.ndarray, columns: Sequence[np.ndarray], log_loss: np.ndarray) -> np.ndarray:
        """Move each constant to a bound of the search where the profile fits at least as well.

        L-BFGS-B stops wherever a direction is nearly flat (e.g. an E far below the losses), and
        where it stops then depends on rounding. Refitting the others with one constant held at a
        bound tells: if that fits as well, the points do not pin the constant down, and reporting
        it at the bound says so on every machine.
        """
        theta = np.array(theta, dtype=float)
        bounds = self.bounds()
        best = self.scaled(theta, columns, log_loss)
        for i, edges in enumerate(bounds):
            for edge in edges:
                start = theta.copy()
                start[i] = edge
                held = [(edge, edge) if j == i else pair for j, pair in enumerate(bounds)]
                result = self.minimize(columns, log_loss, start, held)
                if result.fun <= best:
                    theta, best = result.x, result.fun
        return theta

    def identify(self, constants: Mapping[str, float], columns: Sequence[np.ndarray],
                 log_loss: np.ndarray) -> dict[str, Identification]:
        """Bound and profile checks of each free constant at the fitted `constants`."""
        theta = np.array([float(self.to_fitted(n, constants[n])) for n in self.free])
        bounds = self.bounds()
        best = self.scaled(theta, columns, log_loss)
        allowed = log_loss.size * float(_huber(np.asarray(PROFILE_TOLERANCE), self.delta)) / self.delta
        found = {}
        for i, name in enumerate(self.free):
            edge = _bound_reached(self.law, name, constants[name], constants[name])
            if edge is not None:
                found[name] = Identification(False, f"the estimate is on the search bound {edge:g}: "
                                                    "the points do not pin it down")
                continue
            flat = []
            for factor, side in ((PROFILE_SPAN, "above"), (1 / PROFILE_SPAN, "below")):
                held_at = float(np.clip(self.to_fitted(name, constants[name] * factor), *bounds[i]))
                start = theta.copy()
                start[i] = held_at
                held = [(held_at, held_at) if j == i else pair for j, pair in enumerate(bounds)]
                if self.minimize(columns, log_loss, start, held).fun - best < allowed:
                    flat.append((side, self.to_natural(name, held_at)))
            if flat:
                where = " or ".join(f"{value:.3g}" for _, value in flat)
                sides = " and ".join(side for side, _ in flat)
                found[name] = Identification(False, (
                    f"held at {where} (half a decade away, others refitted) the fit worsens by less than a "
                    f"{PROFILE_TOLERANCE:.1%} residual per point: the points do not bound it from {sides}"))
            else:
                found[name] = Identification(True)
        return found

    def grid_starts(self, grid: Mapping[str, Sequence[float]], columns: Sequence[np.ndarray],
                    log_loss: np.ndarray, n_starts: int) -> np.ndarray:
        """The `n_starts` grid points with the lowest objective, scored in vectorised chunks."""
        axes = [self.to_fitted(name, grid[name]) for name in self.free]
        candidates = np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(self.free))
        chunk = max(1, _GRID_CELLS_PER_CHUNK // max(1, log_loss.size))
        with np.errstate(all="ignore"):
            scores = np.concatenate([self.objective(candidates[i : i + chunk], columns, log_loss)
                                     for i in range(0, len(candidates), chunk)])
        scores = np.where(np.isfinite(scores), scores, np.inf)
        return candidates[np.argsort(scores, kind="stable")[:n_starts]]

    def fit(self, columns: Sequence[np.ndarray], log_loss: np.ndarray, *,
            grid: Mapping[str, Sequence[float]], n_starts: int,
            start: Mapping[str, float] | None) -> dict[str, float]:
        """Constants (natural units, all of the law's) after fitting from the grid or from `start`."""
        if self.free:
            if start is None:
                starts = self.grid_starts(grid, columns, log_loss, n_starts)
                theta = self.snap_to_bounds(self.optimise(columns, log_loss, starts), columns, log_loss)
            else:  # a refit from an estimate (bootstrap, base refinement) stays near its snapped start
                starts = np.array([[float(self.to_fitted(n, start[n])) for n in self.free]])
                theta = self.optimise(columns, log_loss, starts)
        else:
            theta = np.zeros(0)
        return {k: float(v) for k, v in self.constants(theta).items()}


def _bound_reached(law: type[ScalingLaw], name: str, lo: float, hi: float) -> float | None:
    """The search bound that [lo, hi] reaches (within ON_BOUND_TOLERANCE), if any."""
    lower, upper = law.bounds[name]
    if lo <= lower * (1 + ON_BOUND_TOLERANCE):
        return lower
    if hi >= upper * (1 - ON_BOUND_TOLERANCE):
        return upper
    return None


def _huber(residuals: np.ndarray, delta: float) -> np.ndarray:
    size = np.abs(residuals)
    return np.where(size <= delta, 0.5 * residuals**2, delta * (size - 0.5 * delta))


@dataclass(frozen=True)
class _Options:
    law: type[ScalingLaw]
    frozen: Mapping[str, float]
    ties: Mapping[str, str]
    delta: float
    grid: Mapping[str, Sequence[float]]
    n_starts: int

    def stage(self, law: type[ScalingLaw], names: Sequence[str], fixed: Mapping[str, float]) -> _Stage:
        free = tuple(n for n in names if n not in fixed and n not in self.ties)
        stage_fixed = {n: v for n, v in fixed.items() if n in law.param_names}
        ties = {f: l for f, l in self.ties.items() if f in names}
        return _Stage(law, free, stage_fixed, ties, self.delta)

    def free_names(self) -> list[str]:
        return [n for n in self.law.param_names if n not in self.frozen and n not in self.ties]


def _estimate(options: _Options, columns: Sequence[np.ndarray], log_loss: np.ndarray, *,
              start: Mapping[str, float] | None = None, base_mask: np.ndarray | None = None,
              ) -> tuple[dict[str, float], np.ndarray | None, dict[str, Identification]]:
    """Constants for one data set, (two-stage laws) the points the base was fitted on, and each
    free constant's identification, checked on its own stage's points.

    With `start` (bootstrap refits), one L-BFGS-B run per stage from there replaces the grid and
    nothing is identified; with `base_mask`, that selection of base points is used as it is.
    """
    law = options.law
    fit_kwargs: dict[str, Any] = {"grid": options.grid, "n_starts": options.n_starts, "start": start}
    base_law = law.base_law
    if base_law is None:
        stage = options.stage(law, law.param_names, options.frozen)
        constants = stage.fit(columns, log_loss, **fit_kwargs)
        return constants, None, {} if start is not None else stage.identify(constants, columns, log_loss)

    base_stage = options.stage(base_law, base_law.param_names, options.frozen)
    base_columns = [columns[law.inputs.index(name)] for name in base_law.inputs]
    mask = law.base_points(*columns) if base_mask is None else base_mask
    n_needed = len(base_stage.free) + 1
    if mask.sum() < n_needed:
        raise InputError.one(
            f"the {law.name} law's base constants need at least {n_needed} points with D <= U "
            f"(no repetition); got {int(mask.sum())}",
            key="D", hint=f"freeze {', '.join(base_stage.free)} (e.g. at published values) or add single-epoch runs")
    base = base_stage.fit([c[mask] for c in base_columns], log_loss[mask], **fit_kwargs)
    for _ in range(_BASE_SELECTION_PASSES if base_mask is None else 0):
        refined = law.base_points(*columns, base=base_law(**base))
        if np.array_equal(refined, mask) or refined.sum() < n_needed:
            break
        mask = refined
        base = base_stage.fit([c[mask] for c in base_columns], log_loss[mask],
                              grid=options.grid, n_starts=options.n_starts, start=base)
    rest = [n for n in law.param_names if n not in base_law.param_names]
    second = options.stage(law, rest, {**options.frozen, **base})
    constants = second.fit(columns, log_loss, **fit_kwargs)
    if start is not None:
        return constants, mask, {}
    base_columns = [c[mask] for c in base_columns]
    return constants, mask, {**base_stage.identify(base, base_columns, log_loss[mask]),
                             **second.identify(constants, columns, log_loss)}


def _require_information(options: _Options, constants: Mapping[str, float],
                         columns: Sequence[np.ndarray]) -> None:
    """InputError for a free constant the points do not respond to anywhere in its search range
    (the optimiser would just return its start value), e.g. R_N_star with no over-parameterised
    run. A constant they respond to only weakly is fitted and flagged as not identified instead:
    a local slope would refuse, say, an R_D* that rests on its upper bound, where D' stops
    depending on it."""
    stage = options.stage(options.law, options.law.param_names, options.frozen)
    theta = np.array([float(stage.to_fitted(n, constants[n])) for n in stage.free])
    reference = options.law.log_loss(stage.constants(theta), *columns)
    for i, (name, edges) in enumerate(zip(stage.free, stage.bounds())):
        change = 0.0
        for edge in edges:
            moved = theta.copy()
            moved[i] = edge
            change = max(change, float(np.max(np.abs(options.law.log_loss(stage.constants(moved), *columns)
                                                     - reference))))
        if not change > _NO_INFORMATION:
            raise InputError.one(f"the points carry no information about {name}", key=name,
                                 hint=f"freeze {name} at a value (e.g. a published constant)")


def _validate_columns(law: type[ScalingLaw], given: Mapping[str, ArrayLike | None]) -> list[np.ndarray]:
    columns = []
    for name in (*law.inputs, "L"):
        raw = given[name]
        if raw is None:
            raise InputError.one(f"the {law.name} law needs {name}", key=name)
        values = np.asarray(raw, dtype=float)
        if values.ndim != 1:
            raise InputError.one(f"{name} must be a flat list of numbers, got shape {values.shape}", key=name)
        bad = np.flatnonzero(~(values > 0) | ~np.isfinite(values))
        if bad.size:
            raise InputError.one(f"{bad.size} value(s) of {name} are not finite and positive "
                                 f"(first at index {bad[0]}: {values[bad[0]]})", key=name)
        columns.append(values)
    lengths = {name: len(c) for name, c in zip((*law.inputs, "L"), columns)}
    if len(set(lengths.values())) > 1:
        raise InputError.one(f"columns have different lengths: {lengths}")
    return columns


def _validate_options(law: type[ScalingLaw], frozen: Mapping[str, float], tie_exponents: bool,
                      grid: Mapping[str, Sequence[float]], delta: float, n_starts: int,
                      n_boot: int, ci_level: float, seed: int) -> tuple[dict[str, float], dict[str, str]]:
    known = ", ".join(law.param_names)
    for kind, names in (("frozen", frozen), ("grid", grid)):
        for name in names:
            if name not in law.param_names:
                raise InputError.one(f"{kind} constant {name!r} is not a constant of the {law.name} law",
                                     key=name, hint=f"known: {known}")
    for name, value in frozen.items():
        if not (np.isfinite(value) and value > 0):
            raise InputError.one(f"frozen {name} must be finite and positive, got {value}", key=name)
    for name, values in grid.items():
        lo, hi = law.bounds[name]
        if len(values) == 0 or not all(lo <= v <= hi for v in values):
            raise InputError.one(f"grid for {name} must be non-empty values in [{lo:g}, {hi:g}]", key=name)
    for label, ok in (("delta", delta > 0), ("n_starts", n_starts >= 1), ("n_boot", n_boot >= 0),
                      ("ci_level", 0 < ci_level < 1), ("seed", seed >= 0)):
        if not ok:
            raise InputError.one(f"{label} is out of range", key=label)
    fixed = dict(frozen)
    ties: dict[str, str] = {}
    if tie_exponents:
        ties = {"beta": "alpha"}
        if "alpha" in fixed and "beta" in fixed and fixed["alpha"] != fixed["beta"]:
            raise InputError.one("alpha and beta are tied but frozen at different values", key="beta")
        if "beta" in fixed:
            fixed["alpha"] = fixed["beta"]
        fixed.pop("beta", None)
    return fixed, ties


def fit_law(law: str | type[ScalingLaw], L: ArrayLike, *, N: ArrayLike | None = None,
            D: ArrayLike | None = None, U: ArrayLike | None = None, tie_exponents: bool = False,
            frozen: Mapping[str, float] | None = None, delta: float = DEFAULT_DELTA,
            grid: Mapping[str, Sequence[float]] | None = None, n_starts: int = 8,
            n_boot: int = 0, ci_level: float = 0.95, seed: int = 0, workers: int | None = None) -> FitResult:
    """Fit `law` (a name in LAWS or a class) to losses L at the law's inputs (N, D, U).

    `frozen` holds constants at given values; `tie_exponents` fits one exponent for alpha and
    beta; `grid` overrides the law's default start values per constant (natural units);
    `n_boot` > 0 adds percentile intervals from refits on resampled points (stratified by
    stage for two-stage laws, each refit started from the point estimate), run by `workers`
    processes (default min(n_boot, os.cpu_count())); the intervals do not depend on `workers`.
    """
    try:
        cls = LAWS.get(law) if isinstance(law, str) else law
    except KeyError as exc:
        raise InputError.one(str(exc.args[0]), key="law") from None
    frozen = dict(frozen or {})
    fixed, ties = _validate_options(cls, frozen, tie_exponents, grid or {}, delta, n_starts, n_boot, ci_level,
                                    seed)
    columns = _validate_columns(cls, {"N": N, "D": D, "U": U, "L": L})
    *inputs, losses = columns
    options = _Options(cls, fixed, ties, delta, {**cls.default_grid, **(grid or {})}, n_starts)
    n_free = len(options.free_names())
    if len(losses) <= n_free:
        raise InputError.one(f"{len(losses)} points cannot fit {n_free} free constants of the "
                             f"{cls.name} law; need at least {n_free + 1}", key="L",
                             hint="add points, freeze constants or tie the exponents")

    log_loss = np.log(losses)
    constants, base_mask, identified = _estimate(options, inputs, log_loss)
    _require_information(options, constants, inputs)
    residuals = cls.log_loss(constants, *inputs) - log_loss

    ci, no_spread = None, ()
    if n_boot:
        workers = min(n_boot, os.cpu_count() or 1) if workers is None else workers
        draws = _bootstrap(options, inputs, log_loss, constants, base_mask, n_boot, seed, workers)
        ci, no_spread, identified = _intervals(options, draws, identified, ci_level)
    for follower, leader in ties.items():  # a tied constant is as sure as the one it follows
        identified[follower] = identified[leader]

    settings = {
        "objective": "sum of Huber(log predicted - log observed)", "optimizer": "L-BFGS-B",
        "delta": delta, "n_starts": n_starts, "tie_exponents": tie_exponents, "frozen": frozen,
        "grid": {n: [float(v) for v in options.grid[n]] for n in cls.param_names},
        "n_boot": n_boot, "ci_level": ci_level, "seed": seed, "profile_tolerance": PROFILE_TOLERANCE,
    }
    if base_mask is not None:
        settings["base_points"] = int(base_mask.sum())
    return FitResult(cls.name, {n: constants[n] for n in cls.param_names}, ci,
                     {n: identified[n] for n in cls.param_names if n in identified},
                     float(np.sum(_huber(residuals, delta))), len(losses), residuals, settings, no_spread)


def _refits(options: _Options, inputs: Sequence[np.ndarray], log_loss: np.ndarray, estimate: Mapping[str, float],
            base_mask: np.ndarray | None, seed: int, numbers: Sequence[int]) -> np.ndarray:
    """Bootstrap refits `numbers` (one row of constants each). Refit b resamples with its own
    generator seeded by (seed, b), so any split of the refits over processes gives the same rows."""
    strata = [np.arange(len(log_loss))] if base_mask is None else [np.flatnonzero(base_mask),
                                                                   np.flatnonzero(~base_mask)]
    names = options.law.param_names
    draws = np.empty((len(numbers), len(names)))
    for row, b in enumerate(numbers):
        rng = np.random.default_rng([seed, b])
        picks = [rng.choice(idx, size=idx.size) for idx in strata]
        mask = None if base_mask is None else np.concatenate([np.full(p.size, i == 0) for i, p in enumerate(picks)])
        idx = np.concatenate(picks)
        refit, _, _ = _estimate(options, [c[idx] for c in inputs], log_loss[idx], start=estimate, base_mask=mask)
        draws[row] = [refit[n] for n in names]
    return draws


def _bootstrap(options: _Options, inputs: Sequence[np.ndarray], log_loss: np.ndarray,
               estimate: Mapping[str, float], base_mask: np.ndarray | None, n_boot: int, seed: int,
               workers: int) -> np.ndarray:
    """(n_boot, constants) refits, in `workers` processes when there is more than one.

    Workers are forked where the platform allows: a fork inherits the imported laws, where a
    fresh interpreter would spend seconds importing them for a few hundred milliseconds of work.
    """
    chunks = [c.tolist() for c in np.array_split(np.arange(n_boot), max(1, min(workers, n_boot)))]
    args = (options, inputs, log_loss, dict(estimate), base_mask, seed)
    if len(chunks) == 1:
        return _refits(*args, chunks[0])
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context(method)) as pool:
        return np.concatenate(list(pool.map(_refits, *([a] * len(chunks) for a in args), chunks)))


def _intervals(options: _Options, draws: np.ndarray, identified: Mapping[str, Identification], ci_level: float,
               ) -> tuple[dict[str, tuple[float, float]], tuple[str, ...], dict[str, Identification]]:
    """Percentile intervals of the fitted constants, the constants whose refits did not spread at
    all (no interval rather than a zero-width one), and identification updated by the intervals:
    one that reaches a search bound means the points do not pin the constant down."""
    tail = 100 * (1 - ci_level) / 2
    names = options.law.param_names
    lows, highs = np.percentile(draws, [tail, 100 - tail], axis=0)
    ci, no_spread, found = {}, [], dict(identified)
    for name in options.free_names():
        i = names.index(name)
        lo, hi = float(lows[i]), float(highs[i])
        if hi - lo <= _DEGENERATE_WIDTH * max(abs(lo), abs(hi)):
            no_spread.append(name)
            continue
        ci[name] = (lo, hi)
        edge, before = _bound_reached(options.law, name, lo, hi), found[name]
        if edge is not None and (before.identified or "search bound" not in before.reason):
            problem = f"its {ci_level:.0%} interval reaches the search bound {edge:g}"
            found[name] = Identification(False, problem if before.identified else f"{before.reason}; {problem}")
    for follower, leader in options.ties.items():
        if leader in ci:
            ci[follower] = ci[leader]
        if leader in no_spread:
            no_spread.append(follower)
    return {n: ci[n] for n in names if n in ci}, tuple(n for n in names if n in no_spread), found
