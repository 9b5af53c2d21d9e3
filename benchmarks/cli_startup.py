"""Fixed cost of a `synpro` CLI process: a tiny two-arm sweep run cold (fresh workdir), re-run with
nothing left to do (every stage cached, every trial stored), `synpro validate` and `synpro results`.

Tests start dozens of such processes and users feel it on every resume, so a re-run should cost
little more than the interpreter and the imports it cannot avoid (MLflow, Optuna, SQLAlchemy), and
never a model load, torch, or a parse of the builtin corpus. Each process is timed from outside,
wall clock, and the median of `--repeat` runs is printed. With `--checkout DIR` (more than once)
the same measurements run against other checkouts, interleaved run by run so a busy machine weighs
on every side alike: e.g. `--checkout . --checkout ../main` for before/after.

Imports dominate, so bytecode caching matters: with PYTHONDONTWRITEBYTECODE=1 and no cached .pyc
for the venv every process recompiles what it imports (`make test` unexports that variable).

    python benchmarks/cli_startup.py                       # ~2 min on 2 busy cores
    python benchmarks/cli_startup.py --checkout . --checkout /path/to/other --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The shape of tests/test_sweep.py's smallest spec: one grid point, repetition and the oracle.
SPEC = """
experiment: {name: startup, seed: 1}
tokenizer: {vocab_size: 300}
model: {preset: tiny}
budget: {unique_tokens: 2000, total_tokens: 6000, validation_tokens: 1000}
training: {lr: 1.0e-2, warmup_tokens: 1000, batch_size: 8, seq_len: 32, eval_interval_tokens: 2048}
arms: [{kind: repetition}, {kind: oracle}]
search:
  sampler: grid
  objective: {arm: repetition, metric: final_val_loss, direction: minimize}
  params:
    training.lr: {type: categorical, choices: [0.01]}
"""
COMMANDS = ("sweep (cold)", "sweep (re-run)", "validate", "results")


def timed(checkout: Path, args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{checkout}: synpro {' '.join(args)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a SynPro checkout to measure (repeatable; default: this one)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command per checkout (median shown)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [Path(__file__).resolve().parents[1]]]

    times: dict[tuple[Path, str], list[float]] = {(c, cmd): [] for c in checkouts for cmd in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = root / "startup.yaml"
        spec.write_text(SPEC)
        for i in range(args.repeat):
            for n, checkout in enumerate(checkouts):
                workdir = root / f"wd-{n}-{i}"
                sweep = ["sweep", str(spec), "--workdir", str(workdir), "--no-progress"]
                times[checkout, "sweep (cold)"].append(timed(checkout, sweep, root))
                times[checkout, "sweep (re-run)"].append(timed(checkout, sweep, root))
                times[checkout, "validate"].append(timed(checkout, ["validate", str(spec)], root))
                times[checkout, "results"].append(timed(checkout, ["results", "--workdir", str(workdir)], root))
    width = max(len(str(c)) for c in checkouts)
    print(f"median wall seconds of {args.repeat} runs (each a fresh process)")
    print(f"{'checkout':<{width}}  " + "  ".join(f"{cmd:>14}" for cmd in COMMANDS))
    for checkout in checkouts:
        print(f"{str(checkout):<{width}}  " + "  ".join(f"{statistics.median(times[checkout, cmd]):>14.1f}"
                                                       for cmd in COMMANDS))


if __name__ == "__main__":
    main()
