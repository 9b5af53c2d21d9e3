"""What can be known wrong about GRPO training before any work: called from `synpro.resolve` (machine checks)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Sequence

from synpro.errors import InputError, Problem

if TYPE_CHECKING:
    from synpro.spec import Spec


def grpo_problems(spec: "Spec", operations: Sequence[str]) -> list[Problem]:
    """Problems training the generators of `operations` would meet: an operation without rewards, a reward
    that does not apply to it (with its weight's key), a base model that cannot be found offline, LoRA without
    peft, vLLM asked for where it cannot run."""
    from synpro.generation.generator import model_identity
    from synpro.grpo.trainer import base_spec
    from synpro.rewards.scoring import reward_problems, weights_for

    problems = list(reward_problems(spec))
    for op in operations:
        if not weights_for(spec, op):
            problems.append(Problem(f"operation {op!r} has no rewards to train its generator with",
                                    f"rewards.weights.{op}"))
    g = spec.grpo
    try:
        model_identity(base_spec(spec))
    except InputError as exc:
        key = "grpo.base_model" if g.base_model else exc.problems[0].key
        problems.extend(Problem(p.message, key) for p in exc.problems)
    if g.lora is not None and importlib.util.find_spec("peft") is None:
        problems.append(Problem("LoRA needs the peft package (pip install peft)", "grpo.lora"))
    if g.backend == "vllm":
        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
            problems.append(Problem("vLLM generation needs CUDA and the vllm package", "grpo.backend"))
    return problems


def check_grpo(spec: "Spec", operations: Sequence[str]) -> None:
    """InputError listing every grpo_problems() entry, located in the spec file."""
    problems = grpo_problems(spec, operations)
    if problems:
        raise InputError(problems, file=spec.source_file)
