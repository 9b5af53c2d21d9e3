"""Generation backends behind one small interface: chat prompts in, completions out, in order.

`auto` takes vLLM when CUDA and vllm are both importable, else transformers; `openai` talks to any
OpenAI-compatible server (a `vllm serve`, say) and must be asked for by name.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Protocol, Sequence

from synpro.generation.operations.base import Messages
from synpro.spec import Spec


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 0.9
    max_new_tokens: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, in the generator's tokenizer
    finished: bool  # ended on its own, not cut off by max_new_tokens


class Backend(Protocol):
    name: str
    batch_size: int  # prompts worth handing over per call; a crash loses at most one call's work

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]: ...

    def close(self) -> None: ...


def continuation(messages: Messages) -> dict[str, bool]:
    """Chat-template flags: a final assistant message is a prefill the model continues, else a new turn starts."""
    prefill = bool(messages) and messages[-1]["role"] == "assistant"
    return {"add_generation_prompt": not prefill, "continue_final_message": prefill}


def sampling_of(spec: Spec) -> Sampling:
    g = spec.generation.generator
    return Sampling(temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                    seed=spec.experiment.seed)


def resolve_backend(spec: Spec) -> str:
    choice = spec.generation.generator.backend
    if choice != "auto":
        return choice
    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"


def make_backend(spec: Spec) -> Backend:
    """The spec's backend, loaded and ready; InputError when its model or endpoint cannot be used."""
    kind = resolve_backend(spec)
    g = spec.generation.generator
    if kind == "openai":
        from synpro.generation.backends.openai_backend import OpenAIBackend

        return OpenAIBackend.connect(spec)
    from synpro.generation.generator import model_folder

    folder = model_folder(spec)
    if kind == "vllm":
        from synpro.generation.backends.vllm_backend import VllmBackend

        return VllmBackend(folder, g.batch_size)
    from synpro.generation.backends.transformers_backend import TransformersBackend

    return TransformersBackend.load(folder, g.batch_size, spec=spec)
