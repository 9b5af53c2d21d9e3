"""SynPro's effect at micro scale: run `experiments/micro-repro.yaml` and print one table of what it measured.

Per arm: the effective-token multiplier over repetition (mean over seeds) with its 95% seed interval, the
number of seeds, the share of its training tokens that were synthetic, its generators' held-out filter pass
rate (after GRPO; the prompted arm's generator is untrained) and its sets' pass rate, the fraction of the
oracle's gap over repetition it closes ((m - 1) / (m_oracle - 1)), and every seed's multiplier. The loss
curves and the multiplier-per-seed plot are written as PNGs (`synpro compare`). The sweep is resumable: a
re-run with everything finished only reads the results.

    python benchmarks/micro_repro.py                           # cold: the whole sweep (~1-2 hours on 2 cores)
    python benchmarks/micro_repro.py --workdir runs/micro-repro --out reports/micro-repro

The last line is `synpro multiplier vs repetition: X [lo, hi]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def synpro(*args: str, env: dict[str, str]) -> str:
    """One CLI call with this interpreter's `synpro`; its output is streamed through unless captured."""
    cmd = [sys.executable, "-m", "cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=True, text=True, stdout=subprocess.PIPE).stdout


def share(seed: dict[str, Any]) -> float | None:
    return seed.get("synthetic_share")


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def generator_rates(seed: dict[str, Any]) -> tuple[float | None, float | None]:
    """Mean held-out pass rate of the generators behind the sets an arm trained on, and of the sets."""
    sets = seed.get("synthetic_sets") or {}
    heldout = [s["heldout_pass_rate"] for s in sets.values() if s.get("heldout_pass_rate") is not None]
    passed = [s["pass_rate"] for s in sets.values() if s.get("pass_rate") is not None]
    return mean(heldout), mean(passed)


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def table(arms: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
    oracle = arms.get("oracle", {}).get("multiplier_vs_repetition")
    header = (f"{'arm':<11} {'multiplier':>10} {'95% seed interval':>18} {'n':>2} {'synthetic':>9} "
              f"{'gen. held-out':>13} {'set pass':>8} {'oracle gap':>10}  per seed")
    lines = [header, "-" * len(header)]
    for name, arm in arms.items():
        m, ci = arm.get("multiplier_vs_repetition"), arm.get("multiplier_ci")
        seeds = arm.get("per_seed", {})
        shares = [s for s in (share(v) for v in seeds.values()) if s is not None]
        rates = [generator_rates(v) for v in seeds.values()]
        heldout, passed = mean([r[0] for r in rates if r[0] is not None]), mean([r[1] for r in rates if r[1] is not None])
        gap = (m - 1) / (oracle - 1) if m is not None and oracle not in (None, 1.0) else None
        per_seed = " ".join(fmt(v.get("multiplier_vs_repetition")) for _, v in sorted(seeds.items(), key=lambda kv: int(kv[0])))
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(f"{name:<11} {fmt(m):>10} {interval:>18} {arm.get('n_seeds', len(seeds)):>2} "
                     f"{fmt(mean(shares), '.1%'):>9} {fmt(heldout, '.0%'):>13} {fmt(passed, '.0%'):>8} "
                     f"{fmt(gap, '.1%'):>10}  {per_seed}")
    return lines, header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "experiments" / "micro-repro.yaml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "micro-repro")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: <workdir>/micro-repro)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the sweep")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    cold = not (args.workdir / "stages").is_dir()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", "sweep", str(args.spec), "--workdir", str(args.workdir)],
                   cwd=ROOT, env=env, check=True)
    sweep_s = time.perf_counter() - started
    trials = json.loads(synpro("results", "--workdir", str(args.workdir), "--format", "json", env=env))
    if not trials:
        sys.exit("the sweep stored no trial")
    trial = trials[0]
    out = args.out or args.workdir / "micro-repro"
    reports = args.workdir / "reports"
    synpro("compare", "--workdir", str(args.workdir), "--out", str(reports), env=env)
    out.mkdir(parents=True, exist_ok=True)
    pngs = sorted(p for p in reports.rglob("*.png") if p.stem.startswith(("loss_curves", "multiplier")))
    for p in pngs:
        shutil.copy2(p, out / p.name)
    lines, _ = table(trial["arms"])
    print()
    print(f"{args.spec.name}: {'cold' if cold else 'resumed'} sweep {sweep_s / 60:.1f} min, "
          f"{args.threads} threads; plots: {', '.join(str(out / p.name) for p in pngs) or 'none'}")
    print("\n".join(lines))
    arm = trial["arms"].get("synpro", {})
    m, ci = arm.get("multiplier_vs_repetition"), arm.get("multiplier_ci")
    print(f"synpro multiplier vs repetition: {fmt(m)} [{fmt(ci[0]) if ci else '-'}, {fmt(ci[1]) if ci else '-'}]")


if __name__ == "__main__":
    main()
