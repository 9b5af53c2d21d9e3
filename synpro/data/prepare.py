"""Carve the validation, organic and extra pools from the corpus: tokenized, disjoint and exact-sized.

The order of work makes sure a trained tokenizer sees organic text only (the data-bound setting):

1. Read the corpus and shuffle its documents with experiment.seed.
2. Every pool is a run of that shuffled order. Validation is carved first, from the far end;
   organic and then extra (the oracle's further unique tokens) from the front. Organic thus starts
   at the first shuffled document whatever the tokenizer turns out to be.
3. A trained tokenizer is fitted on a front prefix sized by a characters-per-token estimate. Its own
   token counts then check that the whole prefix lies within the first U tokens; if not, the prefix
   is re-sized from the measured characters per token and training repeats. So its training text is
   always a part of the organic pool (the organic pool's last document may be cut; its tail joins no pool).
4. Each pool is exactly the first N tokens of its stream of documents, each followed by EOS: only a
   pool's last document is cut (and the cut may fall before its EOS). If the front pools would run
   into validation, the corpus is too small: InputError with the numbers.
5. Outputs go into out_dir; the `_COMPLETE` marker (the stats as JSON) is written last, so a folder
   with it is complete and one without it is a killed run, cleared and redone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from synpro.arms import ARMS
from synpro.data.corpus import iter_documents
from synpro.data.shards import TokenShard, token_dtype, write_shard
from synpro.data.tokenizer import (encode_batch, load_pretrained, prefix_text, save_tokenizer, train_bpe)
from synpro.errors import InputError
from synpro.models import Vocab
from synpro.spec import Spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

COMPLETE = "_COMPLETE"
TOKENIZER_DIR = "tokenizer"
ORGANIC_DOCS = "organic_docs.jsonl"
POOLS = ("validation", "organic", "extra")
# Reading stops after max(READ_MIN_CHARS, READ_CHARS_PER_TOKEN × tokens needed) characters: no tokenizer
# compresses text 16-fold, so a bigger corpus has enough tokens, and memory stays bounded.
READ_MIN_CHARS = 1 << 26
READ_CHARS_PER_TOKEN = 16
FIRST_CHARS_PER_TOKEN = 4.0  # a byte-level BPE of a few thousand tokens on English text
TRAIN_FILL = (0.9, 0.97)  # the tokenizer's training prefix aims at 97% of U tokens and takes 90-100%
MAX_FITS = 5
BATCH_DOCS = 64


@dataclass(frozen=True)
class PreparedData:
    """Everything the arms train and evaluate on; reloadable from out_dir by `load_prepared`."""

    tokenizer_dir: Path
    vocab: Vocab
    organic: TokenShard  # exactly U tokens
    extra: TokenShard | None  # T - U further unique tokens, only when an arm is a reference (oracle)
    validation: TokenShard  # budget.validation_tokens held-out tokens
    organic_docs: Path  # JSONL {"id", "text", "n_tokens"}: the text of each organic-shard document
    stats: dict[str, Any]


@dataclass
class _Pool:
    """Documents (by shuffled position) and their token ids, EOS included, the last one possibly cut."""

    positions: list[int] = field(default_factory=list)
    docs: list[np.ndarray] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(d) for d in self.docs)


def prepare_data(spec: Spec, out_dir: Path, *, progress: bool = True) -> PreparedData:
    """Build the pools into out_dir, or load them if an earlier run completed there.

    out_dir belongs to this function: a half-written one is deleted and redone (it refuses to delete
    a folder holding files it did not write). Concurrent callers on one out_dir wait for each other.
    """
    out_dir = Path(out_dir)
    with _locked(out_dir):
        if (out_dir / COMPLETE).exists():
            return load_prepared(out_dir)
        _clear(out_dir)
        _build(spec, out_dir, progress)
    return load_prepared(out_dir)


def load_prepared(out_dir: Path) -> PreparedData:
    out_dir = Path(out_dir)
    marker = out_dir / COMPLETE
    if not marker.exists():
        raise FileNotFoundError(f"{out_dir} holds no completed data preparation (no {COMPLETE} marker)")
    meta = json.loads(marker.read_text())
    return PreparedData(
        tokenizer_dir=out_dir / TOKENIZER_DIR,
        vocab=Vocab(**meta["vocab"]),
        organic=TokenShard.open(out_dir / "organic"),
        extra=TokenShard.open(out_dir / "extra") if (out_dir / "extra.json").exists() else None,
        validation=TokenShard.open(out_dir / "validation"),
        organic_docs=out_dir / ORGANIC_DOCS,
        stats=meta["stats"],
    )


# ---- the work ----------------------------------------------------------------------------------

def _build(spec: Spec, out_dir: Path, progress: bool) -> None:
    unique, total = spec.budget.resolve(spec.model)
    needs_extra = any(ARMS.get(a.kind).is_reference for a in spec.arms)
    need = {"validation": spec.budget.validation_tokens, "organic": unique,
            "extra": total - unique if needs_extra else 0}
    texts, fully_read = _read(spec, sum(need.values()))
    order = np.random.default_rng(spec.experiment.seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]

    if spec.tokenizer.kind == "train":
        tokenizer, n_train = _fit_tokenizer(shuffled, unique, spec.tokenizer.vocab_size)
    else:
        tokenizer, n_train = load_pretrained(spec), 0

    with _progress_bar(progress) as bar:
        cut = _Cutter(shuffled, tokenizer, bar)
        pools = {"validation": cut("validation", range(len(shuffled) - 1, -1, -1), need["validation"])}
        front = range(pools["validation"].positions[-1])  # up to the innermost validation document
        pools["organic"] = cut("organic", front, need["organic"])
        if needs_extra:
            pools["extra"] = cut("extra", front[len(pools["organic"].positions):], need["extra"])
    if any(pools[name].n_tokens < need[name] for name in pools):
        raise _too_small(spec, need, needs_extra, shuffled, tokenizer, fully_read)

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = save_tokenizer(tokenizer, out_dir / TOKENIZER_DIR)
    for name, pool in pools.items():
        write_shard(out_dir / name, pool.docs, vocab.size, name=name)
    organic_chars = _write_organic_docs(out_dir / ORGANIC_DOCS, pools["organic"], shuffled, order, tokenizer)
    stats = {
        "seed": spec.experiment.seed,
        "corpus": {"source": spec.corpus.source, "docs": len(texts), "chars": sum(map(len, texts)),
                   "fully_read": fully_read},
        "tokenizer": {"kind": spec.tokenizer.kind, "vocab_size": vocab.size, "train_docs": n_train,
                      "train_chars": sum(map(len, shuffled[:n_train]))},
        "pools": {name: {"docs": len(pool.docs), "tokens": pool.n_tokens} for name, pool in pools.items()},
        "organic_chars_per_token": round(organic_chars / need["organic"], 3),
    }
    _write_atomic(out_dir / COMPLETE, json.dumps({"stats": stats, "vocab": asdict(vocab)}, indent=1))


def _read(spec: Spec, tokens_needed: int) -> tuple[list[str], bool]:
    """Corpus documents up to the read limit, and whether the corpus was read to its end."""
    limit = max(READ_MIN_CHARS, READ_CHARS_PER_TOKEN * tokens_needed)
    texts: list[str] = []
    chars = 0
    for text in iter_documents(spec):
        if chars >= limit:
            return texts, False
        texts.append(text)
        chars += len(text)
    return texts, True


def _fit_tokenizer(texts: Sequence[str], unique: int, vocab_size: int) -> tuple["PreTrainedTokenizerFast", int]:
    """A BPE trained on the longest front prefix that its own token counts place inside organic (step 3)."""
    ends = np.cumsum([len(t) for t in texts])
    chars_per_token = FIRST_CHARS_PER_TOKEN
    best: tuple["PreTrainedTokenizerFast", int] | None = None
    for _ in range(MAX_FITS):
        n_docs = min(int(np.searchsorted(ends, TRAIN_FILL[1] * unique * chars_per_token)) + 1, len(texts))
        tokenizer = train_bpe(texts[:n_docs], vocab_size)
        counts = [len(ids) + 1 for ids in encode_batch(tokenizer, texts[:n_docs])]
        tokens = sum(counts)
        if tokens - counts[-1] < unique:  # every training document starts within the first U tokens
            if best is None or n_docs > best[1]:
                best = (tokenizer, n_docs)
            if tokens >= TRAIN_FILL[0] * unique or n_docs == len(texts):
                return best
        chars_per_token = ends[n_docs - 1] / tokens
    if best is None:
        raise RuntimeError(f"no tokenizer training prefix fitted inside the organic pool in {MAX_FITS} tries")
    return best


class _Cutter:
    """Tokenizes shuffled documents in batches and cuts pools of exact token counts from them."""

    def __init__(self, texts: Sequence[str], tokenizer: "PreTrainedTokenizerFast", bar: Progress):
        self.texts, self.tokenizer, self.bar = texts, tokenizer, bar
        self.dtype = token_dtype(len(tokenizer))
        self.eos = tokenizer.eos_token_id

    def __call__(self, name: str, positions: Sequence[int], n_tokens: int) -> _Pool:
        """The first n_tokens of the EOS-joined stream of these documents (fewer if they run out)."""
        pool = _Pool()
        task = self.bar.add_task(name, total=n_tokens, docs=0)
        have = 0
        if n_tokens == 0:  # an oracle with T = U needs no extra tokens
            return pool
        for start in range(0, len(positions), BATCH_DOCS):
            batch = positions[start:start + BATCH_DOCS]
            for position, ids in zip(batch, encode_batch(self.tokenizer, (self.texts[p] for p in batch))):
                doc = np.asarray([*ids, self.eos], dtype=self.dtype)[:n_tokens - have]
                pool.positions.append(position)
                pool.docs.append(doc)
                have += len(doc)
                self.bar.update(task, advance=len(doc), docs=len(pool.docs))
                if have == n_tokens:
                    return pool
        return pool


def _too_small(spec: Spec, need: dict[str, int], needs_extra: bool, texts: Sequence[str],
               tokenizer: "PreTrainedTokenizerFast", fully_read: bool) -> InputError:
    have = sum(len(ids) + 1 for start in range(0, len(texts), BATCH_DOCS)
               for ids in encode_batch(tokenizer, texts[start:start + BATCH_DOCS]))
    parts = f"U={need['organic']:,} organic + V={need['validation']:,} validation"
    if needs_extra:
        parts += f" + T-U={need['extra']:,} extra unique tokens for the oracle arm"
    changes = ["lower budget.unique_tokens / budget.total_tokens (or budget.validation_tokens)"]
    if needs_extra:
        changes.append("drop the oracle arm")
    changes.append("use a bigger corpus")
    budget = spec.budget
    key = (("budget.total_tokens" if budget.total_tokens is not None else "budget.epochs") if needs_extra
           else ("budget.unique_tokens" if budget.unique_tokens is not None else "budget.unique_fraction"))
    error = InputError.one(
        f"the corpus is too small: it has {'at least ' if not fully_read else ''}{have:,} tokens "
        f"({len(texts):,} documents) with this tokenizer, but the pools need {sum(need.values()):,} "
        f"({parts})", file=spec.source_file, key=key, hint=", or ".join(changes))
    error.details.update(have_tokens=have, need_tokens=sum(need.values()), **{f"need_{k}": v for k, v in need.items()})
    return error


def _write_organic_docs(path: Path, pool: _Pool, texts: Sequence[str], order: np.ndarray,
                        tokenizer: "PreTrainedTokenizerFast") -> int:
    """One JSON line per organic-shard document, the last one's text cut where its tokens end; total chars."""
    chars = 0
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, (position, doc) in enumerate(zip(pool.positions, pool.docs)):
            text = texts[position]
            if i == len(pool.docs) - 1:
                content = len(doc) - (doc[-1] == tokenizer.eos_token_id)
                text = prefix_text(tokenizer, text, content)
            chars += len(text)
            f.write(json.dumps({"id": str(order[position]), "text": text, "n_tokens": len(doc)}) + "\n")
    os.replace(tmp, path)
    return chars


# ---- files and progress ------------------------------------------------------------------------

@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive lock beside out_dir: parallel trial workers often ask for the same data at once."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clear(out_dir: Path) -> None:
    """Delete what a killed run left, but never a folder holding files this module did not write."""
    if not out_dir.exists():
        return
    ours = {COMPLETE, f"{COMPLETE}.tmp", TOKENIZER_DIR, ORGANIC_DOCS, f"{ORGANIC_DOCS}.tmp"}
    ours |= {f"{pool}{suffix}" for pool in POOLS for suffix in (".bin", ".bin.tmp", ".idx.npy", ".json", ".json.tmp")}
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name not in ours)
    if strangers:
        raise FileExistsError(f"{out_dir} is not a data preparation folder (it holds {', '.join(strangers[:5])}); "
                              "refusing to clear it")
    shutil.rmtree(out_dir)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _TokensPerSecond(ProgressColumn):
    """Average over the whole task: rich's windowed estimate is noise for sub-second pools."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed  # elapsed runs on once finished
        speed = task.completed / elapsed if elapsed else 0.0
        return Text(f"{speed:,.0f} tok/s", style="progress.data.speed")


def _progress_bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(bar_width=20),
                    TextColumn("{task.completed:,.0f} tok, {task.fields[docs]:,} docs"),
                    _TokensPerSecond(), TimeElapsedColumn(), disable=not enabled)
