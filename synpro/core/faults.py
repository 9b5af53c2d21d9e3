"""Named points where the fault-injection tests make this process die as a power cut would.

`SYNPRO_KILL_AT=name` (or `name:N`, the N-th time the point is reached) sends SIGKILL to this
process at `kill_point(name)`: no handler, no cleanup, exactly what a crash leaves behind. Unset,
a kill point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    wanted = os.environ.get("SYNPRO_KILL_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
