"""The spec's `search:` block in Optuna terms: samplers, distributions and the grid."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import optuna

from synpro.spec import ParamSpec, SearchSpec, Spec


def _grid_values(param: ParamSpec) -> list[Any]:
    """The spec guarantees grid params are categorical or stepped."""
    if param.type == "categorical":
        return list(param.choices)
    values = np.arange(param.low, param.high + param.step / 2, param.step)
    return [int(v) for v in values] if param.type == "int" else [float(v) for v in values]


def grid(search: SearchSpec) -> dict[str, list[Any]]:
    return {name: _grid_values(p) for name, p in search.params.items()}


def n_trials(spec: Spec) -> int:
    """How many trials the spec expands to: the grid size (capped by n_trials), else n_trials or 1."""
    search = spec.search
    if search.sampler == "grid":
        size = len(list(itertools.product(*grid(search).values()))) if search.params else 1
        return min(size, search.n_trials or size)
    return search.n_trials or 1


def grid_points(spec: Spec) -> list[dict[str, Any]]:
    """Every grid point in a stable order ([{}] without params: the spec as written)."""
    values = grid(spec.search)
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


# A grid needs no sampler: every grid point is enqueued as a fixed trial (see synpro.sweep).
SAMPLERS = {"grid": optuna.samplers.RandomSampler, "random": optuna.samplers.RandomSampler,
            "tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}


NSGA2_POPULATION = 50  # Optuna's own default, stated here so an Optuna release cannot move it


def sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    search = spec.search
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.experiment.seed,
                                             population_size=search.population_size or NSGA2_POPULATION)
    return SAMPLERS[search.sampler](seed=spec.experiment.seed)


def suggest(trial: optuna.Trial, search: SearchSpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, p in search.params.items():
        if p.type == "categorical":
            params[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params
