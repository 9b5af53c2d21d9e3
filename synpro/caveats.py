"""What each result rests on, so no number is read for more than it is.

Two caveats are attached to every arm of `Store.results()` rows by `annotate`:

- **synthetic share**: the fraction of the arm's training tokens that were synthetic (`synthetic_share`, 0 for
  repetition and the oracle), the synthetic tokens it saw and each set's own share. An arm meant to train on
  synthetic text whose share is under a floor (`DEFAULT_FLOOR`, `synpro results --synthetic-floor`) is flagged:
  its multiplier is ≈ repetition by construction, not a finding about synthetic data.
- **accuracy at chance**: an accuracy is distinguishable from chance only outside the 95% range a model that
  guesses would land in on the same items (binomial, normal approximation; for an average over tasks, the
  variance of the mean of the tasks' binomials). D_eff by accuracy inverts the reference's accuracy curve and the
  multiplier by accuracy also divides by repetition's, so each is kept only where every curve it rests on is off
  chance; otherwise it is null and `accuracy_caveat` says why. Where both D_eff by accuracy exist but the tail
  multiplier could not be formed (too few scored snapshots), their ratio at the last snapshot is given.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

DEFAULT_FLOOR = 0.01  # below 1% synthetic tokens an arm is repetition in all but name
NO_SYNTHETIC = ("repetition", "oracle")  # kinds that train on organic text only, by definition
Z95 = 1.959963984540054
BY_CONSTRUCTION = "≈ repetition by construction"
AT_CHANCE = "at chance"


def chance_range(chance: Mapping[str, float], items: Mapping[str, int]) -> tuple[float, float] | None:
    """The 95% range of the average accuracy of a model that guesses, on these tasks' item counts
    (None when a task's chance level or item count is unknown)."""
    tasks = list(chance)
    if not tasks or any(chance.get(t) is None or not items.get(t) for t in tasks):
        return None
    mean = sum(chance[t] for t in tasks) / len(tasks)
    sd = math.sqrt(sum(chance[t] * (1 - chance[t]) / items[t] for t in tasks)) / len(tasks)
    return max(0.0, mean - Z95 * sd), min(1.0, mean + Z95 * sd)


def at_chance(accuracy: float | None, band: tuple[float, float] | None) -> bool | None:
    """Whether an accuracy is inside chance's 95% range (None: no accuracy or no range to judge by)."""
    if accuracy is None or band is None:
        return None
    return band[0] <= accuracy <= band[1]


def spec_accuracy_basis(spec_yaml: str | None) -> dict[str, Any]:
    """Chance levels and item counts from a stored spec, for arms stored before their evaluations
    recorded them: the builtin cloze task's choices and items (an upper bound: the builder may cut
    fewer); lm-eval tasks stay unknown."""
    if not spec_yaml:
        return {}
    from synpro.evaluation import BUILTIN_TASKS
    from synpro.spec import parse_spec

    try:
        spec = parse_spec(spec_yaml)
    except Exception:  # noqa: BLE001 - a spec this version no longer parses: judge nothing rather than fail
        return {}
    builtin = [t.name for t in spec.eval.tasks if t.name in BUILTIN_TASKS]
    if len(builtin) != len(spec.eval.tasks) or not builtin:
        return {}
    items = min(spec.eval.builtin.items, spec.eval.limit or spec.eval.builtin.items)
    return {"chance": {t: 1 / spec.eval.builtin.choices for t in builtin}, "items": {t: items for t in builtin},
            "from": "spec (item count an upper bound)"}


def _basis(arm: dict[str, Any], fallback: Mapping[str, Any]) -> dict[str, Any]:
    """An arm's chance levels and item counts: recorded with its evaluations (a task whose chance level
    could not be read takes the spec's), else the spec's."""
    for seed in arm.get("per_seed", {}).values():
        if seed.get("accuracy_items") and seed.get("accuracy_chance"):
            chance = {t: c if c is not None else fallback.get("chance", {}).get(t)
                      for t, c in seed["accuracy_chance"].items()}
            return {"chance": chance, "items": seed["accuracy_items"], "from": "evaluation"}
    return dict(fallback)


def _synthetic(arm: dict[str, Any], floor: float) -> None:
    """`synthetic_share` on every arm, each set's share of the tokens seen, and the floor flag."""
    baseline = arm.get("kind") in NO_SYNTHETIC
    if arm.get("synthetic_share") is None and baseline:
        arm["synthetic_share"], arm["synthetic_tokens"] = 0.0, 0
    seeds = [s for s in arm.get("per_seed", {}).values() if s.get("synthetic_sets")]
    sets: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for name, made in seed["synthetic_sets"].items():
            row = sets.setdefault(name, {"operation": made.get("operation"), "tokens_seen": 0.0})
            row["tokens_seen"] += made.get("tokens_seen", 0) / len(seeds)
    for row in sets.values():
        row["share"] = row["tokens_seen"] / arm["tokens_seen"] if arm.get("tokens_seen") else None
    arm["synthetic_set_shares"] = sets
    share = arm.get("synthetic_share")
    arm["synthetic_below_floor"] = (not baseline and share is not None and share < floor)


def _accuracy(trial: dict[str, Any], fallback: Mapping[str, Any]) -> None:
    """Judge every arm's final accuracy against chance and keep only the accuracy figures that rest on
    curves off chance."""
    arms = trial["arms"]
    for arm in arms.values():
        basis = _basis(arm, fallback)
        band = chance_range(basis.get("chance", {}), basis.get("items", {}))
        arm["accuracy_chance_range"] = list(band) if band else None
        arm["accuracy_basis"] = basis or None
        arm["accuracy_at_chance"] = at_chance(arm.get("final_accuracy"), band)
    reference = (trial.get("reference") or {}).get("arm")
    repetition = next((n for n, a in arms.items() if a.get("kind") == "repetition"), None)
    for arm in arms.values():
        if arm.get("final_accuracy") is None:
            arm["accuracy_caveat"] = None
            continue
        caveat = AT_CHANCE if arm["accuracy_at_chance"] else None
        if caveat is None and reference in arms and arms[reference]["accuracy_at_chance"]:
            caveat = f"reference {reference} {AT_CHANCE}"
        arm["accuracy_caveat"] = caveat
        if caveat is not None:
            arm["effective_tokens_accuracy"] = arm["multiplier_accuracy"] = None
    base = arms.get(repetition) if repetition else None
    for arm in arms.values():
        if arm["accuracy_caveat"] is not None or base is None:
            continue
        if base.get("accuracy_caveat") is not None:
            arm["multiplier_accuracy"] = None
            arm["multiplier_accuracy_caveat"] = f"repetition {AT_CHANCE}"
        elif arm.get("multiplier_accuracy") is None:
            mine, theirs = arm.get("effective_tokens_accuracy"), base.get("effective_tokens_accuracy")
            if mine is not None and theirs and math.isfinite(mine) and math.isfinite(theirs):
                arm["multiplier_accuracy"] = mine / theirs
                arm["multiplier_accuracy_method"] = "ratio of D_eff by accuracy at the last scored snapshot"


def annotate(trials: list[dict[str, Any]], *, floor: float = DEFAULT_FLOOR,
             spec_yaml: Mapping[str, str | None] | None = None) -> list[dict[str, Any]]:
    """Add the caveats to `Store.results()` rows in place (and return them). `spec_yaml`: study -> its
    stored spec, the fallback for chance levels of arms stored before evaluations recorded them."""
    fallbacks = {study: spec_accuracy_basis(text) for study, text in (spec_yaml or {}).items()}
    for trial in trials:
        for arm in trial["arms"].values():
            _synthetic(arm, floor)
        _accuracy(trial, fallbacks.get(trial.get("study"), {}))
        trial["synthetic_floor"] = floor
    return trials


def warning_lines(trials: list[dict[str, Any]]) -> list[str]:
    """One line per flagged arm, for under a table."""
    lines = []
    for trial in trials:
        floor = trial.get("synthetic_floor", DEFAULT_FLOOR)
        for name, arm in trial["arms"].items():
            where = f"trial {trial['trial']} {name}"
            if arm.get("synthetic_below_floor"):
                lines.append(f"{where}: synthetic share {percent(arm['synthetic_share'])} "
                             f"({arm.get('synthetic_tokens') or 0:,.0f} tokens) is under the floor {percent(floor)}: "
                             f"its multiplier is {BY_CONSTRUCTION}")
            if arm.get("accuracy_caveat"):
                band = arm.get("accuracy_chance_range")
                rng = f" (chance's 95% range {band[0]:.3f}-{band[1]:.3f})" if band else ""
                lines.append(f"{where}: accuracy {arm['final_accuracy']:.3f}{rng}: {arm['accuracy_caveat']}, "
                             "so no effective tokens or multiplier by accuracy")
    return lines


def set_shares(arm: dict[str, Any]) -> str:
    """Each synthetic set's share of the arm's tokens, e.g. 'rephrase 0.19%, rephrase-r1 0.02%' ('-': none)."""
    return ", ".join(f"{name} {percent(row['share'])}" for name, row in arm.get("synthetic_set_shares", {}).items()) or "-"


def percent(share: float | None) -> str:
    """A share as a percentage with enough digits to tell a small share from none."""
    if share is None:
        return "-"
    if share == 0:
        return "0%"
    return f"{share:.2%}" if share >= 0.0001 else f"{share:.1e}"
