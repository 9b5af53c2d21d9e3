"""Generation throughput: each CPU backend vs the transformers backend, side by side, interleaved.

Same model (the packaged default generator unless --model), prompts and seeded sampling, at the
quickstart's settings by default: 128-token windows of builtin documents (CPython's reference topics,
windowed by the generator's tokenizer) as rephrase prompts, temperature 1.0, top-p 0.9, 224 new
tokens, batches of 8 for transformers. The CPU backends are the continuous-batching decoder (bf16 and
int8) and CTranslate2; each gets one call of its own size a round (what the pipeline hands it), the
transformers backend --windows prompts. Tokens are counted up to each answer's end, so a static batch's
wait for its longest member counts against it. Prints tokens/s of each and its peak RSS; the last line
is the speed-up of the backend `auto` takes on this CPU.

    python benchmarks/generation_throughput.py --threads 1          # ~25 minutes on 2 busy CPU cores
    python benchmarks/generation_throughput.py --rounds 1 --ct2-batch 16 --threads 2
    python benchmarks/generation_throughput.py --compute-type int8_float32
    python benchmarks/generation_throughput.py --backends continuous-bf16   # auto's backend only
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
        started, cpu = time.perf_counter(), time.process_time()
        out = backend.generate(prompts, sampling)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(c.tokens for c in out)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_gib": rss["peak_gib"],
            "finished": sum(c.finished for c in out), "cpu_seconds": cpu_seconds}


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


def cpu_backends(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    """Each CPU backend worth comparing, loaded: the continuous decoder in each precision, CTranslate2."""
    import importlib.util

    from synpro.generation.backends.continuous_backend import ContinuousBackend, native_bf16

    wanted = set(args.backends.split(",")) if args.backends else None
    made: dict[str, object] = {}
    for precision in ("bf16", "int8") if native_bf16() else ("fp32", "int8"):
        if wanted is None or f"continuous-{precision}" in wanted:
            made[f"continuous-{precision}"] = ContinuousBackend.load(folder, args.batch_size, precision=precision)
    if importlib.util.find_spec("ctranslate2") and (wanted is None or f"ctranslate2-{args.compute_type}" in wanted):
        from synpro.generation.backends.ctranslate2_backend import CTranslate2Backend

        ct2 = CTranslate2Backend.load(folder, args.batch_size, quantization=args.compute_type)  # converts once
        ct2.max_batch_size = args.ct2_batch or ct2.max_batch_size
        made[f"ctranslate2-{args.compute_type}"] = ct2
    return made


def throughput(args: argparse.Namespace, spec: Spec) -> None:
    """Rounds of: transformers on --windows prompts, then each CPU backend on one call of its own size
    (backend.batch_size prompts: what the pipeline hands it), all from the same round's windows. Rounds
    interleave the backends so a change of load on shared cores hits them all; totals sum the rounds."""
    from synpro.generation.backends import resolve_backend, set_identity

    folder = model_folder(spec)
    sampling = Sampling(temperature=args.temperature, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    warm = Sampling(temperature=0, max_new_tokens=4)
    backends = {f"transformers-fp32": TransformersBackend.load(folder, args.batch_size), **cpu_backends(args, folder)}
    per_round = max(args.windows, *(b.batch_size for b in backends.values()))
    prompts = window_prompts(folder, args.op, per_round * args.rounds, args.window_tokens)
    if len(prompts) < per_round * args.rounds:  # the builtin documents hold ~140 windows: later rounds repeat them
        print(f"  {len(prompts)} windows for {per_round * args.rounds}: rounds repeat windows", flush=True)
        prompts = (prompts * (per_round * args.rounds // len(prompts) + 1))[:per_round * args.rounds]
    for b in backends.values():
        b.generate(prompts[:1], warm)
    totals = {name: {"tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0, "finished": 0, "prompts": 0, "peak_rss_gib": 0.0}
              for name in backends}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        pool = prompts[r * per_round:(r + 1) * per_round]
        for name, b in backends.items():
            batch = pool[:args.windows] if name.startswith("transformers") else pool[:b.batch_size]
            got = measure(b, batch, sampling)
            t = totals[name]
            t.update(tokens=t["tokens"] + got["tokens"], seconds=t["seconds"] + got["seconds"],
                     cpu_seconds=t["cpu_seconds"] + got["cpu_seconds"],
                     finished=t["finished"] + got["finished"], prompts=t["prompts"] + len(batch),
                     peak_rss_gib=max(t["peak_rss_gib"], got["peak_rss_gib"]))
            loads.append(os.getloadavg()[0])
            print(f"  round {r + 1} {name}: {got['tokens']} tokens in {got['seconds']:.1f} s = "
                  f"{got['tokens_per_s']:.1f} tokens/s, {got['tokens'] / got['cpu_seconds']:.1f} a CPU second "
                  f"(load {loads[-1]:.1f})", flush=True)
    print(f"model {spec.generation.generator.model}  op {args.op}  {args.rounds} rounds  windows x "
          f"{args.window_tokens} tokens  max_new_tokens {args.max_new_tokens}  temperature {args.temperature}  "
          f"top_p 0.9  threads {torch.get_num_threads()}  1-min load {min(loads):.1f}-{max(loads):.1f}")
    base = totals["transformers-fp32"]
    base_rate = base["tokens"] / base["seconds"]
    base_cpu_rate = base["tokens"] / base["cpu_seconds"]
    for name, t in totals.items():
        b = backends[name]
        shape = (f"batch {args.batch_size}" if name.startswith("transformers") else
                 f"{getattr(b, 'slots', getattr(b, 'max_batch_size', '?'))} rows, {b.batch_size} prompts a call")
        rate = t["tokens"] / t["seconds"]
        cpu_rate = t["tokens"] / t["cpu_seconds"]
        print(f"{name + ', ' + shape:>48}: {t['tokens']:6d} tokens in {t['seconds']:7.1f} s = {rate:6.1f} tokens/s "
              f"({rate / base_rate:.2f}x; per CPU second {cpu_rate:.1f}, {cpu_rate / base_cpu_rate:.2f}x), "
              f"{t['finished']}/{t['prompts']} finished, peak RSS {t['peak_rss_gib']:.2f} GiB")
    auto = spec.model_copy(update={"generation": spec.generation.model_copy(update={
        "generator": spec.generation.generator.model_copy(update={"backend": "auto"})})})
    picked = set_identity(auto) or resolve_backend(auto)
    picked = picked if picked in totals else f"{picked}-fp32"
    print(f"auto on this CPU: {picked}")
    rate = totals[picked]["tokens"] / totals[picked]["seconds"]
    # on shared cores the wall-clock ratio moves with the load between calls; CPU time much less
    cpu_rate = totals[picked]["tokens"] / totals[picked]["cpu_seconds"]
    print(f"cpu backend speed-up vs transformers per CPU second (less load-dependent): {cpu_rate / base_cpu_rate:.2f}x")
    print(f"cpu backend speed-up vs transformers: {rate / base_rate:.2f}x")


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
    parser.add_argument("--windows", type=int, default=8, help="the transformers backend's prompts a round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every backend in turn")
    parser.add_argument("--window-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="the transformers backend's batch")
    parser.add_argument("--ct2-batch", type=int, help="CTranslate2's rows per batch (default: what the "
                        "pipeline takes for --batch-size)")
    parser.add_argument("--backends", help="comma-separated CPU backends to compare (default: all), e.g. "
                        "continuous-bf16,ctranslate2-int8; auto's must be among them")
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
