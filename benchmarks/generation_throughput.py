"""Generation throughput: the CTranslate2 CPU backend vs the transformers backend, side by side.

Same model (the packaged default generator unless --model), prompts and seeded sampling, at the
quickstart's settings by default: 128-token windows of builtin documents (CPython's reference topics,
windowed by the generator's tokenizer) as rephrase prompts, temperature 1.0, top-p 0.9, 224 new
tokens, batches of 8 for transformers. Tokens are counted up to each answer's end, so a static batch's
wait for its longest member counts against it. Prints tokens/s of each and each phase's peak RSS; the
last line is the ratio.

    python benchmarks/generation_throughput.py                      # ~4 minutes on 2 CPU cores
    python benchmarks/generation_throughput.py --windows 32 --ct2-batch 16 --threads 2
    python benchmarks/generation_throughput.py --compute-type int8_float32
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


def measure(backend, prompts: list, sampling: Sampling) -> dict[str, float]:
    with peak_rss() as rss:
        started = time.perf_counter()
        out = backend.generate(prompts, sampling)
        seconds = time.perf_counter() - started
    tokens = sum(c.tokens for c in out)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_gib": rss["peak_gib"],
            "finished": sum(c.finished for c in out)}


def window_prompts(folder: Path, op_name: str, n: int, window_tokens: int) -> list:
    """The operation's messages for the first n windows of the builtin documents, in the generator's tokens."""
    from transformers import AutoTokenizer

    from synpro.generation.chunking import iter_windows

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        docs.write_text("".join(json.dumps({"id": f"topic{k}", "text": d}) + "\n"
                                for k, d in enumerate(builtin_docs(n, 2000))))
        windows = list(iter_windows(docs, tokenizer, window_tokens, n))
    op = OPERATIONS.get(op_name)
    return [op.messages(w.text) for w in windows]


def throughput(args: argparse.Namespace, spec: Spec) -> None:
    from synpro.generation.backends.ctranslate2_backend import CTranslate2Backend

    folder = model_folder(spec)
    prompts = window_prompts(folder, args.op, args.windows, args.window_tokens)
    sampling = Sampling(temperature=args.temperature, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    warm = Sampling(temperature=0, max_new_tokens=4)
    hf = TransformersBackend.load(folder, args.batch_size)
    hf.generate(prompts[:1], warm)
    baseline = measure(hf, prompts, sampling)
    del hf
    ct2 = CTranslate2Backend.load(folder, args.batch_size, quantization=args.compute_type)  # converts once
    ct2.max_batch_size = args.ct2_batch or ct2.max_batch_size
    ct2.generate(prompts[:1], warm)
    fast = measure(ct2, prompts, sampling)
    print(f"model {spec.generation.generator.model}  op {args.op}  {len(prompts)} windows x {args.window_tokens} "
          f"tokens  max_new_tokens {args.max_new_tokens}  temperature {args.temperature}  top_p 0.9  "
          f"threads {torch.get_num_threads()}")
    rows = ((f"transformers fp32, batch {args.batch_size}", baseline),
            (f"ctranslate2 {args.compute_type}, batch {ct2.max_batch_size}", fast))
    for name, r in rows:
        print(f"{name:>32}: {r['tokens']:6d} tokens in {r['seconds']:7.1f} s = {r['tokens_per_s']:7.1f} tokens/s, "
              f"{r['finished']}/{len(prompts)} finished, peak RSS {r['peak_rss_gib']:.2f} GiB")
    print(f"cpu backend speed-up vs transformers: {fast['tokens_per_s'] / baseline['tokens_per_s']:.2f}x")


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
    parser.add_argument("--windows", type=int, default=16, help="prompts: this many windows")
    parser.add_argument("--window-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="the transformers backend's batch")
    parser.add_argument("--ct2-batch", type=int, help="CTranslate2's rows per batch (default: what the "
                        "pipeline takes for --batch-size)")
    parser.add_argument("--compute-type", default="int8", choices=["int8", "int8_float32", "float32"])
    # The quickstart's setting: a 128-token window rewritten at up to ~1.25x its length, plus room.
    parser.add_argument("--max-new-tokens", type=int, default=224)
    parser.add_argument("--chars", type=int, default=1000, help="characters per source document (--pass-rates)")
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
