"""The suite's CLI processes forked from a warm interpreter (tests/warm_cli.py) against plain `python -m cli`
processes: the same tests run both ways, interleaved round by round so a busy or throttled machine weighs
on both alike, and the wall-clock ratio is printed.

    python benchmarks/test_processes.py                      # ~8 min on 2 cores
    python benchmarks/test_processes.py --rounds 2 -- tests/test_faults.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# End-to-end sweeps, exits at validation and killed-and-resumed runs: most of what the suite's CLI calls do.
DEFAULT_TESTS = ["tests/test_sweep.py", "tests/test_resolve.py", "tests/test_pipeline.py"]


def timed(tests: list[str], plain: bool, workers: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SYNPRO_TEST_PLAIN_PROCESSES", None)
    if plain:
        env["SYNPRO_TEST_PLAIN_PROCESSES"] = "1"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
                           "--dist", "worksteal", *tests], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pytest ({'plain' if plain else 'warm'}) exited {done.returncode}:\n{done.stdout[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode (interleaved)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers, as `make test` runs them")
    parser.add_argument("tests", nargs="*", default=DEFAULT_TESTS, help="test paths (default: %(default)s)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"plain": [], "warm": []}
    for round_ in range(args.rounds):
        order = ("plain", "warm") if round_ % 2 == 0 else ("warm", "plain")
        for mode in order:
            times[mode].append(timed(args.tests, mode == "plain", args.workers))
            print(f"round {round_ + 1}: {mode:5s} {times[mode][-1]:7.1f} s", flush=True)
    plain, warm = statistics.median(times["plain"]), statistics.median(times["warm"])
    print(f"median wall: plain processes {plain:.1f} s, forked from the warm interpreter {warm:.1f} s: "
          f"{plain / warm:.2f}x")


if __name__ == "__main__":
    main()
