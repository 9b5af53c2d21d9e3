"""vLLM offline generation, data-parallel: one replica per visible GPU, each with tensor_parallel_size=1.

With one GPU the engine runs in this process. With several, each replica is a spawned process
pinned to its GPU (CUDA_VISIBLE_DEVICES) and takes a contiguous slice of every call's prompts;
the slices come back in order. A generator too large for one GPU needs tensor parallelism: serve it
with `vllm serve --tensor-parallel-size N` and use the openai backend instead.
vllm is imported only here, and only when it is installed and CUDA is present.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Sequence

from synpro.generation.backends.base import Completion, Sampling, continuation
from synpro.generation.operations.base import Messages


class _Engine:
    """One vLLM engine on the GPUs this process sees; `engine` holds the spec's engine settings
    (gpu_memory_utilization, max_num_seqs, enable_prefix_caching), unset ones left to vLLM."""

    def __init__(self, folder: str, engine: dict[str, Any] | None = None):
        from vllm import LLM

        self.llm = LLM(model=folder, tensor_parallel_size=1, dtype="bfloat16", **(engine or {}))

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=sampling.temperature,
                                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        # every prompt of one call comes from one operation, so they share the prefill flags
        outputs = self.llm.chat(list(prompts), params, use_tqdm=False, **continuation(prompts[0]))
        return [Completion(text=o.outputs[0].text, tokens=len(o.outputs[0].token_ids),
                           finished=o.outputs[0].finish_reason != "length") for o in outputs]


def _replica(gpu: str, folder: str, settings: dict[str, Any], jobs: Any, results: Any) -> None:
    """A replica process: pinned to one GPU, serving (prompts, sampling) jobs until it gets None."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        engine = _Engine(folder, settings)
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which re-raises it
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", None))
    while (job := jobs.get()) is not None:
        try:
            results.put(("ok", engine.generate(*job)))
        except Exception as exc:  # noqa: BLE001 - as above
            results.put(("error", f"{type(exc).__name__}: {exc}"))


class VllmBackend:
    name = "vllm"
    PROMPTS_PER_SLOT = 64  # vLLM batches continuously: give it many prompts per call

    def __init__(self, folder: Path, batch_size: int, engine: dict[str, Any] | None = None):
        import torch

        gpus = torch.cuda.device_count()
        self.batch_size = batch_size * self.PROMPTS_PER_SLOT * max(gpus, 1)
        self._local = _Engine(str(folder), engine) if gpus <= 1 else None
        self._replicas: list[tuple[Any, Any, Any]] = []
        if gpus > 1:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
            ctx = mp.get_context("spawn")  # CUDA cannot be forked
            for gpu in ids[:gpus]:
                jobs, results = ctx.Queue(), ctx.Queue()
                # not a daemon: vLLM starts child processes of its own
                proc = ctx.Process(target=_replica, args=(gpu, str(folder), engine or {}, jobs, results))
                proc.start()
                self._replicas.append((proc, jobs, results))
            try:
                for _, _, results in self._replicas:
                    self._receive(results)
            except RuntimeError:
                self.close()
                raise

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        if self._local is not None:
            return self._local.generate(prompts, sampling)
        size = -(-len(prompts) // len(self._replicas))
        busy = []
        for k, (_, jobs, results) in enumerate(self._replicas):
            if part := list(prompts[k * size:(k + 1) * size]):
                jobs.put((part, sampling))
                busy.append(results)
        return [c for results in busy for c in self._receive(results)]

    @staticmethod
    def _receive(results: Any) -> Any:
        status, payload = results.get()
        if status == "error":
            raise RuntimeError(f"a vLLM replica failed: {payload}")
        return payload

    def close(self) -> None:
        """Stop the replica processes (they are not daemons, since vLLM starts its own children)."""
        for proc, jobs, _ in self._replicas:
            jobs.put(None)
        for proc, _, _ in self._replicas:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
