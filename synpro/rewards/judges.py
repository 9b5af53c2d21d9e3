"""LLM judges: a prompt with named slots in, a number out (the score regex's first group).

A judge is an HF model (id already in the local cache, or a folder) run greedily with transformers, or a
model behind an OpenAI-compatible endpoint. An answer the regex does not match gives None: the caller
counts it and never turns it into a score.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import TYPE_CHECKING

from synpro.errors import InputError

if TYPE_CHECKING:
    from synpro.spec import JudgeSpec


class Judge:
    def __init__(self, spec: "JudgeSpec", key: str):
        self.spec, self.key = spec, key
        self.pattern = re.compile(spec.score_regex)
        if spec.endpoint:
            self.client = _client(spec.endpoint, spec.api_key_env, spec.timeout_seconds)
            try:
                self.client.models.list()
            except Exception as exc:  # noqa: BLE001 - connection refused, auth, timeouts: all user-fixable
                raise InputError.one(f"the judge endpoint {spec.endpoint} cannot be reached: {exc}",
                                     key=f"{key}.endpoint", hint="start the server or fix the URL") from None
        else:
            self.tokenizer, self.model = _load(spec.model, key)

    def rate(self, **slots: list[str]) -> list[float | None]:
        """One score per position of the slot lists (all the same length), None when unparseable."""
        n = len(next(iter(slots.values())))
        prompts = [_fill(self.spec.prompt, {k: v[i] for k, v in slots.items()}) for i in range(n)]
        return [self.parse(self._answer(p)) for p in prompts]

    def parse(self, answer: str) -> float | None:
        found = self.pattern.search(answer)
        if not found:
            return None
        try:
            return float(found.group(1) if found.groups() else found.group(0))
        except ValueError:
            return None

    def _answer(self, prompt: str) -> str:
        if self.spec.endpoint:
            reply = self.client.chat.completions.create(model=self.spec.model, temperature=0,
                                                        max_tokens=self.spec.max_new_tokens,
                                                        messages=[{"role": "user", "content": prompt}])
            return reply.choices[0].message.content or ""
        import torch

        tok = self.tokenizer
        if tok.chat_template:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = self.model.generate(ids.to(self.model.device), max_new_tokens=self.spec.max_new_tokens,
                                      do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def judge_for(spec: "JudgeSpec", key: str) -> Judge:
    return _judge(spec.model_dump_json(), key)


@cache  # one loaded judge per process and settings
def _judge(spec_json: str, key: str) -> Judge:
    from synpro.spec import JudgeSpec

    return Judge(JudgeSpec.model_validate_json(spec_json), key)


def _fill(template: str, slots: dict[str, str]) -> str:
    """Slots by plain replacement: texts are full of braces that str.format would read."""
    for name, value in slots.items():
        template = template.replace("{" + name + "}", value)
    return template


def _client(endpoint: str, api_key_env: str, timeout: float):
    from openai import OpenAI

    return OpenAI(base_url=endpoint, api_key=os.environ.get(api_key_env, "EMPTY"), timeout=timeout, max_retries=1)


def _load(model: str, key: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError.one(f"cannot load the judge model {model!r}: {exc}", key=f"{key}.model",
                             hint="give a local model folder or an HF id already in the cache (this machine may "
                                  "be offline), or an OpenAI-compatible `endpoint`") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tokenizer, lm.to(device).eval()
