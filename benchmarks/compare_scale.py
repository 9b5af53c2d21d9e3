"""`Store.compare` on a study of thousands of runs: wall time of one answer against the 1-second target.

The study is the one `tests/test_compare.py` checks for correctness at scale (2,500 trials x repetition
and oracle, 20,000 evaluations, 20 stored fits), built on a fresh SQLite file and, where a server answers,
a fresh PostgreSQL database. Each answer is timed after one warm-up call, best of --repeat.

    python benchmarks/compare_scale.py
    python benchmarks/compare_scale.py --postgres postgresql+psycopg://root@127.0.0.1:5432/test

Measured 2026-11-29 (2 quiet cores, `--postgres postgresql+psycopg://root@127.0.0.1:5432/test`): SQLite 151.7 ms,
PostgreSQL 160.8 ms (ratios 0.15 and 0.16).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(url: str, repeat: int) -> float:
    from store import Store
    from test_compare import bulk_study  # the study the scale test checks

    with Store(url) as store:
        bulk_study(store, 2_500, 4)
        store.compare("big")
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            store.compare("big")
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="a server URL; a fresh database is made and dropped")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    urls = {"sqlite": f"sqlite:///{Path(tempfile.mkdtemp(prefix='compare-scale-')) / 'results.db'}"}
    engine = None
    if args.postgres:
        import sqlalchemy as sa

        name = f"synpro_bench_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(args.postgres)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        urls["postgres"] = args.postgres.rsplit("/", 1)[0] + "/" + name
    try:
        for backend, url in urls.items():
            seconds = timed(url, args.repeat)
            print(f"{backend:>9}: compare over 5,000 arms / 20,000 evaluations in {seconds * 1e3:.1f} ms; "
                  f"ratio to the 1-second target: {seconds:.2f}")
    finally:
        if engine is not None:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            engine.dispose()


if __name__ == "__main__":
    main()
