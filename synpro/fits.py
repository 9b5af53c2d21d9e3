"""Per-recipe fits: what a token of each arm is worth, from a study's stored learning curves.

Every evaluation of a finished arm is a point (N, D, U, L): the trial's non-embedding parameter
count, tokens seen, the arm's unique tokens and the validation loss (valid at every checkpoint
because the learning rate is constant). The recipe follows Muennighoff et al.:

1. the base constants (A, B, E, alpha, beta of Chinchilla's law) are fitted on the reference
   (oracle) arm's unique-data points, freezing what those points cannot identify: with fewer
   than three model sizes, A/N^alpha cannot be told from E, so alpha is frozen at the published
   value and A at ~0 (E then is the floor of the size trained, not the irreducible loss);
2. with the base frozen, R_D* is fitted separately on each other arm's points under `RecipeLaw`,
   so each recipe gets its own "value of a repeated (or synthetic) token".

Every frozen constant and why it was frozen is recorded in the fit's settings (`frozen`,
`frozen_why`); every fitted one carries its identification (see `synpro.scaling.fit`: a constant
on a search bound, or with a flat profile, is not identified) and, with a bootstrap, its
interval. The bootstrap runs by default (`analysis.bootstrap` in the spec, 200 refits); the
intervals of R_D* hold the base fixed, so they leave out the base's own uncertainty. A fit pools
every finished trial of the study, so a search over anything but model size (a learning rate,
say) shows up as residual scatter rather than as a separate curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from synpro.arms import ARMS
from synpro.errors import InputError
from synpro.core.hashing import stable_hash
from synpro.scaling import LAWS, MUENNIGHOFF_C4, ChinchillaLaw, DataConstrainedLaw, ScalingLaw
from synpro.scaling.fit import FitResult, fit_law
from synpro.scaling.laws import Value, _repetition_value
from synpro.spec import Spec, parse_spec
from store import Store

MIN_MODEL_SIZES = 3  # E + A/N^alpha: three sizes are the fewest that separate A, alpha and E
NEGLIGIBLE_A = 1e-9  # "A = 0" for a frozen constant that must stay positive: A/N^alpha < 1e-9
BASE_NAMES = ChinchillaLaw.param_names


@LAWS.register("recipe")
@dataclass(frozen=True)
class RecipeLaw(ScalingLaw):
    """L = E + A/N^alpha + B/D'^beta with Muennighoff's D' = U + U R_D* (1 - exp(-R/R_D*)).

    The data-constrained law without its excess-parameter discount (R_N*): arms are compared at
    the model sizes a study trains, where R_N* cannot be identified, and at one size the discount
    would make the parameter term change along a learning curve that the base fit (plain N) did
    not see.
    """

    A: float
    B: float
    E: float
    alpha: float
    beta: float
    R_D_star: float

    name: ClassVar[str] = "recipe"
    param_names: ClassVar[tuple[str, ...]] = (*BASE_NAMES, "R_D_star")
    inputs: ClassVar[tuple[str, ...]] = ("N", "D", "U")
    log_scaled: ClassVar[frozenset[str]] = frozenset({"A", "B", "E", "R_D_star"})
    bounds: ClassVar[Mapping[str, tuple[float, float]]] = {
        n: DataConstrainedLaw.bounds[n] for n in param_names}
    default_grid: ClassVar[Mapping[str, tuple[float, ...]]] = {
        n: DataConstrainedLaw.default_grid[n] for n in param_names}

    @staticmethod
    def log_loss(p: Mapping[str, Value], *columns: np.ndarray) -> np.ndarray:
        N, D, U = columns
        return ChinchillaLaw.log_loss(p, N, _repetition_value(np.minimum(U, D), D, p["R_D_star"]))

    def predict(self, N: ArrayLike, D: ArrayLike, U: ArrayLike) -> Value:
        return self._predict(N, D, U)


def token_worth(epochs: float | None, r_d_star: float | None) -> dict[str, float | None]:
    """What R_D* means at an arm's repetition: D'/U, D'/D (one seen token's worth in unique
    tokens) and the ceiling 1 + R_D* that D'/U approaches with endless repetition."""
    if epochs is None or r_d_star is None:
        return {"unique_value": None, "token_value": None, "ceiling": None}
    worth = float(_repetition_value(1.0, epochs, r_d_star))
    return {"unique_value": worth, "token_value": worth / epochs, "ceiling": 1.0 + r_d_star}


def worth_interval(epochs: float | None, ci: Sequence[float] | None) -> list[float] | None:
    """D'/U at the ends of an R_D* interval: D'/U grows with R_D*, so they bound it."""
    if epochs is None or ci is None:
        return None
    return [token_worth(epochs, end)["unique_value"] for end in ci]


@dataclass(frozen=True)
class ArmPoints:
    """One arm's evaluations across a study's trials, as scaling-law inputs."""

    arm: str
    kind: str
    N: np.ndarray
    D: np.ndarray
    U: np.ndarray
    L: np.ndarray
    trial_ids: tuple[int, ...]  # the trial of each point

    @property
    def epochs(self) -> float:
        """The most passes over its unique tokens any trial of this arm made."""
        return float(np.max(self.D / self.U))

    @property
    def repeated(self) -> bool:
        return bool(np.any(self.D > self.U))

    def inputs_hash(self, law: str, options: Mapping[str, Any]) -> str:
        """Identity of a fit: the points (in any order) and how they were fitted."""
        rows = sorted(np.column_stack([self.N, self.D, self.U, self.L]).tolist())
        return stable_hash(law, self.arm, rows, dict(options), length=64)


@dataclass(frozen=True)
class RecipeFit:
    """A fit of one arm: the base (law "chinchilla") for the reference arm, R_D* for the others."""

    points: ArmPoints
    result: FitResult
    inputs_hash: str

    @property
    def r_d_star(self) -> float | None:
        return self.result.constants.get("R_D_star")

    def summary(self) -> dict[str, Any]:
        """The fit's numbers (estimates, intervals, identification) plus what they mean at this
        arm's own repetition."""
        epochs = self.points.epochs
        return {"arm": self.points.arm, **self.result.summary(), "frozen_why": self.result.settings["frozen_why"],
                "epochs": epochs, **token_worth(epochs, self.r_d_star),
                "unique_value_ci": worth_interval(epochs, (self.result.ci or {}).get("R_D_star"))}


@dataclass(frozen=True)
class StudyFits:
    base: RecipeFit | None  # None when every base constant was given
    arms: list[RecipeFit]
    skipped: dict[str, str]  # arm -> why it has no R_D* fit
    n_boot: int  # bootstrap refits behind each fit's intervals (0: none)

    def all(self) -> list[RecipeFit]:
        return ([self.base] if self.base else []) + self.arms


def study_spec(store: Store, study: str) -> Spec:
    """The spec a study was run with, as stored."""
    return parse_spec(store.study(study)["spec_yaml"], file=f"<spec of study {study}>")


def study_points(store: Store, study: str) -> dict[str, ArmPoints]:
    """Each arm's points, its model size taken from the study's spec with the trial's params."""
    spec = study_spec(store, study)
    rows = store.fit_points(study)
    if not rows:
        raise InputError.one(f"study {study!r} has no finished arm with a finite validation loss yet",
                             key="study", hint="let a trial finish (synpro sweep), then fit")
    sizes: dict[int, int] = {}
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        if row["trial_id"] not in sizes:
            try:
                sizes[row["trial_id"]] = spec.with_params(row["params"]).model.non_embedding_params()
            except Exception as exc:  # pydantic ValidationError: the stored params no longer fit the spec
                raise InputError.one(f"trial {row['trial']} of study {study!r} has params {row['params']} "
                                     f"that its stored spec rejects: {exc}", key="params") from None
        grouped.setdefault(row["arm"], []).append(row)
    return {arm: ArmPoints(arm, group[0]["kind"],
                           np.array([sizes[r["trial_id"]] for r in group], dtype=float),
                           np.array([r["tokens"] for r in group], dtype=float),
                           np.array([r["unique_tokens"] for r in group], dtype=float),
                           np.array([r["val_loss"] for r in group], dtype=float),
                           tuple(r["trial_id"] for r in group))
            for arm, group in grouped.items()}


def is_reference(kind: str) -> bool:
    """Whether arms of this kind define effective tokens (the oracle); unknown kinds do not."""
    return kind in ARMS and ARMS.get(kind).is_reference


def _annotated(result: FitResult, why: Mapping[str, str]) -> FitResult:
    """The fit with why each of its frozen constants is frozen."""
    frozen_why = {name: why[name] for name in result.settings["frozen"]}
    return dataclasses.replace(result, settings={**result.settings, "frozen_why": frozen_why})


def _unique_data(points: ArmPoints) -> ArmPoints:
    keep = points.D <= points.U
    return dataclasses.replace(points, N=points.N[keep], D=points.D[keep], U=points.U[keep], L=points.L[keep],
                               trial_ids=tuple(t for t, k in zip(points.trial_ids, keep) if k))


def _fit_base(reference: ArmPoints | None, given: Mapping[str, float], tie_exponents: bool,
              n_boot: int, seed: int) -> tuple[dict[str, float], dict[str, str], RecipeFit | None]:
    """Base constants, why each frozen one is frozen, and the reference arm's fit (if one ran)."""
    frozen = dict(given)
    why = {name: "given" for name in frozen}
    if all(name in frozen for name in BASE_NAMES):
        return frozen, why, None
    if reference is None:
        missing = ", ".join(n for n in BASE_NAMES if n not in frozen)
        raise InputError.one("the study has no reference (oracle) arm to fit the base constants on",
                             key="arm", hint=f"freeze {missing} (--freeze NAME=VALUE)")
    points = _unique_data(reference)
    sizes = len(np.unique(points.N))
    if sizes < MIN_MODEL_SIZES:
        reason = (f"{reference.arm!r} was trained at {sizes} model size(s); separating A, alpha and E "
                  f"needs {MIN_MODEL_SIZES}")
        defaults = {"alpha": (MUENNIGHOFF_C4.alpha, f"{reason}: published value (Muennighoff et al. 2023, C4)"),
                    "A": (NEGLIGIBLE_A, (f"{reason}: A/N^alpha is folded into E, so E is the loss floor "
                                         "of the size(s) trained, not the irreducible loss"))}
        for name, (value, reason_text) in defaults.items():
            if name not in frozen:
                frozen[name], why[name] = value, reason_text
    options = {"frozen": frozen, "tie_exponents": tie_exponents, "n_boot": n_boot, "seed": seed}
    try:
        result = fit_law("chinchilla", points.L, N=points.N, D=points.D, frozen=frozen,
                         tie_exponents=tie_exponents, n_boot=n_boot, seed=seed)
    except InputError as exc:
        exc.hint = (exc.hint + "; " if exc.hint else "") + f"while fitting the base on arm {reference.arm!r}"
        raise
    fit = RecipeFit(points, _annotated(result, why), points.inputs_hash("chinchilla", options))
    base = {name: result.constants[name] for name in BASE_NAMES}
    fitted_why = {name: why.get(name, f"fitted on the unique-data points of arm {reference.arm!r}")
                  for name in BASE_NAMES}
    return base, fitted_why, fit


def _fit_arm(points: ArmPoints, base: Mapping[str, float], why: Mapping[str, str],
             n_boot: int, seed: int) -> RecipeFit:
    options = {"frozen": dict(base), "n_boot": n_boot, "seed": seed}
    result = fit_law(RecipeLaw, points.L, N=points.N, D=points.D, U=points.U, frozen=base,
                     n_boot=n_boot, seed=seed)
    return RecipeFit(points, _annotated(result, why), points.inputs_hash(RecipeLaw.name, options))


def fit_study(store: Store, study: str, *, arm: str | None = None, frozen: Mapping[str, float] | None = None,
              tie_exponents: bool = False, n_boot: int | None = None, seed: int = 0) -> StudyFits:
    """The base fit on the reference arm and R_D* for each other arm (or just `arm`), each with
    `n_boot` bootstrap refits (default: the study spec's `analysis.bootstrap`; 0 skips them)."""
    if n_boot is None:
        n_boot = study_spec(store, study).analysis.bootstrap
    given = dict(frozen or {})
    unknown = sorted(set(given) - set(BASE_NAMES))
    if unknown:
        raise InputError.one(f"a study fit can freeze only the base constants {', '.join(BASE_NAMES)}; "
                             f"got {', '.join(unknown)}", key=unknown[0],
                             hint="R_D_star is what is fitted per arm; these fits do not model R_N_star")
    points = study_points(store, study)
    if arm is not None and arm not in points:
        raise InputError.one(f"study {study!r} has no finished arm named {arm!r}", key="arm",
                             hint=f"its finished arms: {', '.join(points)}")
    reference = next((p for p in points.values() if is_reference(p.kind)), None)
    base, why, base_fit = _fit_base(reference, given, tie_exponents, n_boot, seed)
    fits, skipped = [], {}
    for name, arm_points in points.items():
        if (arm is not None and name != arm) or arm_points is reference:
            continue
        if not arm_points.repeated:
            skipped[name] = "no repeated data (every evaluation saw at most its unique tokens): R_D* is undefined"
            continue
        fits.append(_fit_arm(arm_points, base, why, n_boot, seed))
    if arm is not None and arm in skipped:
        raise InputError.one(f"arm {arm!r}: {skipped[arm]}", key="arm")
    return StudyFits(base_fit, fits, skipped, n_boot)


def save_fits(store: Store, study: str, fits: StudyFits) -> list[int]:
    """Upsert every fit (idempotent: same points, same options, same row); returns their ids."""
    study_id = store.study(study)["id"]
    rows = []
    for fit in fits.all():
        result = fit.result
        rows.append(store.add_fit(
            study_id, arm=fit.points.arm, law=result.law, constants=result.constants, ci=result.ci,
            interval=result.interval, identified={k: v.to_dict() for k, v in result.identified.items()},
            residual_spread=result.residual_spread, points_per_free_constant=result.points_per_free_constant,
            loss=result.loss, n_points=result.n_points, inputs_hash=fit.inputs_hash, settings=result.settings,
            residuals=result.residuals.tolist(), trial_ids=list(fit.points.trial_ids)))
    return rows


def predict(law: str, constants: Mapping[str, float], columns: Mapping[str, ArrayLike]) -> np.ndarray:
    """A stored fit's losses at the law's inputs (any registered law, by name)."""
    cls = LAWS.get(law)
    return np.exp(cls.log_loss(constants, *(np.asarray(columns[name], dtype=float) for name in cls.inputs)))
