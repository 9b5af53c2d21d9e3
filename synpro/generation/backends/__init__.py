"""Generation backends behind one small interface: chat prompts in, completions out, in order.

`auto` takes vLLM when CUDA and vllm are both importable, else transformers; `openai` talks to any
OpenAI-compatible server (a `vllm serve`, say) and must be asked for by name.
"""

from __future__ import annotations

import importlib.util

from synpro.generation.backends.base import Backend, Completion, Sampling, continuation, sampling_of
from synpro.spec import Spec

__all__ = ["Backend", "Completion", "Sampling", "continuation", "make_backend", "resolve_backend", "sampling_of"]


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
