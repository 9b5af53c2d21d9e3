"""Documents → token ids in worker processes, in document order whatever the number of workers.

The stage's process reads the corpus and cuts it into batches (about BATCH_CHARS of text); batch k
goes to worker k mod N and results come back in that same order, so what a stage writes is a pure
function of the documents, never of N or of timing. A worker holds one batch at a time and gets its
next only once its result is taken (so no pipe can fill both ways); with the next batch read ahead
while it works, memory is about N + 1 batches, whatever the corpus.

Workers are spawned, not forked (the sweep process has threads whose locks a fork would copy), load
the tokenizer from its JSON, run single-threaded (TOKENIZERS_PARALLELISM off: N workers use N
cores) and exit when their pipe closes, so a killed stage leaves no orphans. With one worker the
same function runs in the stage's own process: nothing to start.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from itertools import chain
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np

BATCH_CHARS = 1 << 18  # text per batch: enough that pipes and calls cost little per token, and a
# batch's encodings (tens of bytes a token in `tokenizers`) stay a few MB
BATCH_DOCS = 256
_SERIAL = "TOKENIZERS_PARALLELISM"

T = TypeVar("T")
log = logging.getLogger(__name__)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def batches(items: Iterable[tuple[T, str]]) -> Iterator[tuple[list[T], list[str]]]:
    """(tags, texts) groups of about BATCH_CHARS characters (at most BATCH_DOCS texts) in order."""
    tags: list[T] = []
    texts: list[str] = []
    chars = 0
    for tag, text in items:
        tags.append(tag)
        texts.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
            yield tags, texts
            tags, texts, chars = [], [], 0
    if texts:
        yield tags, texts


class Encoder:
    """A `tokenizers.Tokenizer` that turns a batch of texts into one EOS-terminated token array."""

    def __init__(self, tokenizer_json: str, eos: int, dtype: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.eos, self.dtype = eos, dtype

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every text's ids followed by EOS, joined; each text's length, EOS included)."""
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(chain(x, (self.eos,)) for x in ids), dtype=self.dtype,
                           count=int(lengths.sum()))
        return flat, lengths


def _worker(tasks: Any, results: Any, tokenizer_json: str, eos: int, dtype: str) -> None:
    os.environ[_SERIAL] = "false"
    encode = Encoder(tokenizer_json, eos, dtype)
    while True:
        try:
            texts = tasks.recv()
        except (EOFError, OSError):  # the stage finished, or died: either way, nothing more to do
            return
        try:
            results.send(encode(texts))
        except (BrokenPipeError, OSError):
            return


@contextmanager
def _serial() -> Iterator[None]:
    """The in-process encoder on one thread, like a worker (then restores what was set)."""
    before = os.environ.get(_SERIAL)
    os.environ[_SERIAL] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_SERIAL, None)
        else:
            os.environ[_SERIAL] = before


class Tokenizing:
    """`map` batches of texts to (flat tokens, lengths) with N workers; use as a context manager."""

    def __init__(self, tokenizer_json: str, eos: int, dtype: str, workers: int):
        self.workers = max(1, workers)
        self._args = (tokenizer_json, eos, dtype)
        self._procs: list[Any] = []
        self._pipes: list[tuple[Any, Any]] = []

    def __enter__(self) -> "Tokenizing":
        import multiprocessing

        if self.workers > 1 and multiprocessing.current_process().daemon:
            log.info("tokenizing in this process: a daemonic process may not start workers")
            self.workers = 1
        if self.workers > 1:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(self.workers):
                task_r, task_w = ctx.Pipe(duplex=False)
                result_r, result_w = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(task_r, result_w, *self._args), daemon=True)
                proc.start()
                task_r.close()  # the worker's ends live in the worker only: its death or ours closes them
                result_w.close()
                self._procs.append(proc)
                self._pipes.append((task_w, result_r))
        return self

    def __exit__(self, *exc: object) -> None:
        for task_w, result_r in self._pipes:
            task_w.close()
            result_r.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs, self._pipes = [], []

    def map(self, groups: Iterable[tuple[T, list[str]]]) -> Iterator[tuple[T, list[str], np.ndarray, np.ndarray]]:
        """(tag, texts, flat tokens, lengths) per (tag, texts) group, in the groups' order."""
        if self.workers == 1:
            encode = Encoder(*self._args)
            for tag, texts in groups:
                with _serial():
                    flat, lengths = encode(texts)
                yield tag, texts, flat, lengths
            return
        pending: list[tuple[T, list[str]]] = []  # the batches in flight, oldest first; batch k is on worker k % N
        sent = taken = 0
        groups = iter(groups)
        for tag, texts in groups:  # fill every worker once
            self._pipes[sent % self.workers][0].send(texts)
            pending.append((tag, texts))
            sent += 1
            if sent == self.workers:
                break
        while taken < sent:
            worker = taken % self.workers
            ahead = next(groups, None)  # read while the workers work
            flat, lengths = self._recv(worker)
            taken += 1
            if ahead is not None:
                self._pipes[sent % self.workers][0].send(ahead[1])  # sent % N == worker: it is free now
                pending.append(ahead)
                sent += 1
            tag, texts = pending.pop(0)
            yield tag, texts, flat, lengths

    def _recv(self, worker: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._pipes[worker][1].recv()
        except EOFError:
            code = self._procs[worker].exitcode
            raise RuntimeError(f"tokenizer worker {worker} died (exit code {code})") from None
