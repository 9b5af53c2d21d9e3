"""Measuring a stage while it runs: wall time over every attempt, the devices it held, device-hours.

The runner starts a `Meter` in the process that holds a stage's lock and writes `Meter.finished()` into
the manifest as `usage`; synpro.ledger reads it back per arm and per trial (its docstring says how).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol


class Held(Protocol):
    """What a stage was given to run on (synpro.executors' Resources has these): stages import no executor."""

    processes: int
    gpus: int
    cpus: int | None

ATTEMPTS = ".usage.jsonl"
UNITS = {"gpu": "gpu_hours", "cpu": "cpu_core_hours"}


def _torch():
    return sys.modules.get("torch")  # never imported here: a stage that did not load torch used no GPU


def _cuda_ready(torch: Any) -> bool:
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


class Meter:
    """Times one attempt at a stage in the process that holds its lock."""

    def __init__(self, folder: Path, resources: Held | None):
        self.folder, self.resources = Path(folder), resources
        self.started = time.time()
        self.cpu = _cpu_seconds()
        torch = _torch()
        self.gpu_base = 0  # memory this process already held on the GPU (an earlier inline stage's)
        if _cuda_ready(torch):
            torch.cuda.reset_peak_memory_stats()
            self.gpu_base = torch.cuda.memory_allocated()

    def _held(self) -> tuple[str, int, float | None]:
        """(device, how many, peak GPU memory GB): the GPUs the stage asked for, or the one this process
        touched, else its CPU cores (the resources' cpus per process, or the threads torch may use)."""
        r = self.resources
        torch = _torch()
        peak = torch.cuda.max_memory_allocated() if _cuda_ready(torch) else 0
        peak_gb = peak / 1e9 if peak > self.gpu_base else None
        if r is not None and r.gpus:
            return "gpu", r.gpus, peak_gb
        if peak_gb:
            return "gpu", 1, peak_gb
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = min(cores, torch.get_num_threads()) if torch else cores
        per = r.cpus if r is not None and r.cpus else threads
        return "cpu", per * (r.processes if r is not None else 1), None

    def _attempt(self) -> dict[str, Any]:
        device, n, peak = self._held()
        seconds = time.time() - self.started
        return {"device": device, "devices": n, "seconds": seconds, "device_hours": seconds * n / 3600,
                "cpu_seconds": _cpu_seconds() - self.cpu, **({"peak_gpu_memory_gb": peak} if peak else {})}

    def failed(self) -> None:
        """An attempt that ends without a manifest (error, Ctrl-C, pre-emption): keep its time for the next."""
        try:
            with open(self.folder / ATTEMPTS, "a") as f:
                f.write(json.dumps(self._attempt()) + "\n")
        except OSError:
            pass  # a full disk must not hide the stage's own error

    def finished(self) -> dict[str, Any]:
        """The manifest's `usage`: this attempt plus the earlier ones, in the unit of the device it held."""
        last = self._attempt()
        earlier = _read_attempts(self.folder / ATTEMPTS)
        hours = {unit: sum(a["device_hours"] for a in [*earlier, last] if a["device"] == device)
                 for device, unit in UNITS.items()}
        return {**last, "attempts": len(earlier) + 1,
                "seconds": sum(a["seconds"] for a in [*earlier, last]),
                "cpu_seconds": sum(a.get("cpu_seconds", 0.0) for a in [*earlier, last]), **hours,
                "device_hours": hours[UNITS[last["device"]]]}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _read_attempts(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill
    return out
