"""The texts a builtin task is cut from (held out) and the texts it must not overlap (pretraining).

Both come from the data stage's token shards, decoded with its tokenizer (SynPro's byte-level
BPE round-trips text exactly), so the data stage needs to write nothing more.

- held out: the validation pool — the held-out documents of the corpus stream, disjoint by
  document from every pretraining pool;
- pretraining: the organic pool (every arm trains on it) and the oracle's extra pool (an item the
  oracle had read would flatter the very curve that effective tokens invert). They serve as the
  builder's `exclude`, which drops passages that a corpus repeats across documents. At the paper's
  scale (23B tokens) no 13-gram set of all of it fits in memory: `max_exclude_tokens` bounds it to
  the first documents of each pool, and the document-level disjointness remains the guarantee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synpro.data.prepare import PreparedData
    from synpro.data.shards import TokenShard

MAX_EXCLUDE_TOKENS = 20_000_000


def pool_texts(shard: "TokenShard", tokenizer, max_tokens: int | None = None) -> list[str]:
    """The documents of a shard as text (EOS dropped), up to about max_tokens tokens."""
    texts, seen = [], 0
    for doc in shard.documents():
        if max_tokens is not None and seen >= max_tokens:
            break
        texts.append(tokenizer.decode(doc.tolist(), skip_special_tokens=True))
        seen += len(doc)
    return texts


def builtin_task_texts(prepared: "PreparedData", *,
                       max_exclude_tokens: int = MAX_EXCLUDE_TOKENS) -> tuple[list[str], list[str]]:
    """(held-out texts, pretraining texts to exclude) for a builtin task's builder."""
    from synpro.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    held_out = pool_texts(prepared.validation, tokenizer)
    pools = [prepared.organic] + ([prepared.extra] if prepared.extra is not None else [])
    exclude = [text for pool in pools for text in pool_texts(pool, tokenizer, max_exclude_tokens // len(pools))]
    return held_out, exclude
