"""The house's layering: no import cycles between modules (imports inside functions and under
TYPE_CHECKING count), and parsing a spec loads neither torch, transformers nor any plugin."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synpro", "store", "cli")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import module` ties us to that module; `from pkg import name`, to pkg.
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files]
                targets = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_between_modules():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def _loaded_by(code: str) -> set[str]:
    """Top-level packages and synpro modules a fresh interpreter has imported after `code` (which gets
    the quickstart spec's path as sys.argv[1])."""
    code += "; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "experiments" / "quickstart.yaml")],
                         capture_output=True, text=True, check=True).stdout.split()
    return {m.split(".")[0] for m in out} | {m for m in out if m.startswith("synpro.")}


def test_loading_a_spec_imports_no_heavy_library_and_no_plugin():
    loaded = _loaded_by("import sys; from synpro.spec import load_spec; load_spec(sys.argv[1])")
    assert not {"torch", "transformers", "mlflow", "optuna", "lm_eval"} & loaded
    assert not {"synpro.arms", "synpro.generation", "synpro.data", "synpro.stages", "synpro.evaluation"} & loaded


def test_resolving_a_spec_and_loading_the_sweep_import_no_training_library():
    # What every `synpro sweep` does before it knows whether a trial will run: a re-run with nothing
    # left to do must not pay seconds for torch, transformers, scipy or matplotlib.
    loaded = _loaded_by("import sys; import synpro.sweep; from synpro.resolve import resolve; "
                        "from synpro.spec import load_spec; resolve(load_spec(sys.argv[1]))")
    assert not {"torch", "transformers", "scipy", "matplotlib", "sentence_transformers", "lm_eval"} & loaded
    assert not {"synpro.pipeline", "synpro.training", "synpro.effective", "synpro.plots"} & loaded
