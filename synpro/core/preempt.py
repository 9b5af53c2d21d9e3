"""Pre-emption: SIGTERM or SIGUSR2 (Slurm's warning before a time limit) asks a running stage to save
its state at once and stop, so the job can be requeued and resume where it stopped.

A handler only sets a flag; work that can checkpoint (the trainer) looks at it between steps, saves,
and raises `Preempted`. Outside a stage's run the handlers are not installed: a signal there keeps
its usual meaning.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again"; what a pre-empted stage process exits with

_received: list[int] = []


class Preempted(Exception):
    """A stage stopped on a pre-emption signal after saving its state; running it again resumes it."""


def requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _received[0] if _received else None


def clear() -> None:
    _received.clear()


def _handler(signum: int, frame: Any) -> None:
    if signum not in _received:
        _received.append(signum)


@contextmanager
def handling() -> Iterator[None]:
    """While inside, SIGTERM and SIGUSR2 set the flag instead of ending the process (main thread only;
    elsewhere this does nothing). The previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
