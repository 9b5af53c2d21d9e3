"""Synthetic sets: one operation applied to the organic pool, cached by a key over everything that shapes it.

A set lives in `<out_dir>/<op name>-<key>/`:
- `records.jsonl`: one line per window, appended (flush + fsync) as each batch finishes, so a kill
  loses at most the batch in flight; a re-run drops a torn last line and continues after the last
  window written, checking window ids against the pool;
- `tokens.{bin,idx.npy,json}`: the passed outputs in the PRETRAINING tokenizer, EOS-terminated; shard
  document k is the k-th passed record (whose `window` names its source);
- `set.json`: what the key was computed from; `stats.json`: stats and metrics (`complete` says
  whether every window is done, `resumed_at_window` how many a killed earlier session had written).

The sweep makes sets as `synthesize` stages (keyed by this config and the pools stage's key; the
stage manifest marks them finished); `generate_set` makes one standalone, keyed by the same config
and a fingerprint of the pool's files.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from synpro.core.faults import kill_point
from synpro.core.fs import dir_lock, write_atomic
from synpro.core.hashing import file_digest, stable_hash
from synpro.data.shards import TokenShard, write_shard
from synpro.errors import InputError
from synpro.generation import metrics as set_metrics
from synpro.generation.backends import Backend, Sampling, make_backend, sampling_of, set_identity
from synpro.generation.chunking import Window, iter_windows, split_chunks
from synpro.generation.generator import fingerprint, model_identity
from synpro.generation.operations import OPERATIONS
from synpro.generation.operations.base import EMPTY, Operation
from synpro.models import Vocab
from synpro.spec import Spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

KEY_VERSION = 1  # bump when the record format or generation logic changes what a key produces
RECORDS, STATS, META, SHARD = "records.jsonl", "stats.json", "set.json", "tokens"


class PreparedData(Protocol):
    """What the data stage hands over (duck-typed)."""

    tokenizer_dir: Path
    vocab: Vocab
    organic: TokenShard
    organic_docs: Path


@dataclass(frozen=True)
class SyntheticSet:
    name: str
    out_dir: Path
    shard: TokenShard
    records: Path
    stats: dict[str, Any]
    metrics: dict[str, float]

    @property
    def complete(self) -> bool:
        return bool(self.stats["complete"])

    def samples(self, n: int = 8) -> list[dict[str, str]]:
        """The first n passed outputs next to their sources, for a side-by-side table."""
        rows = ({"window": r["window"], "source": r["source"], "output": r["text"]}
                for r in _read_records(self.records) if r["passed"])
        return list(islice(rows, n))


def operation_of(spec: Spec, op_name: str) -> Operation:
    ops = spec.generation.operations
    if op_name not in ops:
        raise InputError.one(f"no operation named {op_name!r} (the spec has: {', '.join(ops) or 'none'})",
                             file=spec.source_file, key="generation.operations")
    return OPERATIONS.get(ops[op_name].kind).configured(ops[op_name])


def set_config(spec: Spec, op_name: str, generator: str | None = None) -> dict[str, Any]:
    """Everything but the source pool that changes a set's content; nothing that only changes where or how
    fast it is made. `generator` names a generator made upstream (a GRPO stage's key) instead of the
    spec's model, whose weights do not exist yet when the graph is built. The backend samples differently
    from another, so it is in (resolved: `auto` names what it runs here), except transformers, whose
    sets were keyed before backends were."""
    op = operation_of(spec, op_name)
    g = spec.generation
    backend = set_identity(spec)
    return {
        "version": KEY_VERSION,
        **({"backend": backend} if backend else {}),
        "operation": {"kind": g.operations[op_name].kind, "system_prompt": op.system_prompt, "prompt": op.prompt,
                      "heading": op.heading, "prefix": op.prefix, "filters": vars(op.filters)},
        "generator": generator or model_identity(spec),
        "sampling": vars(sampling_of(spec)),
        "window_tokens": g.window_tokens, "chunk_chars": g.chunk_chars, "max_windows": g.max_windows,
    }


def key_inputs(spec: Spec, op_name: str, data: PreparedData) -> dict[str, Any]:
    """The set's config plus a fingerprint of the pool it rewrites (the standalone key)."""
    return {**set_config(spec, op_name),
            "source": {"organic": json.loads(Path(data.organic.header_path).read_text()),
                       "docs": file_digest(Path(data.organic_docs), 16),
                       "tokenizer": fingerprint(Path(data.tokenizer_dir))}}


def set_key(spec: Spec, op_name: str, data: PreparedData) -> str:
    return stable_hash(key_inputs(spec, op_name, data))


def generate_set(spec: Spec, op_name: str, data: PreparedData, out_dir: str | Path, *, limit: int | None = None,
                 progress: bool = True) -> SyntheticSet:
    """The set for this spec, operation and pool: returned as is when complete, else made or continued.

    `limit` caps the windows done in total (a later call with a larger limit, or none, continues).
    """
    inputs = key_inputs(spec, op_name, data)
    folder = Path(out_dir) / f"{op_name}-{stable_hash(inputs)}"
    with dir_lock(folder):  # parallel trials share sets: one makes it, the others wait for it
        if (folder / STATS).is_file() and load_set(folder).complete:
            return load_set(folder)
        return make_set(spec, op_name, data, folder, inputs, limit=limit, progress=progress)


def make_set(spec: Spec, op_name: str, data: PreparedData, folder: Path, inputs: dict[str, Any], *,
             limit: int | None = None, progress: bool = True) -> SyntheticSet:
    """Make or continue the set in `folder` (the caller holds its lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    op = operation_of(spec, op_name)
    if not (folder / META).is_file():
        write_atomic(folder / META, json.dumps(inputs, indent=1))
    records = folder / RECORDS
    _repair(records)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    g = spec.generation
    windows = iter_windows(Path(data.organic_docs), tokenizer, g.window_tokens, g.max_windows)
    done = _skip_done(windows, records, folder)
    target = _window_count(Path(data.organic_docs), g.window_tokens, g.max_windows)
    if limit is not None:
        target = min(limit, target) if target is not None else limit
    complete = _run(spec, op, windows, records, done, limit, target, progress)
    shard = _tokenize(records, tokenizer, data.vocab, folder / SHARD, name=folder.name)
    stats = {**_stats(records, op, shard, complete), "resumed_at_window": done}
    metrics = set_metrics.set_metrics(stats, _read_records(records))
    write_atomic(folder / STATS, json.dumps({"stats": stats, "metrics": metrics}, indent=1))
    return SyntheticSet(folder.name, folder, shard, records, stats, metrics)


# ---- generation --------------------------------------------------------------------------------

def _run(spec: Spec, op: Operation, windows: Iterator[Window], records: Path, done: int, limit: int | None,
         target: int | None, progress: bool) -> bool:
    """Generate until the pool (True) or the limit (False) runs out, appending a batch at a time.

    The generator is loaded only once there is a window to rewrite.
    """
    backend: Backend | None = None
    sampling = sampling_of(spec)
    chunk_chars = spec.generation.chunk_chars
    with _Progress(progress, op.name, done, target) as bar, open(records, "a", encoding="utf-8") as out:
        try:
            while limit is None or done < limit:
                first = next(windows, None)
                if first is None:
                    return True
                backend = backend or make_backend(spec)
                room = None if limit is None else limit - done
                group = _take(chain([first], windows), backend.batch_size, chunk_chars, room)
                started = time.perf_counter()
                lines = _generate_group(backend, op, group, sampling, chunk_chars)
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
                out.flush()
                os.fsync(out.fileno())
                kill_point("synthesize.batch")
                done += len(group)
                bar.advance(len(group), sum(r["generated_tokens"] for r in lines), time.perf_counter() - started)
            return next(windows, None) is None
        finally:
            if backend is not None:
                backend.close()


def _take(windows: Iterator[Window], prompts: int, chunk_chars: int, room: int | None) -> list[Window]:
    """Windows until they hold at least `prompts` chunks (a full generator batch), at most `room`."""
    group: list[Window] = []
    chunks = 0
    while chunks < prompts and (room is None or len(group) < room):
        window = next(windows, None)
        if window is None:
            break
        group.append(window)
        chunks += max(1, -(-len(window.text) // chunk_chars))
    return group


def _generate_group(backend: Backend, op: Operation, group: list[Window], sampling: Sampling,
                    chunk_chars: int) -> list[dict[str, Any]]:
    chunked = [split_chunks(w.text, chunk_chars) for w in group]
    prompts = [op.messages(c) for chunks in chunked for c in chunks]
    seeded = replace(sampling, seed=sampling.seed + zlib.crc32(group[0].id.encode()))  # varies by batch, reproducibly
    completions = iter(backend.generate(prompts, seeded) if prompts else [])
    records = []
    for window, chunks in zip(group, chunked):
        raws = [(op.prefix + c.text, c) for c in (next(completions) for _ in chunks)]
        extractions = [op.extract(raw, c.finished) for raw, c in raws]
        failures = list(dict.fromkeys(f for e in extractions for f in e.failures)) if chunks else [EMPTY]
        records.append({"window": window.id, "doc": window.doc_id, "index": window.index, "operation": op.name,
                        "source": window.text, "raw": [raw for raw, _ in raws], "chunks": len(chunks),
                        "text": "\n\n".join(e.text for e in extractions) if not failures else "",
                        "verdicts": {f: False for f in failures}, "failures": failures, "passed": False,
                        "similarity": None, "generated_tokens": sum(c.tokens for _, c in raws)})
    judged = [r for r in records if not r["failures"]]
    sims: Sequence[float | None] = [None] * len(judged)
    if op.filters.checks_similarity and judged:
        sims = set_metrics.similarities([r["source"] for r in judged], [r["text"] for r in judged])
    for record, sim in zip(judged, sims):
        verdicts = op.judge(record["source"], record["text"], sim)
        record.update(verdicts=verdicts, similarity=sim, failures=[k for k, ok in verdicts.items() if not ok])
        record["passed"] = not record["failures"]
        if not record["passed"]:
            record["text"] = ""
    return records


# ---- the records file --------------------------------------------------------------------------

def _repair(records: Path) -> None:
    """Drop a torn last line (a kill mid-write), reading back from the end only."""
    if not records.exists():
        return
    with open(records, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - (1 << 16))
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                pos = start + newline + 1
                break
            pos = start
        if pos < end:
            f.truncate(pos)


def _read_records(records: Path) -> Iterator[dict[str, Any]]:
    with open(records, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _skip_done(windows: Iterator[Window], records: Path, folder: Path) -> int:
    """Advance past the windows already written, checking they are the pool's first ones, in order."""
    if not records.exists():
        return 0
    done = 0
    for record in _read_records(records):
        window = next(windows, None)
        if window is None or window.id != record["window"]:
            raise InputError.one(f"the synthetic set in {folder} does not match its source pool (found window "
                                 f"{record['window']!r}, expected {window.id if window else 'no more windows'!r})",
                                 hint=f"delete {folder} to regenerate it")
        done += 1
    return done


# ---- finishing ---------------------------------------------------------------------------------

def _tokenize(records: Path, tokenizer: "PreTrainedTokenizerBase", vocab: Vocab, stem: Path, name: str) -> TokenShard:
    """Passed outputs → pretraining tokens, EOS-terminated, streamed 256 documents at a time."""
    def docs() -> Iterator[list[int]]:
        passed = (r["text"] for r in _read_records(records) if r["passed"])
        while batch := list(islice(passed, 256)):
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                yield ids + [vocab.eos_id]

    return write_shard(stem, docs(), vocab_size=vocab.size, name=name)


def _stats(records: Path, op: Operation, shard: TokenShard, complete: bool) -> dict[str, Any]:
    windows = chunks = passed = generated = 0
    failures = dict.fromkeys(op.reasons(), 0)
    for r in _read_records(records):
        windows += 1
        chunks += r["chunks"]
        passed += r["passed"]
        generated += r["generated_tokens"]
        for reason in r["failures"]:
            failures[reason] = failures.get(reason, 0) + 1
    return {"operation": op.name, "complete": complete, "windows": windows, "chunks": chunks, "passed": passed,
            "pass_rate": passed / max(windows, 1), "failures": failures, "generated_tokens": generated,
            "output_tokens": shard.n_tokens}


def load_set(folder: Path) -> SyntheticSet:
    done = json.loads((folder / STATS).read_text())
    return SyntheticSet(folder.name, folder, TokenShard.open(folder / SHARD), folder / RECORDS, done["stats"],
                        done["metrics"])


def _window_count(docs: Path, window_tokens: int, max_windows: int | None) -> int | None:
    """Windows in the pool, estimated from the data stage's per-document token counts (for the progress bar)."""
    total = 0
    with open(docs, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                n_tokens = json.loads(line).get("n_tokens")
                if n_tokens is None:
                    return max_windows
                total += max(1, -(-n_tokens // window_tokens))
    return total if max_windows is None else min(total, max_windows)


class _Progress:
    """A rich bar with windows/s and generated tokens/s; silent when disabled."""

    def __init__(self, enabled: bool, label: str, done: int, total: int | None):
        self.enabled, self.label, self.done, self.total = enabled, label, done, total
        self.windows = self.tokens = 0
        self.seconds = 0.0

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task(f"generate {self.label}", total=self.total, completed=self.done, rate="")
        return self

    def advance(self, windows: int, tokens: int, seconds: float) -> None:
        self.windows, self.tokens, self.seconds = self.windows + windows, self.tokens + tokens, self.seconds + seconds
        if self.enabled:
            rate = f"{self.windows / self.seconds:.2f} docs/s  {self.tokens / self.seconds:.0f} tok/s"
            self.bar.update(self.task, advance=windows, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
