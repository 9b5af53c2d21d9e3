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
