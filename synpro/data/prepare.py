"""Carve the validation, organic and extra pools from the corpus: tokenized, disjoint and exact-sized.

Two stages use this module: `pools` (tokenizer, validation, organic) and `extra` (the oracle's
further unique tokens). Keeping the extra pool apart means adding or dropping an oracle arm never
changes the organic pool's key, and so never the key of anything trained or generated from it.

The order of work makes sure a trained tokenizer sees organic text only (the data-bound setting):

1. Read the corpus and shuffle its documents with experiment.seed.
2. Every pool is a run of that shuffled order. Validation is carved first, from the far end;
   organic from the front. Organic thus starts at the first shuffled document whatever the
   tokenizer turns out to be. `order.npy` keeps the shuffled order of what was read.
3. A trained tokenizer is fitted on a front prefix sized by a characters-per-token estimate. Its own
   token counts then check that the whole prefix lies within the first U tokens; if not, the prefix
   is re-sized from the measured characters per token and training repeats. So its training text is
   always a part of the organic pool (the organic pool's last document may be cut; its tail joins no pool).
4. Each pool is exactly the first N tokens of its stream of documents, each followed by EOS: only a
   pool's last document is cut (and the cut may fall before its EOS). If the pools would run into
   each other, the corpus is too small: InputError with the numbers.
5. The extra pool continues the same shuffled order after the organic pool's documents, up to the
   innermost validation document, then takes documents the pools stage never read, in a seeded
   shuffle of their own. It never holds an organic or validation document.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from synpro.core.fs import write_atomic
from synpro.data.corpus import iter_documents
from synpro.data.shards import TokenShard, token_dtype, write_shard
from synpro.data.tokenizer import (encode_batch, load_pretrained, prefix_text, save_tokenizer, train_bpe)
from synpro.errors import InputError
from synpro.models import Vocab
from synpro.spec import Spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

POOLS_META = "pools.json"
ORDER = "order.npy"
TOKENIZER_DIR = "tokenizer"
ORGANIC_DOCS = "organic_docs.jsonl"
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
    """Everything the arms train and evaluate on; the pools stage's output plus, for an oracle, extra."""

    tokenizer_dir: Path
    vocab: Vocab
    organic: TokenShard  # exactly U tokens
    extra: TokenShard | None  # the oracle's further unique tokens (the `extra` stage), else None
    validation: TokenShard  # budget.validation_tokens held-out tokens
    organic_docs: Path  # JSONL {"id", "text", "n_tokens"}: the text of each organic-shard document
    order: Path  # the shuffled corpus order the pools were cut from (for the extra pool)
    stats: dict[str, Any]


@dataclass
class _Pool:
    """Documents (by shuffled position) and their token ids, EOS included, the last one possibly cut."""

    positions: list[int] = field(default_factory=list)
    docs: list[np.ndarray] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(d) for d in self.docs)


def build_pools(spec: Spec, out_dir: Path, *, progress: bool = True) -> None:
    """Tokenizer, validation and organic pools into out_dir (the `pools` stage's work; redone whole)."""
    unique = spec.budget.resolve(spec.model)[0]
    need = {"validation": spec.budget.validation_tokens, "organic": unique}
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
        inner = pools["validation"].positions[-1] if pools["validation"].positions else 0
        pools["organic"] = cut("organic", range(inner), need["organic"])
    if any(pools[name].n_tokens < need[name] for name in pools):
        raise _too_small(spec, need, shuffled, tokenizer, fully_read)

    vocab = save_tokenizer(tokenizer, out_dir / TOKENIZER_DIR)
    for name, pool in pools.items():
        write_shard(out_dir / name, pool.docs, vocab.size, name=name)
    organic_chars = _write_organic_docs(out_dir / ORGANIC_DOCS, pools["organic"], shuffled, order, tokenizer)
    np.save(out_dir / ORDER, order)
    stats = {
        "seed": spec.experiment.seed,
        "corpus": {"source": spec.corpus.source, "docs": len(texts), "chars": sum(map(len, texts)),
                   "fully_read": fully_read},
        "tokenizer": {"kind": spec.tokenizer.kind, "vocab_size": vocab.size, "train_docs": n_train,
                      "train_chars": sum(map(len, shuffled[:n_train]))},
        "pools": {name: {"docs": len(pool.docs), "tokens": pool.n_tokens} for name, pool in pools.items()},
        "organic_chars_per_token": round(organic_chars / need["organic"], 3),
        # Where the extra pool may start and must stop, in the shuffled order (see step 5).
        "organic_end": len(pools["organic"].positions), "validation_inner": inner,
    }
    write_atomic(out_dir / POOLS_META, json.dumps({"stats": stats, "vocab": asdict(vocab)}, indent=1))


def build_extra(spec: Spec, pools: PreparedData, n_tokens: int, out_dir: Path, *, progress: bool = True) -> None:
    """The oracle's `n_tokens` further unique tokens into out_dir (the `extra` stage's work)."""
    texts, _ = _read(spec, spec.budget.resolve(spec.model)[0] + spec.budget.validation_tokens + n_tokens)
    meta = pools.stats
    order = np.load(pools.order)
    if len(order) > len(texts) or meta["corpus"]["docs"] > len(texts):
        raise RuntimeError(f"the corpus now has fewer documents than when {pools.order.parent} was built")
    unread = np.arange(len(order), len(texts))
    unread = unread[np.random.default_rng([spec.experiment.seed, 1]).permutation(len(unread))]
    sequence = [int(i) for i in order[meta["organic_end"]:meta["validation_inner"]]] + [int(i) for i in unread]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pools.tokenizer_dir))
    with _progress_bar(progress) as bar:
        pool = _Cutter([texts[i] for i in sequence], tokenizer, bar)("extra", range(len(sequence)), n_tokens)
    if pool.n_tokens < n_tokens:
        key = "budget.total_tokens" if spec.budget.total_tokens is not None else "budget.epochs"
        raise InputError.one(
            f"the corpus is too small for the oracle arm: after the organic and validation pools it has "
            f"{pool.n_tokens:,} more unique tokens, but the oracle needs {n_tokens:,} (T - U)",
            file=spec.source_file, key=key,
            hint="lower budget.total_tokens (or budget.epochs), drop the oracle arm, or use a bigger corpus")
    write_shard(out_dir / "extra", pool.docs, pools.vocab.size, name="extra")


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
        order=out_dir / ORDER,
        stats=meta["stats"],
    )


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


def _too_small(spec: Spec, need: dict[str, int], texts: Sequence[str],
               tokenizer: "PreTrainedTokenizerFast", fully_read: bool) -> InputError:
    have = sum(len(ids) + 1 for start in range(0, len(texts), BATCH_DOCS)
               for ids in encode_batch(tokenizer, texts[start:start + BATCH_DOCS]))
    budget = spec.budget
    key = "budget.unique_tokens" if budget.unique_tokens is not None else "budget.unique_fraction"
    error = InputError.one(
        f"the corpus is too small: it has {'at least ' if not fully_read else ''}{have:,} tokens "
        f"({len(texts):,} documents) with this tokenizer, but the pools need {sum(need.values()):,} "
        f"(U={need['organic']:,} organic + V={need['validation']:,} validation)", file=spec.source_file, key=key,
        hint="lower budget.unique_tokens (or budget.validation_tokens), or use a bigger corpus")
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


# ---- progress ----------------------------------------------------------------------------------

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
