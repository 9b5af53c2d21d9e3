"""Any OpenAI-compatible chat endpoint (e.g. `vllm serve`), with bounded concurrency.

An answer prefill (a final assistant message) is sent with vLLM's `continue_final_message` and
`add_generation_prompt` request fields; for servers without them, set the operation's
`prefill_heading: false`. The `openai` client retries connection errors, 408/429 and 5xx with exponential backoff up to
`max_retries` times; what still fails is reported as the user's problem (InputError): a server
that is down, a wrong key, a model the server does not serve.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Sequence

from synpro.errors import InputError
from synpro.generation.backends.base import Completion, Sampling, continuation
from synpro.generation.operations.base import Messages

if TYPE_CHECKING:
    import openai

    from synpro.spec import Spec

ENDPOINT_KEY = "generation.generator.endpoint"


class OpenAIBackend:
    name = "openai"

    def __init__(self, client: "openai.OpenAI", model: str, concurrency: int, source_file: str | None = None):
        self.client = client
        self.model = model
        self.batch_size = concurrency  # one request per worker in flight
        self.source_file = source_file

    @classmethod
    def connect(cls, spec: "Spec") -> "OpenAIBackend":
        """A client for the spec's endpoint, checked to answer (listing its models) before any work starts."""
        import openai

        g = spec.generation.generator
        client = openai.OpenAI(base_url=g.endpoint, api_key=os.environ.get(g.api_key_env) or "none",
                               timeout=g.timeout_seconds, max_retries=g.max_retries)
        backend = cls(client, g.model, g.concurrency, spec.source_file)
        served = backend._call(lambda: [m.id for m in client.models.list()])
        if served and g.model not in served:
            raise InputError.one(f"the endpoint {g.endpoint} does not serve {g.model!r} (it serves: "
                                 f"{', '.join(served)})", file=spec.source_file, key="generation.generator.model")
        return backend

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            return list(pool.map(lambda p: self._call(lambda: self._complete(p, sampling)), prompts))

    def close(self) -> None:
        self.client.close()

    def _complete(self, messages: Messages, sampling: Sampling) -> Completion:
        reply = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
            temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            extra_body=continuation(messages) if messages[-1]["role"] == "assistant" else None)
        choice = reply.choices[0]
        text = choice.message.content or ""
        tokens = reply.usage.completion_tokens if reply.usage else len(text.split())
        return Completion(text=text, tokens=tokens, finished=choice.finish_reason != "length")

    def _call(self, fn):
        """Run one request; the client's exhausted retries become a one-screen InputError."""
        import openai

        url = str(self.client.base_url)
        try:
            return fn()
        except openai.APIConnectionError as exc:
            raise InputError.one(f"the generation endpoint {url} does not answer ({type(exc).__name__}, after "
                                 f"{self.client.max_retries} retries)", file=self.source_file, key=ENDPOINT_KEY,
                                 hint="start the server (e.g. `vllm serve MODEL`) or fix the URL; it must end "
                                      "in /v1") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise InputError.one(f"the endpoint {url} refused the API key: {exc.message}", file=self.source_file,
                                 key="generation.generator.api_key_env") from None
        except openai.NotFoundError as exc:
            raise InputError.one(f"the endpoint {url} has no model {self.model!r} or no chat API: {exc.message}",
                                 file=self.source_file, key="generation.generator.model") from None
        except openai.BadRequestError as exc:
            raise InputError.one(f"the endpoint {url} rejected a request: {exc.message}", file=self.source_file,
                                 key=ENDPOINT_KEY, hint="a prompt may exceed the served context (lower generation."
                                 "chunk_chars or generator.max_new_tokens), or the server may not continue an answer "
                                 "prefill (set the operations' prefill_heading: false)") from None
