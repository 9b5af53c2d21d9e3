"""The data stages at scale: tokens/s against raw `tokenizers`, 1 vs 2 workers, peak memory at two
corpus sizes, and the resume of a stage killed half-way.

It writes its own `.jsonl.zst` corpora (CPython's docs, the builtin corpus, repeated with a copy
number in front of each document until the corpus holds about N tokens), trains one BPE (vocab 4,096)
used as a pretrained tokenizer, and builds the pools and the oracle's extra pool (about 90% of each
corpus, in shards of 2^20 tokens) in a child process per run, sampling the resident memory of the
child and its workers every 20 ms. A run's clock starts once the child has imported transformers (a
fixed few seconds a process, whatever the data); starting the workers is inside it.

- raw: `tokenizers`' `encode_batch_fast` of the smaller corpus's text, already in memory, one thread;
- the smaller corpus with 1 worker (tokenizing in the stage's own process) and with 2 workers;
- the smaller corpus, 2 workers, killed after half of its extra shards, then resumed;
- the bigger corpus, 2 workers (peak memory against the smaller one's).

    python benchmarks/data_scale.py                       # 10M and 100M tokens (about 8 min on 2 quiet cores)
    python benchmarks/data_scale.py --sizes 1e6,5e6       # a quick look

Targets (issue 18): tokens/s per worker >= 0.8 of raw; >= 1.7x from 1 to 2 workers; the bigger run's
peak <= 1.2x the smaller's; a resume makes only the missing shards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARD_TOKENS = 1 << 20
VOCAB = 4096


def child(spec_file: str, root: str) -> None:
    """The data stages of one spec (pools, then extra), timed; prints a JSON line."""
    from synpro.spec import Spec
    from synpro.stages import Runner
    from synpro.stages.graph import GraphBuilder

    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401 - a fixed few seconds a
    # process (more where byte-code is not cached), paid before the clock starts

    spec = Spec.model_validate(json.loads(Path(spec_file).read_text()))
    graph = GraphBuilder(spec, spec.budget.resolve(spec.model)[1])
    runner = Runner(Path(root), progress=False)
    start = time.perf_counter()
    pools = runner.run(graph.pools)
    extra = runner.run(graph.extra())
    seconds = time.perf_counter() - start
    tokens = pools.organic.n_tokens + pools.validation.n_tokens + extra.n_tokens
    print(json.dumps({"seconds": seconds, "tokens": tokens, "extra_shards": len(extra.parts)}))


def run_child(spec: dict, root: Path, kill_at: str | None = None) -> dict:
    """Run `child` in a fresh process; its result plus the peak RSS of it and its workers (MiB)."""
    import psutil

    spec_file = root.with_suffix(".spec.json")
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["SYNPRO_KILL_AT"] = kill_at
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(spec_file), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    out, err = proc.communicate()
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
        return {"peak_mib": peak / 2**20}
    assert proc.returncode == 0, err[-3000:]
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mib": peak / 2**20}


def write_corpus(path: Path, tokens: int, chars_per_token: float) -> int:
    """The builtin corpus repeated (a copy number before each document) into a .jsonl.zst of about
    `tokens` tokens; returns its characters."""
    import zstandard

    from synpro.data.builtin import python_docs

    docs = [d for d in python_docs() if len(d) >= 200]
    target, chars, copy = tokens * chars_per_token, 0, 0
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        while chars < target:
            for doc in docs:
                text = f"[{copy}] {doc}"
                out.write((json.dumps({"text": text}) + "\n").encode())
                chars += len(text)
                if chars >= target:
                    break
            copy += 1
    return chars


def read_texts(path: Path) -> list[str]:
    import io

    import zstandard

    with open(path, "rb") as raw:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        return [json.loads(line)["text"] for line in lines]


def raw_tokens_per_second(tokenizer_json: Path, texts: list[str]) -> float:
    """`encode_batch_fast` on one thread, 256 documents a call, text already in memory."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(texts), 256):
        tokens += sum(len(e) + 1 for e in tokenizer.encode_batch_fast(texts[first:first + 256],
                                                                      add_special_tokens=False))
    return tokens / (time.perf_counter() - start)


def spec_for(folder: Path, corpus: Path, tokenizer: Path, tokens: int, workers: int) -> dict:
    unique = max(tokens // 10 // 2048 * 2048, 2048)
    return {"experiment": {"name": "scale", "seed": 0},
            "corpus": {"source": "jsonl", "path": str(corpus), "workers": workers, "shard_tokens": SHARD_TOKENS},
            "tokenizer": {"kind": "pretrained", "name": str(tokenizer)},
            "budget": {"unique_tokens": unique, "total_tokens": int(0.9 * tokens),
                       "validation_tokens": max(tokens // 100, 1000)},
            "arms": [{"kind": "repetition"}, {"kind": "oracle"}], "search": {"objective": {"arm": "oracle"}},
            "source_file": str(folder / "spec.yaml")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10e6,100e6", help="the two corpus sizes in tokens")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    sys.path.insert(0, str(ROOT))
    small, big = (int(float(x)) for x in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="data-scale-"))
    try:
        from synpro.data.builtin import python_docs
        from synpro.data.tokenizer import encode_batch, save_tokenizer, train_bpe

        docs = [d for d in python_docs() if len(d) >= 200]
        tokenizer = train_bpe(docs[::3], VOCAB)
        save_tokenizer(tokenizer, work / "tokenizer")
        chars_per_token = sum(map(len, docs)) / sum(len(ids) + 1 for ids in encode_batch(tokenizer, docs))
        corpora = {}
        for size in (small, big):
            corpora[size] = work / f"corpus-{size}.jsonl.zst"
            chars = write_corpus(corpora[size], size, chars_per_token)
            print(f"corpus {size:,.0f} tokens: {chars:,} characters, {corpora[size].stat().st_size:,} bytes (zstd)")

        texts = read_texts(corpora[small])
        raw = raw_tokens_per_second(work / "tokenizer" / "tokenizer.json", texts)
        del texts
        print(f"raw tokenizers encode_batch_fast, 1 thread: {raw:,.0f} tok/s")

        runs = {}
        for name, size, workers in (("1 worker", small, 1), ("2 workers", small, 2)):
            folder = work / name.replace(" ", "-")
            folder.mkdir()
            runs[name] = run_child(spec_for(folder, corpora[small], work / "tokenizer", size, workers), folder / "stages")
            r = runs[name]
            print(f"{size:,} tokens, {name}: {r['tokens']:,} tokens in {r['seconds']:.1f} s = "
                  f"{r['tokens'] / r['seconds']:,.0f} tok/s; peak RSS {r['peak_mib']:,.0f} MiB; "
                  f"{r['extra_shards']} extra shards")

        folder = work / "resume"
        folder.mkdir()
        spec = spec_for(folder, corpora[small], work / "tokenizer", small, 2)
        half = max(1, runs["2 workers"]["extra_shards"] // 2)
        run_child(spec, folder / "stages", kill_at=f"extra.shard:{half}")
        [extra] = (folder / "stages").glob("extra-*")
        kept = {p: p.stat().st_mtime_ns for p in (extra / "extra").glob("*.bin")}
        resumed = run_child(spec, folder / "stages")
        made = sum(1 for p in (extra / "extra").glob("*.bin") if kept.get(p) != p.stat().st_mtime_ns)
        cold = runs["2 workers"]
        print(f"resume after a kill at extra shard {half} of {cold['extra_shards']}: {resumed['seconds']:.1f} s "
              f"against {cold['seconds']:.1f} s cold; made {made} shards, kept {len(kept)} untouched "
              f"(only the missing ones: {made == cold['extra_shards'] - len(kept)})")

        folder = work / "big"
        folder.mkdir()
        runs["big"] = run_child(spec_for(folder, corpora[big], work / "tokenizer", big, 2), folder / "stages")
        r = runs["big"]
        print(f"{big:,} tokens, 2 workers: {r['tokens']:,} tokens in {r['seconds']:.1f} s = "
              f"{r['tokens'] / r['seconds']:,.0f} tok/s; peak RSS {r['peak_mib']:,.0f} MiB; "
              f"{r['extra_shards']} extra shards")

        print(f"load average (1/5/15 min) at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on "
              f"{os.cpu_count()} cores: other work on the cores bounds the 2-worker speed-up")
        one, two = (runs[n]["tokens"] / runs[n]["seconds"] for n in ("1 worker", "2 workers"))
        label = f"{big / 1e6:g}M/{small / 1e6:g}M"
        print(f"tokens/s per worker vs raw tokenizers: {one / raw:.2f}")
        print(f"2-worker speed-up: {two / one:.2f}")
        print(f"peak RSS ratio {label}: {runs['big']['peak_mib'] / runs['2 workers']['peak_mib']:.2f}")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
