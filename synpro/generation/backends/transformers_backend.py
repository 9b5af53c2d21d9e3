"""Batched generation with transformers: left padding, length-sorted batches, CUDA bf16 or CPU fp32."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from synpro.errors import InputError
from synpro.generation.backends.base import Completion, Sampling, completion, continuation
from synpro.generation.operations.base import Messages

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from synpro.spec import Spec


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", batch_size: int):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:  # padding is masked out; any id will do
            tokenizer.pad_token = tokenizer.eos_token
        stops = model.generation_config.eos_token_id
        stops = [stops] if isinstance(stops, int) else list(stops or [])
        self.stop_ids = set(stops) | {tokenizer.eos_token_id}

    @classmethod
    def load(cls, folder: Path, batch_size: int, spec: "Spec | None" = None) -> "TransformersBackend":
        """From an HF folder; bf16 on CUDA, fp32 on CPU (threads as torch is set). InputError naming the
        spec key if it cannot load."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError.one(f"cannot load generator from {folder}: {exc}",
                                 file=spec.source_file if spec else None, key="generation.generator.model",
                                 hint="give an HF causal-LM folder (config.json, weights and tokenizer)") from None
        if tokenizer.chat_template is None:
            raise InputError.one(f"the generator at {folder} has no chat template; use an instruct model",
                                 file=spec.source_file if spec else None, key="generation.generator.model")
        return cls(model, tokenizer, batch_size)

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        """Longest prompts first, so similar lengths share a batch and padding stays small."""
        encoded = [self.tokenizer.apply_chat_template(p, tokenize=True, return_dict=False, **continuation(p))
                   for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        config = self._config(sampling)
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():  # seeded, caller's RNG untouched
            torch.manual_seed(sampling.seed)
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding_side="left",
                                           return_tensors="pt").to(self.model.device)
                out = self.model.generate(**batch, generation_config=config)
                for i, new in zip(rows, out[:, batch["input_ids"].shape[1]:].tolist()):
                    results[i] = completion(self.tokenizer, self.stop_ids, new)
        return results  # type: ignore[return-value]  (every slot is filled)

    def close(self) -> None:
        """Nothing to release: the model goes with the object."""

    def _config(self, sampling: Sampling):
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        return GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=sample,
                                temperature=sampling.temperature if sample else None,
                                top_p=sampling.top_p if sample else None, top_k=None,
                                eos_token_id=sorted(self.stop_ids), pad_token_id=self.tokenizer.pad_token_id)
