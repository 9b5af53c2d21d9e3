"""Rewards from a spec: which rewards an operation gets with which weights, building them, and scoring
(source, output) pairs outside GRPO with the same callables GRPO uses.

An operation named in `rewards.weights` gets exactly the rewards listed there; any other operation gets the
paper's weights for its kind (none for a kind the paper does not have).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from synpro.errors import InputError, Problem
from synpro.rewards.base import REWARDS, Reward
from synpro.spec import PAPER_REWARD_WEIGHTS

if TYPE_CHECKING:
    from synpro.generation.operations.base import Operation
    from synpro.influence.service import InfluenceSource
    from synpro.spec import Spec


def operation_of(spec: "Spec", name: str) -> "Operation":
    """The configured operation called name in generation.operations (or a built-in kind of that name)."""
    from synpro.generation.operations import OPERATIONS

    op_spec = spec.generation.operations.get(name)
    if op_spec is None:
        if name not in OPERATIONS:
            raise InputError.one(f"unknown operation {name!r}; the spec has {', '.join(spec.generation.operations)}",
                                 file=spec.source_file, key="--operation")
        return OPERATIONS.get(name)
    return OPERATIONS.get(op_spec.kind).configured(op_spec)


def weights_for(spec: "Spec", operation: str) -> dict[str, float]:
    if operation in spec.rewards.weights:
        return dict(spec.rewards.weights[operation])
    op_spec = spec.generation.operations.get(operation)
    return dict(PAPER_REWARD_WEIGHTS.get(op_spec.kind if op_spec else operation, {}))


def reward_problems(spec: "Spec") -> list[Problem]:
    """Unknown reward names, weights for rewards an operation lacks, weights for operations the spec does not
    have: what spec validation should report (no heavy import, nothing loaded)."""
    problems = []
    for op_name, weights in spec.rewards.weights.items():
        op_spec = spec.generation.operations.get(op_name)
        if op_spec is None:
            problems.append(Problem(f"{op_name!r} is not in generation.operations "
                                    f"({', '.join(spec.generation.operations)})", f"rewards.weights.{op_name}"))
            continue
        for reward in weights:
            key = f"rewards.weights.{op_name}.{reward}"
            if reward not in REWARDS:
                problems.append(Problem(f"unknown reward {reward!r}; known: {', '.join(REWARDS.names())}", key))
            elif (kinds := REWARDS.get(reward).kinds) is not None and op_spec.kind not in kinds:
                problems.append(Problem(f"reward {reward!r} does not apply to a {op_spec.kind} operation "
                                        f"(only {', '.join(sorted(kinds))}); remove its weight", key))
    for name in ("quality", "structure", "faithfulness"):
        judge = getattr(spec.rewards, name).judge
        slots = {"quality": ["{text}"], "structure": ["{source}", "{output}"], "faithfulness": ["{source}", "{entry}"]}
        if judge and getattr(spec.rewards, name).scorer == "llm":
            missing = [s for s in slots[name] if s not in judge.prompt]
            if missing:
                problems.append(Problem(f"the judge prompt has no {', '.join(missing)} slot",
                                        f"rewards.{name}.judge.prompt"))
    return problems


def check_reward_spec(spec: "Spec") -> None:
    """InputError listing every reward_problems() entry, located in the spec file."""
    problems = reward_problems(spec)
    if problems:
        raise InputError(problems, file=spec.source_file)


def build_rewards(spec: "Spec", operation: str, *, names: Sequence[str] | None = None,
                  influence: "InfluenceSource | None" = None, check: bool = True) -> tuple[list[Reward], list[float]]:
    """The operation's reward callables and their weights, in the same order (trl's reward_funcs and
    reward_weights). `names` narrows the set; `check` loads judges and models now so failures come first."""
    check_reward_spec(spec)
    op = operation_of(spec, operation)
    weights = weights_for(spec, operation)
    for name in names or []:
        if name not in REWARDS:
            raise InputError.one(f"unknown reward {name!r}; known: {', '.join(REWARDS.names())}", key="--rewards")
        if name not in weights:
            raise InputError.one(f"operation {operation!r} has no {name!r} reward (it has {', '.join(weights)})",
                                 key="--rewards", hint=f"give it a weight under rewards.weights.{operation} in the spec")
    chosen = [n for n in weights if names is None or n in names]
    rewards = [REWARDS.get(n)(spec, op, influence) for n in chosen]
    if check:
        for reward in rewards:
            reward.check()
    return rewards, [weights[n] for n in chosen]


def score_pairs(sources: Sequence[str], outputs: Sequence[str], rewards: Sequence[Reward],
                weights: Sequence[float]) -> list[dict[str, float]]:
    """Per pair: every reward's value under its name and the weighted `total`. outputs are full answers."""
    values = {r.__name__: r(list(outputs), source=list(sources)) for r in rewards}
    rows = []
    for i in range(len(sources)):
        row = {name: v[i] for name, v in values.items()}
        row["total"] = sum(w * row[r.__name__] for r, w in zip(rewards, weights))
        rows.append(row)
    return rows


def reward_settings(rewards: Sequence[Reward], weights: Sequence[float]) -> dict[str, dict]:
    """Each reward's weight, version and settings: for the stage manifest and (flattened) MLflow params."""
    return {r.__name__: {"weight": w, **r.settings()} for r, w in zip(rewards, weights)}
