"""Generation throughput: the batched transformers backend vs one document at a time, side by side.

Same model (the packaged default generator unless --model), prompts and seeded sampling; tokens
are counted up to each answer's end. Prints tokens/s of each, their ratio and each phase's peak RSS.

    python benchmarks/generation_throughput.py                  # ~4 minutes on 2 CPU cores
    python benchmarks/generation_throughput.py --docs 32 --batch-size 16 --threads 2
    python benchmarks/generation_throughput.py --max-new-tokens 96  # short answers: prefill weighs more
    python benchmarks/generation_throughput.py --pass-rates 24  # share of outputs passing the filters

--pass-rates N instead runs both operations through `generate_set` over N builtin documents
(CPython's reference topics) with the spec defaults and prints pass and failure rates.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import psutil
import torch

from synpro.generation.backends import Sampling
from synpro.generation.backends.transformers_backend import TransformersBackend
from synpro.generation.generator import model_folder
from synpro.generation.operations import OPERATIONS
from synpro.spec import Spec


def builtin_docs(n: int, chars: int) -> list[str]:
    """The first n reference topics of at least `chars` characters, cut to that length at a space."""
    from pydoc_data.topics import topics

    texts = [topics[k].strip() for k in sorted(topics)]
    return [t[:t.rfind(" ", 0, chars)] for t in texts if len(t) >= chars][:n]


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory (GiB) of this process while the block runs, sampled every 20 ms."""
    proc, result, stop = psutil.Process(), {"peak_gib": 0.0}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak_gib"] = max(result["peak_gib"], proc.memory_info().rss / 2**30)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def measure(backend: TransformersBackend, prompts: list, sampling: Sampling, batch_size: int) -> dict[str, float]:
    backend.batch_size = batch_size
    with peak_rss() as rss:
        started = time.perf_counter()
        out = backend.generate(prompts, sampling)
        seconds = time.perf_counter() - started
    tokens = sum(c.tokens for c in out)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_gib": rss["peak_gib"]}


def throughput(args: argparse.Namespace, spec: Spec) -> None:
    backend = TransformersBackend.load(model_folder(spec), args.batch_size)
    op = OPERATIONS.get(args.op)
    prompts = [op.messages(d) for d in builtin_docs(args.docs, args.chars)]
    sampling = Sampling(temperature=args.temperature, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    backend.generate(prompts[:1], Sampling(temperature=0, max_new_tokens=4))  # warm-up
    single = measure(backend, prompts, sampling, 1)
    batched = measure(backend, prompts, sampling, args.batch_size)
    print(f"model {spec.generation.generator.model}  op {args.op}  docs {len(prompts)} x {args.chars} chars  "
          f"max_new_tokens {args.max_new_tokens}  temperature {args.temperature}  "
          f"torch threads {torch.get_num_threads()}")
    for name, r in (("one at a time", single), (f"batched ({args.batch_size})", batched)):
        print(f"{name:>14}: {r['tokens']:6d} tokens in {r['seconds']:7.1f} s = {r['tokens_per_s']:7.1f} tokens/s, "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB")
    print(f"speed-up: {batched['tokens_per_s'] / single['tokens_per_s']:.2f}x")


def pass_rates(args: argparse.Namespace, spec: Spec) -> None:
    """Both operations over N builtin documents through the real set pipeline, with the spec defaults."""
    from transformers import AutoTokenizer

    from synpro.data.shards import write_shard
    from synpro.generation.synthetic import generate_set
    from synpro.models import Vocab

    out = Path(args.out or tempfile.mkdtemp(prefix="synpro-pass-rates-"))
    out.mkdir(parents=True, exist_ok=True)
    folder = model_folder(spec)  # the generator's tokenizer stands in for a pretraining tokenizer here
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    docs = builtin_docs(args.pass_rates, args.chars)
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    vocab = Vocab(size=len(tokenizer), bos_id=tokenizer.eos_token_id, eos_id=tokenizer.eos_token_id,
                  pad_id=tokenizer.pad_token_id)
    with open(out / "docs.jsonl", "w") as f:
        for k, (d, i) in enumerate(zip(docs, ids)):
            f.write(json.dumps({"id": f"topic{k}", "text": d, "n_tokens": len(i)}) + "\n")
    data = SimpleNamespace(tokenizer_dir=folder, vocab=vocab, organic_docs=out / "docs.jsonl",
                           organic=write_shard(out / "organic", [i + [vocab.eos_id] for i in ids], vocab.size))
    for op_name in spec.generation.operations:
        made = generate_set(spec, op_name, data, out, progress=True)
        s = made.stats
        fails = ", ".join(f"{k} {v}" for k, v in s["failures"].items() if v)
        print(f"{op_name}: {s['passed']}/{s['windows']} passed ({s['pass_rate']:.0%}); failures: {fails or 'none'}")
        print("   metrics:", {k: round(v, 3) for k, v in made.metrics.items() if not k.startswith("fail_rate")})
    print(f"records under {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, HF folder or cached id")
    parser.add_argument("--op", default="rephrase", choices=OPERATIONS.names())
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--chars", type=int, default=1000, help="characters per source document")
    parser.add_argument("--batch-size", type=int, default=8)
    # A rephrase is about as long as its source (~250 generator tokens for 1000 characters): room for 1.25x.
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--pass-rates", type=int, metavar="N", help="measure filter pass rates on N documents")
    parser.add_argument("--out", help="folder for --pass-rates sets (default: a new temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = Spec.model_validate({
        "experiment": {"name": "bench"}, "budget": {"unique_tokens": 1000, "epochs": 2},
        "generation": {"generator": {"model": args.model, "backend": "transformers", "temperature": args.temperature,
                                     "batch_size": args.batch_size}}})
    if args.pass_rates:
        pass_rates(args, spec)
    else:
        throughput(args, spec)


if __name__ == "__main__":
    main()
