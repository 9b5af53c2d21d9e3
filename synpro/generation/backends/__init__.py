"""Generation backends behind one small interface: chat prompts in, completions out, in order.

`auto` takes vLLM when CUDA and vllm are both importable; on a CPU-only machine, SynPro's own
continuous-batching decoder (`continuous`, the fastest measured on CPU: benchmarks/generation_throughput.py)
for the Llama-family models it implements, else CTranslate2 (int8) when it is importable, else
transformers. `openai` talks to any OpenAI-compatible server (a `vllm
serve`, say) and must be asked for by name. Backends sample differently, so a set's key names the
backend that made it (`set_identity`).
"""

from __future__ import annotations

import importlib.util

from synpro.generation.backends.base import Backend, Completion, Sampling, continuation, sampling_of
from synpro.spec import Spec

__all__ = ["Backend", "Completion", "Sampling", "continuation", "make_backend", "resolve_backend", "sampling_of",
           "set_identity"]


def resolve_backend(spec: Spec) -> str:
    choice = spec.generation.generator.backend
    if choice != "auto":
        return choice
    import torch

    if torch.cuda.is_available():  # CTranslate2 runs on the CPU only here: transformers' bf16 on the GPU beats it
        return "vllm" if importlib.util.find_spec("vllm") else "transformers"
    from synpro.generation.backends.continuous_backend import implements

    if implements(spec):
        return "continuous"
    return "ctranslate2" if importlib.util.find_spec("ctranslate2") else "transformers"


def set_identity(spec: Spec) -> str | None:
    """What a set's key records of the backend that makes it: None for transformers (so sets keyed before
    backends entered the key keep their keys) and openai (the served model's name already says it), else
    the resolved backend, with CTranslate2's quantization or the continuous decoder's precision."""
    kind = resolve_backend(spec)
    if kind in ("transformers", "openai"):
        return None
    if kind == "ctranslate2":
        from synpro.generation.backends.ctranslate2_backend import QUANTIZATION

        return f"ctranslate2-{QUANTIZATION}"
    if kind == "continuous":
        from synpro.generation.backends.continuous_backend import precision_for_cpu

        return f"continuous-{precision_for_cpu()}"
    return kind


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

        engine = {k: getattr(g, k) for k in ("gpu_memory_utilization", "max_num_seqs", "enable_prefix_caching")
                  if getattr(g, k) is not None}
        return VllmBackend(folder, g.batch_size, engine)
    if kind == "ctranslate2":
        from synpro.generation.backends.ctranslate2_backend import CTranslate2Backend

        return CTranslate2Backend.load(folder, g.batch_size, spec=spec)
    if kind == "continuous":
        from synpro.generation.backends.continuous_backend import ContinuousBackend

        return ContinuousBackend.load(folder, g.batch_size, spec=spec)
    from synpro.generation.backends.transformers_backend import TransformersBackend

    return TransformersBackend.load(folder, g.batch_size, spec=spec)
