"""Training data: token shards mixed in proportion to their sizes, shuffled, repeated to a budget.

Every shard's stream is cut into non-overlapping `seq_len` windows (a tail shorter than a window
is dropped). Epoch `e` is a permutation, seeded by `(seed, e)`, of all windows of all sources
together, so each source's share of any stretch of training follows its token count, and a source
is repeated only by starting a new epoch. The window at global position `p` is therefore a pure
function of `(seed, p)`: the loader's whole state is `(epoch, index)`, and a loader restored from
it yields exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from synpro.data.shards import TokenShard


@dataclass(frozen=True)
class SourceUsage:
    """How much of one source training has seen (epochs = passes over its usable windows)."""

    tokens: int
    epochs: float


def _windows(shard: TokenShard, seq_len: int) -> int:
    return shard.n_tokens // seq_len


class TokenLoader:
    """An endless iterator over optimizer steps; each item is this rank's micro-batches of one step.

    A step takes `batch_size` consecutive windows of the global order; under data parallelism,
    rank `r` of `world_size` keeps the `r`-th contiguous slice, so ranks never read the same window
    and the global batch does not depend on the number of ranks.
    """

    def __init__(self, sources: Sequence[TokenShard], *, seq_len: int, batch_size: int,
                 micro_batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False):
        if not sources:
            raise ValueError("the loader needs at least one token source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"token sources need distinct names to report usage, got {names}")
        if batch_size % world_size or (batch_size // world_size) % micro_batch_size:
            raise ValueError(f"batch_size {batch_size} must split into {world_size} rank(s) of whole "
                             f"micro-batches of {micro_batch_size}")
        self.sources = list(sources)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory
        self._per_source = np.array([_windows(s, seq_len) for s in sources], dtype=np.int64)
        self.n_windows = int(self._per_source.sum())
        if self.n_windows == 0:
            raise ValueError(f"the token sources hold no full window of seq_len={seq_len} tokens")
        self._first = np.concatenate([[0], np.cumsum(self._per_source)])
        self._tokens = [s.tokens() for s in sources]
        self._cached: tuple[int, np.ndarray] | None = None
        self.position = 0  # windows of the global order consumed so far

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        epoch, index = divmod(self.position, self.n_windows)
        return {"epoch": epoch, "index": index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["epoch"] * self.n_windows + state["index"]

    # ---- order ---------------------------------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, rng.permutation(self.n_windows))
        return self._cached[1]

    def _window_ids(self, start: int, count: int) -> np.ndarray:
        ids = np.empty(count, dtype=np.int64)
        filled = 0
        while filled < count:
            epoch, index = divmod(start + filled, self.n_windows)
            take = min(count - filled, self.n_windows - index)
            ids[filled:filled + take] = self._order(epoch)[index:index + take]
            filled += take
        return ids

    def _source_of(self, window_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._first, window_ids, side="right") - 1

    # ---- reading -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        return self

    def __next__(self) -> list[torch.Tensor]:
        local = self.batch_size // self.world_size
        ids = self._window_ids(self.position + self.rank * local, local)
        self.position += self.batch_size
        batch = np.empty((local, self.seq_len), dtype=np.int64)
        for row, (window, source) in enumerate(zip(ids, self._source_of(ids))):
            start = int(window - self._first[source]) * self.seq_len
            batch[row] = self._tokens[source][start:start + self.seq_len]
        tensor = torch.from_numpy(batch)
        if self.pin_memory:
            tensor = tensor.pin_memory()
        return list(tensor.split(self.micro_batch_size))

    # ---- reporting -----------------------------------------------------------------------------

    def usage(self) -> dict[str, SourceUsage]:
        """Tokens and epochs seen per source, over all ranks, from the position alone."""
        full, index = divmod(self.position, self.n_windows)
        counts = full * self._per_source
        if index:
            counts = counts + np.bincount(self._source_of(self._order(full)[:index]),
                                          minlength=len(self.sources))
        return {
            s.name: SourceUsage(tokens=int(c) * self.seq_len,
                                epochs=float(c / n) if n else 0.0)
            for s, c, n in zip(self.sources, counts, self._per_source)
        }


def eval_batches(shard: TokenShard, *, seq_len: int, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> Iterator[torch.Tensor]:
    """Every full window of a shard in order, batched; rank `r` gets every `world_size`-th window."""
    tokens = shard.tokens()
    windows = np.arange(rank, _windows(shard, seq_len), world_size)
    for first in range(0, len(windows), batch_size):
        rows = windows[first:first + batch_size]
        batch = np.stack([tokens[w * seq_len:(w + 1) * seq_len] for w in rows]).astype(np.int64)
        yield torch.from_numpy(batch)
