"""LLM judges: a prompt with named slots in, a number out (the score regex's first group).

A judge is an HF model (id already in the local cache, or a folder) run greedily with transformers in batches
of `batch_size`, or a model behind an OpenAI-compatible endpoint (a `vllm serve` per judge) reached with up
to `concurrency` requests in flight, so a GRPO step's hundreds of verdicts cost a few round trips rather than
one each. A request that fails transiently (connection, timeout, 408/409/429/5xx) is retried with exponential
backoff; one still failing after `max_retries` stops the run naming the judge. An answer the regex does not
match gives None: the reward counts it (`Reward.failures`) and never turns it into a score.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING

from synpro.errors import InputError

if TYPE_CHECKING:
    from synpro.spec import JudgeSpec

TRANSIENT_STATUS = frozenset({408, 409, 429})  # and every 5xx


class Judge:
    def __init__(self, spec: "JudgeSpec", key: str):
        self.spec, self.key = spec, key
        self.pattern = re.compile(spec.score_regex)
        self.requests = self.retries = self.unparseable = 0  # since this judge was loaded (per process)
        self._lock = threading.Lock()
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
        cut = self.spec.slot_chars or {}
        prompts = [_fill(self.spec.prompt, {k: v[i][:cut.get(k)] for k, v in slots.items()}) for i in range(n)]
        scores = [self.parse(a) for a in self.answers(prompts)]
        with self._lock:
            self.unparseable += sum(s is None for s in scores)
        return scores

    def parse(self, answer: str) -> float | None:
        found = self.pattern.search(answer)
        if not found:
            return None
        try:
            return float(found.group(1) if found.groups() else found.group(0))
        except ValueError:
            return None

    def answers(self, prompts: list[str]) -> list[str]:
        """The judge's raw answers, in order."""
        if not prompts:
            return []
        if self.spec.endpoint:
            with ThreadPoolExecutor(max_workers=min(self.spec.concurrency, len(prompts))) as pool:
                return list(pool.map(self._request, prompts))
        size = self.spec.batch_size
        return [a for i in range(0, len(prompts), size) for a in self._generate(prompts[i:i + size])]

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "unparseable": self.unparseable}

    def _request(self, prompt: str) -> str:
        for attempt in range(self.spec.max_retries + 1):
            with self._lock:
                self.requests += 1
            try:
                reply = self.client.chat.completions.create(model=self.spec.model, temperature=0,
                                                            max_tokens=self.spec.max_new_tokens,
                                                            messages=[{"role": "user", "content": prompt}])
                return reply.choices[0].message.content or ""
            except Exception as exc:  # noqa: BLE001 - sorted into transient and not below
                if not _transient(exc) or attempt == self.spec.max_retries:
                    raise InputError.one(
                        f"the judge {self.spec.model} at {self.spec.endpoint} failed"
                        f"{f' after {attempt} retries' if attempt else ''}: {exc}", key=f"{self.key}.endpoint",
                        hint="check the judge server's log; a finished stage step is kept, run again to resume"
                    ) from None
            with self._lock:
                self.retries += 1
            time.sleep(self.spec.backoff_seconds * 2 ** attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _generate(self, prompts: list[str]) -> list[str]:
        """One greedy batch through the local model, left-padded so every answer starts at the same column."""
        import torch

        tok = self.tokenizer
        if tok.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=False) for p in prompts]
        else:
            texts = prompts
        tok.padding_side = "left"
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not tok.chat_template)
        with self._lock:
            self.requests += len(prompts)
        with torch.inference_mode():
            out = self.model.generate(**batch.to(self.model.device), max_new_tokens=self.spec.max_new_tokens,
                                      do_sample=False, pad_token_id=tok.pad_token_id)
        width = batch["input_ids"].shape[1]
        return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def _transient(exc: Exception) -> bool:
    """Worth retrying: the server was unreachable, slow, busy or broke; not a request it refused."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, openai.APIStatusError) and (status in TRANSIENT_STATUS or status >= 500)


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

    # Retries are ours (counted, with the spec's backoff); the pool holds `concurrency` connections.
    return OpenAI(base_url=endpoint, api_key=os.environ.get(api_key_env, "EMPTY"), timeout=timeout, max_retries=0)


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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tokenizer, lm.to(device).eval()
