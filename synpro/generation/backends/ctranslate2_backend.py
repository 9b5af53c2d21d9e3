"""CPU generation with CTranslate2: int8 weights, batches that drop their finished rows.

The HF folder is converted once into the SynPro cache (`ctranslate2/<fingerprint>-<quantization>`,
written to a temporary folder and renamed), so a GRPO-trained generator gets its own copy. Prompts go
through the folder's own chat template and tokenizer exactly as in the transformers backend; the same
stop ids end an answer, and sampling is the same: temperature, top-p over the full vocabulary, greedy
at temperature 0.

Seeding: CTranslate2 seeds each worker thread's random generator once, from the global seed, when
the thread first samples, so every call builds a fresh `Generator` (a quarter second for a 135M model)
right after `set_random_seed`: the same prompts and seed give the same outputs at one thread count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from synpro.errors import InputError
from synpro.generation.backends.base import Completion, Sampling, completion, continuation, stop_ids
from synpro.generation.operations.base import Messages

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from synpro.spec import Spec

QUANTIZATION = "int8"  # measured fastest on AVX-512 CPUs (see benchmarks/generation_throughput.py)
# CT2 drops finished rows, so its batches can be wider than the spec's batch_size (sized for the transformers
# backend, whose rows all wait for the longest): 16 rows decoded 1.3x faster than 8 here (SmolLM2-135M, one
# thread). A call hands over 4 spec batches' prompts; CT2 sorts them by length before cutting its batches.
ROWS_PER_SLOT = 2
PROMPTS_PER_SLOT = 4
_LOAD_ERRORS = (OSError, ValueError, KeyError, NotImplementedError, RuntimeError)


def _input_error(message: str, spec: "Spec | None", hint: str | None = None) -> InputError:
    return InputError.one(message, file=spec.source_file if spec else None, key="generation.generator.model",
                          hint=hint)


def converted(folder: Path, quantization: str = QUANTIZATION, spec: "Spec | None" = None) -> Path:
    """The CTranslate2 copy of an HF folder, converted on first use; keyed by the folder's weights."""
    from synpro.core.fs import atomic_dir, cache_root, dir_lock
    from synpro.generation.generator import fingerprint

    target = cache_root() / "ctranslate2" / f"{fingerprint(folder)}-{quantization}"
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(target):  # two processes converting at once: one converts, the other reuses its copy
        if not (target / "model.bin").is_file():
            from ctranslate2.converters import TransformersConverter

            try:
                with atomic_dir(target) as tmp:
                    TransformersConverter(str(folder)).convert(str(tmp), quantization=quantization, force=True)
                    _name_bos(tmp / "config.json")
            except _LOAD_ERRORS as exc:
                raise _input_error(f"cannot convert the generator at {folder} for CTranslate2: {exc}", spec,
                                   hint="use an HF causal-LM folder of an architecture CTranslate2 supports "
                                        "(Llama, Qwen, Mistral, GPT-2, ...), or backend: transformers") from None
    return target


def _name_bos(config: Path) -> None:
    """CTranslate2 refuses a model config whose bos_token is null (a model without BOS); prompts come
    whole from the chat template, so no BOS is ever added and the EOS token can stand in."""
    import json

    settings = json.loads(config.read_text())
    if settings.get("bos_token") is None:
        config.write_text(json.dumps({**settings, "bos_token": settings["eos_token"]}, indent=2))


class CTranslate2Backend:
    name = "ctranslate2"

    def __init__(self, model_dir: Path, tokenizer: "PreTrainedTokenizerBase", stops: set[int], batch_size: int, *,
                 compute_type: str = QUANTIZATION, threads: int | None = None):
        import torch

        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.stop_ids = stops
        self.max_batch_size = batch_size * ROWS_PER_SLOT  # rows decoded together
        self.batch_size = batch_size * PROMPTS_PER_SLOT  # prompts per call: a crash loses at most these
        self.compute_type = compute_type
        self.threads = threads or torch.get_num_threads()

    @classmethod
    def load(cls, folder: Path, batch_size: int, spec: "Spec | None" = None, *,
             quantization: str = QUANTIZATION) -> "CTranslate2Backend":
        """From an HF folder (converted once); InputError naming the spec key if it cannot load."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            stops = stop_ids(folder, tokenizer)
        except _LOAD_ERRORS as exc:
            raise _input_error(f"cannot load generator from {folder}: {exc}", spec,
                               hint="give an HF causal-LM folder (config.json, weights and tokenizer)") from None
        if tokenizer.chat_template is None:
            raise _input_error(f"the generator at {folder} has no chat template; use an instruct model", spec)
        return cls(converted(folder, quantization, spec), tokenizer, stops, batch_size, compute_type=quantization)

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        """All prompts in one call: CT2 sorts them by length into batches of max_batch_size and drops a
        row from its batch as soon as it ends."""
        import ctranslate2

        if not prompts:
            return []
        tokens = [self.tokenizer.convert_ids_to_tokens(
            self.tokenizer.apply_chat_template(p, tokenize=True, return_dict=False, **continuation(p)))
            for p in prompts]
        sample = sampling.temperature > 0
        ctranslate2.set_random_seed(sampling.seed)
        generator = ctranslate2.Generator(str(self.model_dir), device="cpu", compute_type=self.compute_type,
                                          intra_threads=self.threads, inter_threads=1)
        try:
            results = generator.generate_batch(
                tokens, max_batch_size=self.max_batch_size, max_length=sampling.max_new_tokens,
                include_prompt_in_result=False, end_token=sorted(self.stop_ids), return_end_token=True,
                sampling_topk=0 if sample else 1, sampling_topp=sampling.top_p if sample else 1.0,
                sampling_temperature=sampling.temperature if sample else 1.0)
        finally:
            del generator
        return [completion(self.tokenizer, self.stop_ids, r.sequences_ids[0]) for r in results]

    def close(self) -> None:
        """Nothing to release: each call's generator goes when the call ends."""
