"""The CLI contract: exit codes, located one-screen errors, no tracebacks, nothing written on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
runner = CliRunner()


def synpro(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process, as a user or another tool would call it."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands_with_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "sweep", "results", "ui"):
        assert command in result.output
    assert "Example" in runner.invoke(app, ["sweep", "--help"]).output


@pytest.mark.parametrize("name", ["quickstart.yaml", "paper-400m.yaml", "paper-1.1b.yaml"])
def test_validate_shipped_specs(name):
    # The paper specs name a hub corpus and hub models this offline machine cannot have: shape only.
    extra = [] if name == "quickstart.yaml" else ["--shape-only"]
    result = runner.invoke(app, ["validate", str(EXPERIMENTS / name), *extra])
    assert result.exit_code == 0, result.output
    assert "trials" in result.output and "U=" in result.output


BROKEN = {
    "unknown-key": ("experiment: {name: b}\nbudget: {unique_tokens: 100, total_tokens: 400}\nmodel: {presett: tiny}\n",
                    "model.presett"),
    "wrong-type": ("experiment: {name: b}\nbudget: {unique_tokens: lots, total_tokens: 400}\n", "budget.unique_tokens"),
    "missing": ("experiment: {name: b}\n", "budget"),
    "impossible": ("experiment: {name: b}\nbudget: {unique_tokens: 500, total_tokens: 400}\n", "budget.total_tokens"),
    "not-yaml": ("experiment: {name: b\n  budget: [\n", None),
    "missing-corpus": ("experiment: {name: b}\nbudget: {unique_tokens: 1000, total_tokens: 4000}\n"
                       "corpus: {source: jsonl, path: nowhere.jsonl}\n", "corpus.path"),
}


@pytest.mark.parametrize("case", ["unknown-key", "wrong-type", "missing", "impossible", "not-yaml"])
def test_broken_specs_exit_2_with_file_and_key(tmp_path, case):
    text, key = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = synpro("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert str(path) in result.stderr
    if key:
        assert f"[{key}]" in result.stderr
    assert len(result.stderr.splitlines()) < 25


@pytest.mark.parametrize("case", ["impossible", "missing-corpus"])
def test_broken_sweep_writes_nothing(tmp_path, case):
    text, key = BROKEN[case]
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    result = synpro("sweep", str(path), "--workdir", str(tmp_path / "wd"), "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"[{key}]" in result.stderr
    if (tmp_path / "wd" / "synpro.db").exists():  # the store may exist, but holds no trial
        from store import Store

        with Store(f"sqlite:///{tmp_path / 'wd' / 'synpro.db'}") as db:
            assert all(t["state"] != "finished" and not t["arms"] for t in db.results())


def test_missing_spec_file_is_exit_2(tmp_path):
    result = synpro("sweep", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_results_without_a_store_is_exit_2(tmp_path):
    result = synpro("results", "--workdir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no results store" in result.stderr
