"""Task checks at validation time: known, multiple-choice tasks whose data can be reached, else exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synpro.core.fs import cache_root
from synpro.errors import InputError
from synpro.evaluation.cloze import build_builtin_task
from synpro.evaluation.tasks import _lm_eval_index, _read_index, check_tasks, task_configs
from synpro.resolve import resolve
from synpro.spec import EvalTaskSpec, load_spec, parse_spec

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
PAPER_TASKS = {"piqa": "acc_norm", "hellaswag": "acc_norm", "winogrande": "acc", "openbookqa": "acc_norm",
               "boolq": "acc", "sciq": "acc", "arc_easy": "acc", "arc_challenge": "acc_norm",
               "commonsense_qa": "acc_norm", "social_iqa": "acc_norm"}


@pytest.fixture(scope="module", autouse=True)
def fresh_index(tmp_path_factory):
    """lm-eval's index, built once for this module into a cache of its own (not read from ~/.cache)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SYNPRO_CACHE", str(tmp_path_factory.mktemp("cache")))
    _lm_eval_index.cache_clear()
    yield _lm_eval_index()
    _lm_eval_index.cache_clear()
    patch.undo()


def test_lm_evals_index_is_kept_in_the_cache_and_read_back_without_parsing_its_tasks(fresh_index, monkeypatch):
    [cached] = (cache_root() / "lm-eval").glob("index-*.json")
    import lm_eval.tasks

    def parse(*args, **kwargs):
        raise AssertionError("lm-eval's tasks were parsed again")

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", parse)
    _lm_eval_index.cache_clear()
    assert _lm_eval_index() == fresh_index
    assert fresh_index.entries["arc_easy"] == ("TASK", str(Path(lm_eval.tasks.__file__).parent / "arc" / "arc_easy.yaml"))
    assert fresh_index.entries["ai2_arc"][0] in ("GROUP", "TAG") and "arc_easy" in fresh_index.single_tasks()
    assert cached.name.startswith(f"index-{lm_eval.__version__}-")


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"arc_easy": 3}', '{"arc_easy": ["TASK"]}'])
def test_an_unreadable_cached_index_is_built_again(tmp_path, text):
    (tmp_path / "index.json").write_text(text)
    assert _read_index(tmp_path / "index.json") is None and _read_index(tmp_path / "missing.json") is None


def _spec(tmp_path, tasks: str):
    path = tmp_path / "spec.yaml"
    path.write_text(f"experiment: {{name: t}}\nbudget: {{unique_tokens: 1000, total_tokens: 4000}}\n"
                    f"eval:\n  tasks:\n{tasks}")
    return load_spec(path)


def test_unknown_group_and_generative_tasks_are_refused_naming_each_task_and_line(tmp_path):
    spec = _spec(tmp_path, "    - {name: synpro_cloze}\n    - {name: hellaswagg}\n    - {name: ai2_arc}\n"
                           "    - {name: gsm8k}\n")
    with pytest.raises(InputError) as caught:
        resolve(spec)  # validation runs check_tasks and locates each problem in the file
    problems = {p.key: p for p in caught.value.problems}
    assert set(problems) == {"eval.tasks.1.name", "eval.tasks.2.name", "eval.tasks.3.name"}
    assert "unknown task 'hellaswagg'" in problems["eval.tasks.1.name"].message
    assert "did you mean hellaswag" in problems["eval.tasks.1.name"].message
    assert "'ai2_arc'" in problems["eval.tasks.2.name"].message and "list single tasks" in problems["eval.tasks.2.name"].message
    assert "'gsm8k'" in problems["eval.tasks.3.name"].message and "not multiple_choice" in problems["eval.tasks.3.name"].message
    assert [problems[f"eval.tasks.{i}.name"].line for i in (1, 2, 3)] == [6, 7, 8]
    assert str(spec.source_file) in str(caught.value)


def test_the_papers_ten_tasks_are_known_with_the_papers_metrics_and_unreachable_data_says_so(tmp_path):
    for name in ("paper-400m.yaml", "paper-1.1b.yaml"):
        spec = load_spec(EXPERIMENTS / name)
        assert {t.name: t.metric for t in spec.eval.tasks} == PAPER_TASKS
    try:
        check_tasks(spec)
    except InputError as error:  # offline and not cached: every refusal says which task, and why
        for problem in error.problems:
            index = int(problem.key.split(".")[2])
            assert f"task {spec.eval.tasks[index].name!r}" in problem.message
            assert "cannot be reached" in problem.message and "unknown" not in problem.message
        assert "Hugging Face cache" in error.hint


def test_builtin_tasks_pass_before_their_data_exists_and_load_with_the_spec_metric(tmp_path):
    spec = _spec(tmp_path, "    - {name: synpro_cloze, metric: acc_norm}\n")
    check_tasks(spec)  # no lm-eval index, no data yet: fine
    with pytest.raises(InputError, match="not built"):
        task_configs(spec.eval.tasks, tmp_path)
    texts = [" ".join(f"word{i}x{j}" for j in range(200)) for i in range(5)]
    built = build_builtin_task(texts, tmp_path / "tasks", 10, seed=0)
    [config] = task_configs(spec.eval.tasks, tmp_path / "tasks")
    assert config["metric_list"] == [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
    assert config["num_fewshot"] == 0
    assert config["dataset_kwargs"]["data_files"]["test"] == str(built.data_path)
    built.data_path.unlink()
    with pytest.raises(InputError, match="does not exist"):
        task_configs(spec.eval.tasks, tmp_path / "tasks")


def test_eval_spec_defaults_and_bad_values():
    base = "experiment: {name: t}\nbudget: {unique_tokens: 1000, total_tokens: 4000}\n"
    spec = parse_spec(base)
    assert spec.eval.tasks == []  # loss only unless a spec asks for tasks
    assert spec.eval.interval_tokens is None and spec.eval.limit is None
    for bad, key in [("eval: {tasks: [{name: piqa, metric: f1}]}", "eval.tasks.0.metric"),
                     ("eval: {tasks: [{name: piqa}, {name: piqa}]}", "eval.tasks"),
                     ("eval: {interval_tokens: 30000}", "eval.interval_tokens"),
                     ("eval: {batch_size: 0}", "eval.batch_size")]:
        with pytest.raises(InputError) as caught:
            parse_spec(base + bad)
        assert caught.value.problems[0].key == key, bad
    assert parse_spec(base + "eval: {interval_tokens: 100000}").eval.interval_tokens == 100_000
    with_task = parse_spec(base + "eval: {tasks: [{name: synpro_cloze}]}")
    assert yaml.safe_load(with_task.to_yaml())["eval"]["tasks"] == [{"name": "synpro_cloze", "metric": "acc"}]
