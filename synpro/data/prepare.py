"""Carve the validation, organic and extra pools from one stream of the corpus: tokenized, disjoint,
exact-sized, written shard by shard, resumable.

Two stages use this module: `pools` (tokenizer, validation, organic) and `extra` (the oracle's
further unique tokens). Keeping the extra pool apart means adding or dropping an oracle arm never
changes the organic pool's key, and so never the key of anything trained or generated from it.

Which pool a document joins is decided as the stream goes, from its position and token count only
(`_Lanes`), never from a shuffle of everything read, so no stage needs the corpus at hand:

1. Document i is *held out* when a uniform number seeded by (experiment.seed, i) falls below
   share = V / (U + V), so validation fills at the pace organic does. A held-out document joins
   validation while validation lacks tokens; every other document joins organic while organic
   lacks tokens; once both are full the pools stage stops. Each pool is exactly the first N tokens
   of its documents, each followed by EOS: only a pool's last document is cut (maybe before its EOS).
2. The extra pool is every later document the pools did not take: from the first document after
   organic's last, skipping the held-out ones while validation was still filling. It never holds an
   organic or validation document, and the extra stage skips everything before without tokenizing.
3. A trained tokenizer is fitted on the non-held-out documents of a front range sized by a
   characters-per-token estimate; its own token counts then check (replaying step 1) that all of
   them land in organic; if not, the range is re-sized from the measured characters per token and
   training repeats. So its training text is always a part of the organic pool.
4. Tokenizing runs in `corpus.workers` processes (`synpro.data.workers`), results taken back in
   document order, so the pools are the same for any worker count. Tokens go straight into the
   open shard of their pool; when a shard holds `corpus.shard_tokens` the stage completes every
   open shard and records how far it got (`_progress.json`, atomically). A killed stage continues
   from there: complete shards are kept, anything written after them is redone. Memory is the
   workers' batches plus one shard's offsets, whatever the corpus or the pools (a trained
   tokenizer also needs its training range in memory: about U tokens of text).
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from rich.progress import (BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from synpro.core.faults import kill_point
from synpro.core.fs import write_atomic
from synpro.data.corpus import iter_documents
from synpro.data.shards import Part, PoolWriter, TokenShard, token_dtype
from synpro.data.tokenizer import (encode_batch, load_pretrained, load_tokenizer, prefix_text, save_tokenizer, train_bpe,
                                   vocab_of)
from synpro.data.workers import BATCH_DOCS, Tokenizing, batches, default_workers
from synpro.errors import InputError
from synpro.models import Vocab
from synpro.spec import Spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

POOLS_META = "pools.json"
PROGRESS = "_progress.json"
TOKENIZER_DIR = "tokenizer"
ORGANIC_DOCS = "organic_docs.jsonl"
FIRST_CHARS_PER_TOKEN = 4.0  # a byte-level BPE of a few thousand tokens on English text
TRAIN_FILL = (0.9, 0.97)  # the tokenizer's training text aims at 97% of U tokens and takes 90-100%
MAX_FITS = 5
SPILL_SHRINK = 0.85  # the next try's share of the target after a range that did not fit inside organic
PARALLEL_MIN_TOKENS = 1 << 21  # below this, starting worker processes costs more than it saves (auto workers)
_LANE_BLOCK = 1 << 16


@dataclass(frozen=True)
class PreparedData:
    """Everything the arms train and evaluate on; the pools stage's output plus, for an oracle, extra."""

    tokenizer_dir: Path
    vocab: Vocab
    organic: TokenShard  # exactly U tokens
    extra: TokenShard | None  # the oracle's further unique tokens (the `extra` stage), else None
    validation: TokenShard  # budget.validation_tokens held-out tokens
    organic_docs: Path  # JSONL {"id", "text", "n_tokens"}: the text of each organic-shard document
    stats: dict[str, Any]


class _Lanes:
    """Step 1's seeded draw: whether document i is held out (a candidate for validation)."""

    def __init__(self, seed: int, share: float):
        self.seed, self.share = seed, share
        self._block: tuple[int, np.ndarray] | None = None

    def held_out(self, i: int) -> bool:
        block = i // _LANE_BLOCK
        if self._block is None or self._block[0] != block:
            self._block = (block, np.random.default_rng([self.seed, 18, block]).random(_LANE_BLOCK))
        return bool(self._block[1][i % _LANE_BLOCK] < self.share)

    def pool_of(self, i: int, full: dict[str, bool]) -> str | None:
        """validation / organic / None (the extra pool's) given which pools are already full."""
        if not full["validation"] and self.held_out(i):
            return "validation"
        return "organic" if not full["organic"] else None

    def is_extra(self, i: int, organic_end: int, validation_end: int) -> bool:
        """Step 2: a document after organic's last that validation did not take."""
        return i >= organic_end and not (i < validation_end and self.held_out(i))


# ---- the pools stage ---------------------------------------------------------------------------

def build_pools(spec: Spec, out_dir: Path, *, progress: bool = True) -> None:
    """Tokenizer, validation and organic pools into out_dir (the `pools` stage's work), continuing a
    killed attempt from its last complete shards."""
    out_dir = Path(out_dir)
    unique, held = spec.budget.resolve(spec.model)[0], spec.budget.validation_tokens
    need = {"validation": held, "organic": unique}
    lanes = _Lanes(spec.experiment.seed, held / (unique + held))
    state = _load_progress(out_dir)
    docs: Iterator[tuple[int, str]]
    if state is None:
        stream = enumerate(iter_documents(spec))
        if spec.tokenizer.kind == "train":
            head = _Head(stream)
            tokenizer, train = _fit_tokenizer(head, lanes, need, spec.tokenizer.vocab_size)
            docs = head.replay()
        else:
            tokenizer, train, docs = load_pretrained(spec), {"docs": 0, "chars": 0}, stream
        save_tokenizer(tokenizer, out_dir / TOKENIZER_DIR)
        state = {"next_doc": 0, "chars": 0, "tokens_read": 0, "tokenizer": train, "organic_docs_bytes": 0,
                 "ends": {"validation": 0, "organic": 0}, "pools": {"validation": [], "organic": []}}
    else:
        tokenizer = load_tokenizer(out_dir / TOKENIZER_DIR)
        docs = enumerate(iter_documents(spec))
    vocab = vocab_of(tokenizer)
    writers = {name: PoolWriter(out_dir / name, vocab.size, name, (Part(**p) for p in state["pools"][name]))
               for name in need}
    organic_docs = _reopen(out_dir / ORGANIC_DOCS, state["organic_docs_bytes"])
    workers = _workers(spec, sum(need.values()) - sum(w.n_tokens for w in writers.values()))
    ends = dict(state["ends"])
    chars, tokens_read, next_doc = state["chars"], state["tokens_read"], state["next_doc"]
    read_docs = next_doc

    def checkpoint(upto: int) -> None:
        for writer in writers.values():
            writer.cut()
        organic_docs.flush()
        os.fsync(organic_docs.fileno())
        _save_progress(out_dir, {**state, "next_doc": upto, "chars": chars, "tokens_read": tokens_read,
                                 "organic_docs_bytes": organic_docs.tell(), "ends": ends,
                                 "pools": {n: [asdict(p) for p in w.parts] for n, w in writers.items()}})
        kill_point("pools.shard")

    full = {name: writers[name].n_tokens >= n for name, n in need.items()}
    try:
        with _Bars(progress) as bars, Tokenizing(tokenizer.backend_tokenizer.to_str(), tokenizer.eos_token_id,
                                                 token_dtype(vocab.size), workers) as pool:
            for name in need:
                bars.add(name, need[name], writers[name])
            todo = ((i, text) for i, text in docs if i >= next_doc)
            for indices, texts, flat, lengths in ([] if all(full.values()) else pool.map(batches(todo))):
                for i, text, ids in zip(indices, texts, np.split(flat, np.cumsum(lengths)[:-1])):
                    chars += len(text)
                    tokens_read += len(ids)
                    read_docs = i + 1
                    name = lanes.pool_of(i, full)
                    if name is not None:
                        ids = ids[:need[name] - writers[name].n_tokens]
                        writers[name].add(ids)
                        ends[name] = i + 1
                        full[name] = writers[name].n_tokens >= need[name]
                        if name == "organic":
                            _write_organic_doc(organic_docs, i, text, ids, tokenizer, cut=full[name])
                    if all(full.values()) or any(w.open_tokens >= spec.corpus.shard_tokens for w in writers.values()):
                        checkpoint(i + 1)
                    if all(full.values()):
                        break
                bars.advance(len(indices))
                if all(full.values()):
                    break
    except BaseException:
        for writer in writers.values():
            writer.abandon()
        organic_docs.close()
        raise
    organic_docs.close()
    if not all(full.values()):
        raise _too_small(spec, need, tokens_read, read_docs)
    pools = {name: writer.finish() for name, writer in writers.items()}
    stats = {
        "seed": spec.experiment.seed,
        "corpus": {"source": spec.corpus.source, "docs": max(ends.values()), "chars": chars},
        "tokenizer": {"kind": spec.tokenizer.kind, "vocab_size": vocab.size, "train_docs": state["tokenizer"]["docs"],
                      "train_chars": state["tokenizer"]["chars"]},
        "pools": {name: {"docs": pool.n_docs, "tokens": pool.n_tokens, "shards": len(pool.parts)}
                  for name, pool in pools.items()},
        "organic_chars_per_token": round(_organic_chars(out_dir / ORGANIC_DOCS) / unique, 3),
        # Where each pool's last document is (plus one) and the held-out share: the extra pool's rule (step 2).
        "organic_end": ends["organic"], "validation_end": ends["validation"], "validation_share": lanes.share,
    }
    write_atomic(out_dir / POOLS_META, json.dumps({"stats": stats, "vocab": asdict(vocab)}, indent=1))
    (out_dir / PROGRESS).unlink()


def load_pools(out_dir: Path) -> PreparedData:
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / POOLS_META).read_text())
    return PreparedData(
        tokenizer_dir=out_dir / TOKENIZER_DIR,
        vocab=Vocab(**meta["vocab"]),
        organic=TokenShard.open(out_dir / "organic"),
        extra=None,
        validation=TokenShard.open(out_dir / "validation"),
        organic_docs=out_dir / ORGANIC_DOCS,
        stats=meta["stats"],
    )


# ---- the extra stage ---------------------------------------------------------------------------

def build_extra(spec: Spec, pools: PreparedData, n_tokens: int, out_dir: Path, *, progress: bool = True) -> None:
    """The oracle's `n_tokens` further unique tokens into out_dir (the `extra` stage's work), continuing
    a killed attempt from its last complete shard."""
    out_dir = Path(out_dir)
    meta = pools.stats
    lanes = _Lanes(meta["seed"], meta["validation_share"])
    state = _load_progress(out_dir) or {"next_doc": meta["organic_end"], "parts": []}
    writer = PoolWriter(out_dir / "extra", pools.vocab.size, "extra", (Part(**p) for p in state["parts"]))
    tokenizer_json = (pools.tokenizer_dir / "tokenizer.json").read_text()
    workers = _workers(spec, n_tokens - writer.n_tokens)

    def checkpoint(upto: int) -> None:
        writer.cut()
        _save_progress(out_dir, {"next_doc": upto, "parts": [asdict(p) for p in writer.parts]})
        kill_point("extra.shard")

    start = state["next_doc"]
    todo = ((i, text) for i, text in enumerate(iter_documents(spec))
            if i >= start and lanes.is_extra(i, meta["organic_end"], meta["validation_end"]))
    try:
        with _Bars(progress) as bars, Tokenizing(tokenizer_json, pools.vocab.eos_id, token_dtype(pools.vocab.size),
                                                 workers) as pool:
            bars.add("extra", n_tokens, writer)
            if writer.n_tokens < n_tokens:
                for indices, _texts, flat, lengths in pool.map(batches(todo)):
                    for i, ids in zip(indices, np.split(flat, np.cumsum(lengths)[:-1])):
                        writer.add(ids[:n_tokens - writer.n_tokens])
                        if writer.n_tokens >= n_tokens or writer.open_tokens >= spec.corpus.shard_tokens:
                            checkpoint(i + 1)
                        if writer.n_tokens >= n_tokens:
                            break
                    bars.advance(len(indices))
                    if writer.n_tokens >= n_tokens:
                        break
    except BaseException:
        writer.abandon()
        raise
    if writer.n_tokens < n_tokens:
        writer.abandon()
        key = "budget.total_tokens" if spec.budget.total_tokens is not None else "budget.epochs"
        raise InputError.one(
            f"the corpus is too small for the oracle arm: after the organic and validation pools it has "
            f"{writer.n_tokens:,} more unique tokens, but the oracle needs {n_tokens:,} (T - U)",
            file=spec.source_file, key=key,
            hint="lower budget.total_tokens (or budget.epochs), drop the oracle arm, or use a bigger corpus")
    writer.finish()
    (out_dir / PROGRESS).unlink(missing_ok=True)


# ---- the tokenizer (step 3) --------------------------------------------------------------------

class _Head:
    """The front of the stream, kept while the tokenizer is fitted, then handed on without a re-read."""

    def __init__(self, stream: Iterator[tuple[int, str]]):
        self.stream, self.docs, self.ended = stream, deque(), False

    def take_until(self, lanes: _Lanes, train_chars: float) -> int:
        """Extend the head until its non-held-out documents hold train_chars (or the stream ends)."""
        have = sum(len(t) for i, t in self.docs if not lanes.held_out(i))
        while have < train_chars and not self.ended:
            item = next(self.stream, None)
            if item is None:
                self.ended = True
                break
            self.docs.append(item)
            if not lanes.held_out(item[0]):
                have += len(item[1])
        n = len(self.docs)
        for k, (i, text) in enumerate(self.docs):  # the range ends with the document that reaches train_chars
            if not lanes.held_out(i):
                train_chars -= len(text)
                if train_chars <= 0:
                    n = k + 1
                    break
        return n

    def replay(self) -> Iterator[tuple[int, str]]:
        while self.docs:
            yield self.docs.popleft()
        yield from self.stream


def _fit_tokenizer(head: _Head, lanes: _Lanes, need: dict[str, int],
                   vocab_size: int) -> tuple["PreTrainedTokenizerFast", dict[str, int]]:
    """A BPE trained on the longest front range whose training documents its own token counts place
    inside the organic pool (step 3); with how many documents and characters it was trained on."""
    unique = need["organic"]
    chars_per_token = FIRST_CHARS_PER_TOKEN
    best: tuple["PreTrainedTokenizerFast", dict[str, int]] | None = None
    scale = 1.0  # shrinks after a range that spilled past organic: a few long documents can overshoot U
    for _ in range(MAX_FITS):
        n = head.take_until(lanes, TRAIN_FILL[1] * unique * chars_per_token * scale)
        span = list(head.docs)[:n]
        train = [text for i, text in span if not lanes.held_out(i)]
        tokenizer = train_bpe(train, vocab_size)
        counts = [len(ids) + 1 for start in range(0, n, BATCH_DOCS)
                  for ids in encode_batch(tokenizer, (t for _, t in span[start:start + BATCH_DOCS]))]
        have = dict.fromkeys(need, 0)
        inside = True  # every training document joins organic (replaying step 1)
        tokens = 0
        for (i, _), count in zip(span, counts):
            name = lanes.pool_of(i, {k: have[k] >= need[k] for k in need})
            if name is not None:
                have[name] += count
            if not lanes.held_out(i):
                inside = inside and name == "organic"
                tokens += count
        if inside:
            if best is None or len(train) > best[1]["docs"]:
                best = (tokenizer, {"docs": len(train), "chars": sum(map(len, train))})
            if tokens >= TRAIN_FILL[0] * unique or (head.ended and n == len(head.docs)):
                return best
        else:
            scale *= SPILL_SHRINK
        chars_per_token = sum(map(len, train)) / tokens
    if best is None:
        raise RuntimeError(f"no tokenizer training range fitted inside the organic pool in {MAX_FITS} tries")
    return best


# ---- helpers -----------------------------------------------------------------------------------

def _workers(spec: Spec, tokens_to_make: int) -> int:
    """corpus.workers, or by default every core unless the job is too small to pay for processes.
    Only speed depends on it: the result is the same for any count."""
    if spec.corpus.workers is not None:
        return spec.corpus.workers
    return default_workers() if tokens_to_make >= PARALLEL_MIN_TOKENS else 1


def _load_progress(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / PROGRESS
    return json.loads(path.read_text()) if path.is_file() else None


def _save_progress(out_dir: Path, state: dict[str, Any]) -> None:
    write_atomic(out_dir / PROGRESS, json.dumps(state, indent=1))


def _reopen(path: Path, size: int):
    """The organic documents file, cut back to what the last checkpoint recorded."""
    handle = open(path, "r+b" if path.exists() else "w+b")
    handle.truncate(size)
    handle.seek(size)
    return handle


def _write_organic_doc(handle, i: int, text: str, ids: np.ndarray, tokenizer: "PreTrainedTokenizerFast",
                       cut: bool) -> None:
    """One JSON line per organic-shard document; the pool's last one keeps only the text its tokens cover."""
    if cut:
        content = len(ids) - int(ids[-1] == tokenizer.eos_token_id)
        text = prefix_text(tokenizer, text, content)
    handle.write((json.dumps({"id": str(i), "text": text, "n_tokens": len(ids)}) + "\n").encode())


def _organic_chars(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(len(json.loads(line)["text"]) for line in f)


def _too_small(spec: Spec, need: dict[str, int], have: int, docs: int) -> InputError:
    budget = spec.budget
    key = "budget.unique_tokens" if budget.unique_tokens is not None else "budget.unique_fraction"
    error = InputError.one(
        f"the corpus is too small: it has {have:,} tokens ({docs:,} documents) with this tokenizer, but the "
        f"pools need {sum(need.values()):,} (U={need['organic']:,} organic + V={need['validation']:,} validation)",
        file=spec.source_file, key=key,
        hint="lower budget.unique_tokens (or budget.validation_tokens), or use a bigger corpus")
    error.details.update(have_tokens=have, need_tokens=sum(need.values()), **{f"need_{k}": v for k, v in need.items()})
    return error


# ---- progress ----------------------------------------------------------------------------------

class _Rates(ProgressColumn):
    """Documents and tokens per second, averaged over the whole task (rich's window is noise for short pools)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed  # elapsed runs on once finished
        docs, tokens = (task.fields["docs"] / elapsed, task.completed / elapsed) if elapsed else (0.0, 0.0)
        return Text(f"{docs:,.0f} doc/s {tokens:,.0f} tok/s", style="progress.data.speed")


class _Bars:
    """One bar per pool: tokens against the pool's size, documents, shards, both rates and the ETA."""

    def __init__(self, enabled: bool):
        self.progress = Progress(
            TextColumn("{task.description:<10}"), BarColumn(bar_width=20),
            TextColumn("{task.completed:,.0f} tok {task.fields[docs]:,} docs {task.fields[shards]} shards"),
            _Rates(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)
        self.tasks: list[tuple[int, PoolWriter]] = []

    def __enter__(self) -> "_Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.advance(0)
        self.progress.__exit__(*exc)

    def add(self, name: str, total: int, writer: PoolWriter) -> None:
        task = self.progress.add_task(name, total=total, docs=writer.n_docs, shards=len(writer.parts),
                                      completed=writer.n_tokens)
        self.tasks.append((task, writer))

    def advance(self, _docs: int) -> None:
        for task, writer in self.tasks:
            self.progress.update(task, completed=writer.n_tokens, docs=writer.n_docs,
                                 shards=len(writer.parts) + (writer.open_tokens > 0))

