"""Test helper: the data stages a trial runs (pools, and extra when the spec has an oracle), in a folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from synpro.data.prepare import PreparedData
from synpro.spec import Spec
from synpro.stages import Runner
from synpro.stages.graph import GraphBuilder


def prepare_data(spec: Spec, root: Path, progress: bool = False, oracle: bool = True) -> PreparedData:
    graph = GraphBuilder(spec, spec.budget.resolve(spec.model)[1])
    runner = Runner(root, progress=progress)
    data = runner.run(graph.pools)
    if oracle and any(a.kind == "oracle" for a in spec.arms):
        data = replace(data, extra=runner.run(graph.extra()))
    return data


def main(argv: list[str]) -> None:
    """`python tests/pools.py SPEC.json ROOT`: the data stages in a process of their own (for kills and
    memory measurements); SPEC.json holds the spec's dict plus its `source_file`. Prints the resident
    memory just before the build and the most it reached while building (sampled every 5 ms), in KiB."""
    import json
    import os
    import threading

    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page_kib

    spec = Spec.model_validate(json.loads(Path(argv[0]).read_text()))
    before, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    prepare_data(spec, Path(argv[1]))
    done.set()
    sampler.join()
    print(json.dumps({"rss_kib_before": before, "rss_kib_peak": max(peak[0], rss())}))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
