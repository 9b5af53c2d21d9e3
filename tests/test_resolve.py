"""Resolution before any work: every kind of spec that cannot run here is exit 2 with file, key and
line, and nothing is written anywhere (run as a user would: the real CLI in a fresh process)."""

import json
import sys
from pathlib import Path

import pytest

from synpro.errors import InputError
from synpro.resolve import resolve
from synpro.spec import parse_spec
import warm_cli

BASE = "experiment: {name: r, workdir: out}\nbudget: {unique_tokens: 2000, total_tokens: 4000, validation_tokens: 500}\n"
REPETITION = "arms: [{kind: repetition}]\nsearch: {objective: {arm: repetition}}\n"

CASES = {
    "jsonl-missing": ("corpus: {source: jsonl, path: nowhere.jsonl}\n" + REPETITION, "corpus.path"),
    "parquet-missing": ("corpus: {source: parquet, path: nowhere.parquet}\n" + REPETITION, "corpus.path"),
    "textdir-missing": ("corpus: {source: textdir, path: no-such-folder}\n" + REPETITION, "corpus.path"),
    "textdir-empty": ("corpus: {source: textdir, path: empty}\n" + REPETITION, "corpus.path"),
    "unknown-builtin": ("corpus: {source: builtin, name: klingon-poetry}\n" + REPETITION, "corpus.name"),
    "budget-too-big": ("corpus: {source: jsonl, path: small.jsonl}\n" + REPETITION, "budget.unique_tokens"),
    "oracle-too-big": ("corpus: {source: jsonl, path: small.jsonl}\narms: [{kind: repetition}, {kind: oracle}]\n"
                       "budget: {unique_tokens: 500, total_tokens: 90000, validation_tokens: 100}\n",
                       "budget.total_tokens"),
    "store-url": (REPETITION + "store: {url: 'postgres ql://nope'}\n", "store.url"),
    "optuna-driver": (REPETITION + "store: {optuna_url: 'mssql+pymssql://u@h/db'}\n", "store.optuna_url"),
    "generator-offline": ("arms: [{kind: prompted}]\nsearch: {objective: {arm: prompted}}\n"
                          "generation: {generator: {model: nobody/no-such-generator}}\n", "generation.generator.model"),
    "tokenizer-offline": (REPETITION + "tokenizer: {kind: pretrained, name: nobody/no-such-tokenizer}\n", "tokenizer.name"),
    "unknown-arm": ("arms: [{kind: telepathy}]\nsearch: {objective: {arm: telepathy}}\n", "arms.0.kind"),
    "arm-option": ("arms: [{kind: repetition, epochs: 3}]\nsearch: {objective: {arm: repetition}}\n", "arms.0.epochs"),
    "arm-operation": ("arms: [{kind: prompted, operations: [summarize]}]\nsearch: {objective: {arm: prompted}}\n",
                      "arms.0.operations"),
    "synthetic-share": ("arms: [{kind: repetition}, {kind: synpro, synthetic_share: 1.5}]\n"
                        "search: {objective: {arm: synpro}}\n", "arms.1.synthetic_share"),
    "initial-sets": ("arms: [{kind: synpro, initial_sets: sometimes}]\nsearch: {objective: {arm: synpro}}\n",
                     "arms.0.initial_sets"),
    "searched-share": ("arms: [{kind: prompted}]\nsearch:\n  objective: {arm: prompted}\n  params:\n"
                       "    arms.prompted.synthetic_share: {type: float, low: 0.0, high: 0.5, step: 0.25}\n",
                       "search.params.arms.prompted.synthetic_share"),
    "unknown-operation": (REPETITION + "generation: {operations: {poem: {kind: sonnet}}}\n",
                          "generation.operations.poem.kind"),
    "objective-needs-oracle": ("arms: [{kind: repetition}]\nsearch: {objective: {arm: repetition, "
                               "metric: effective_tokens, direction: maximize}}\n", "search.objective.metric"),
    "synthetic-metric-without-sets": ("arms: [{kind: repetition}, {kind: prompted}]\nsearch:\n  objectives:\n"
                                      "    - {arm: prompted, metric: final_val_loss}\n"
                                      "    - {arm: repetition, metric: synthetic_similarity, direction: maximize}\n",
                                      "search.objectives.1.metric"),
}


def _write_case(tmp_path: Path, body: str) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "small.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 40}) + "\n"
                                                  for i in range(5)))
    text = BASE + body
    if "budget:" in body:  # the case brings its own budget
        text = "experiment: {name: r, workdir: out}\n" + body
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_unrunnable_specs_fail_resolution_with_key_and_line(tmp_path, case):
    body, key = CASES[case]
    path = _write_case(tmp_path, body)
    spec = parse_spec(path.read_text(), file=str(path))  # the shape is fine: only resolution can tell
    with pytest.raises(InputError) as caught:
        resolve(spec)
    problems = {p.key: p for p in caught.value.problems}
    assert key in problems, str(caught.value)
    assert problems[key].line is not None and caught.value.file == str(path)
    if case == "searched-share":  # the line of that very parameter, and the value at fault
        assert path.read_text().splitlines()[problems[key].line - 1].strip().startswith("arms.prompted.synthetic_share")
        assert "0.0" in problems[key].message and "greater than 0" in problems[key].message
    if case == "synthetic-metric-without-sets":  # the line of that very objective
        assert path.read_text().splitlines()[problems[key].line - 1].strip().startswith("- {arm: repetition")


@pytest.mark.parametrize("case", ["jsonl-missing", "budget-too-big", "generator-offline", "store-url",
                                  "synthetic-metric-without-sets", "synthetic-share"])
def test_validate_and_sweep_exit_2_and_write_nothing(tmp_path, case):
    body, key = CASES[case]
    path = _write_case(tmp_path, body)
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in ("validate", "sweep"):
        result = warm_cli.run([sys.executable, "-m", "cli", command, str(path)], capture_output=True, text=True,
                                cwd=tmp_path, env={**__import__("os").environ, "SYNPRO_ERROR_LOG": str(tmp_path / "x.log")})
        assert result.returncode == 2, result.stderr
        assert f"[{key}]" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no workdir, no store, no log


def test_a_runnable_spec_resolves_and_shape_only_skips_the_machine(tmp_path):
    path = _write_case(tmp_path, "corpus: {source: jsonl, path: small.jsonl}\n" + REPETITION
                       .replace("2000", "200"))
    spec = parse_spec(path.read_text().replace("unique_tokens: 2000, total_tokens: 4000, validation_tokens: 500",
                                               "unique_tokens: 300, total_tokens: 600, validation_tokens: 100"),
                      file=str(path))
    resolve(spec)
    missing = parse_spec(BASE + CASES["generator-offline"][0], file=str(path))
    resolve(missing, machine=False)  # the hub model is another machine's business
    with pytest.raises(InputError):
        resolve(missing)
