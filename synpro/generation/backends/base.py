"""The backend interface: chat prompts in, completions out, in order (every backend implements it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Protocol, Sequence

from synpro.generation.operations.base import Messages
from synpro.spec import Spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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


def completion(tokenizer: "PreTrainedTokenizerBase", stop_ids: Collection[int], ids: Sequence[int]) -> Completion:
    """Generated ids as every backend reports them: text up to the first stop id, which counts as a token."""
    end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
    kept = list(ids if end is None else ids[:end])
    return Completion(text=tokenizer.decode(kept, skip_special_tokens=True), tokens=len(kept) + (end is not None),
                      finished=end is not None)


def stop_ids(folder: Path, tokenizer: "PreTrainedTokenizerBase") -> set[int]:
    """The ids that end an answer of a saved model, as transformers' generate sees them (for backends that load
    from a folder): the generation config's EOS ids
    (the model config's where there is no generation_config.json) and the tokenizer's EOS."""
    from transformers import AutoConfig, GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(str(folder))
    except OSError:
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(folder)))
    stops = config.eos_token_id
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    return set(stops) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def continuation(messages: Messages) -> dict[str, bool]:
    """Chat-template flags: a final assistant message is a prefill the model continues, else a new turn starts."""
    prefill = bool(messages) and messages[-1]["role"] == "assistant"
    return {"add_generation_prompt": not prefill, "continue_final_message": prefill}


def sampling_of(spec: Spec) -> Sampling:
    g = spec.generation.generator
    return Sampling(temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                    seed=spec.experiment.seed)
