"""Training data: token shards mixed in proportion to their sizes (or to given weights), shuffled,
repeated to a budget.

Every shard's stream is cut into non-overlapping `seq_len` windows (a tail shorter than a window
is dropped). Epoch `e` is a permutation, seeded by `(seed, e)`, of all windows of all sources
together, so each source's share of any stretch of training follows its token count, and a source
is repeated only by starting a new epoch. The window at global position `p` is therefore a pure
function of `(seed, p)`: the loader's whole state is `(epoch, index)`, and a loader restored from
it yields exactly what an uninterrupted one would.

With `weights` (each source's share of the windows trained), an epoch is a permutation of slots
instead: source i holds `round(w_i · N)` of its N slots (N = all windows, at least
`WEIGHT_RESOLUTION`, so a share is kept to within 1/(2N)), and its k-th slot of epoch e reads its
window number `(e · slots_i + k) mod windows_i`: a source with more slots than windows is repeated
within an epoch, one with fewer is read in turn across epochs, and over whole epochs every window
of a source is read as often as any other (±1). Without weights every source's slots are its
windows, which is the order above exactly. `usage` counts passes over each source's own windows either way.
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


# Slots per epoch at least, when sources are mixed by weight: a share is then kept to within 0.5%, and
# an epoch stays short enough that a short run sees about its whole composition.
WEIGHT_RESOLUTION = 100


def _windows(shard: TokenShard, seq_len: int) -> int:
    return shard.n_tokens // seq_len


def _slots(weights: Sequence[float], windows: np.ndarray) -> np.ndarray:
    """Each source's slots per epoch: its weight's share of N, largest remainders rounded up."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(windows) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights {list(weights)} need one non-negative value per source and a positive sum")
    empty = [i for i in range(len(w)) if w[i] > 0 and windows[i] == 0]
    if empty:
        raise ValueError(f"source(s) {empty} have a weight but no full window to read")
    n = max(int(windows.sum()), WEIGHT_RESOLUTION)
    exact = w / w.sum() * n
    slots = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - slots), kind="stable")
    slots[order[:n - int(slots.sum())]] += 1
    return slots


class TokenLoader:
    """An endless iterator over optimizer steps; each item is this rank's micro-batches of one step.

    A step takes `batch_size` consecutive windows of the global order; under data parallelism,
    rank `r` of `world_size` keeps the `r`-th contiguous slice, so ranks never read the same window
    and the global batch does not depend on the number of ranks.
    """

    def __init__(self, sources: Sequence[TokenShard], *, seq_len: int, batch_size: int,
                 micro_batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, weights: Sequence[float] | None = None):
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
        if self._per_source.sum() == 0:
            raise ValueError(f"the token sources hold no full window of seq_len={seq_len} tokens")
        self._slots = self._per_source if weights is None else _slots(weights, self._per_source)
        self.n_windows = int(self._slots.sum())  # slots of one epoch (its windows, without weights)
        self._first = np.concatenate([[0], np.cumsum(self._slots)])
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

    def _windows_at(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The sources and their window numbers at global positions start … start+count-1."""
        sources = np.empty(count, dtype=np.int64)
        windows = np.empty(count, dtype=np.int64)
        filled = 0
        while filled < count:
            epoch, index = divmod(start + filled, self.n_windows)
            take = min(count - filled, self.n_windows - index)
            slots = self._order(epoch)[index:index + take]
            source = self._source_of(slots)
            k = slots - self._first[source]
            sources[filled:filled + take] = source
            windows[filled:filled + take] = (epoch * self._slots[source] + k) % self._per_source[source]
            filled += take
        return sources, windows

    def _source_of(self, slot_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._first, slot_ids, side="right") - 1

    # ---- reading -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        return self

    def __next__(self) -> list[torch.Tensor]:
        local = self.batch_size // self.world_size
        sources, windows = self._windows_at(self.position + self.rank * local, local)
        self.position += self.batch_size
        batch = np.empty((local, self.seq_len), dtype=np.int64)
        for row, (window, source) in enumerate(zip(windows, sources)):
            start = int(window) * self.seq_len
            batch[row] = self._tokens[source][start:start + self.seq_len]
        tensor = torch.from_numpy(batch)
        if self.pin_memory:
            tensor = tensor.pin_memory()
        return list(tensor.split(self.micro_batch_size))

    # ---- reporting -----------------------------------------------------------------------------

    def usage(self) -> dict[str, SourceUsage]:
        """Tokens and epochs seen per source, over all ranks, from the position alone."""
        full, index = divmod(self.position, self.n_windows)
        counts = full * self._slots
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
