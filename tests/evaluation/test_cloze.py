"""The offline cloze task: deterministic, well-formed items, never overlapping the pretraining texts."""

from __future__ import annotations

import json

import pytest
import yaml
from pydoc_data.topics import topics

from synpro.errors import InputError
from synpro.evaluation import BUILTIN_TASKS
from synpro.evaluation.cloze import NAME, NGRAM, build_builtin_task

DOCS = [text for _, text in sorted(topics.items()) if len(text) > 400]
HELD_OUT, PRETRAINING = DOCS[:40], DOCS[40:]


def _items(built) -> list[dict]:
    return [json.loads(line) for line in built.data_path.read_text().splitlines()]


def test_same_inputs_and_seed_give_identical_files_and_another_seed_other_items(tmp_path):
    first = build_builtin_task(HELD_OUT, tmp_path / "a", 120, seed=3, exclude=PRETRAINING)
    again = build_builtin_task(HELD_OUT, tmp_path / "b", 120, seed=3, exclude=PRETRAINING)
    other = build_builtin_task(HELD_OUT, tmp_path / "c", 120, seed=4, exclude=PRETRAINING)
    assert first.n_items == 120
    assert first.data_path.read_bytes() == again.data_path.read_bytes()
    assert first.yaml_path.read_text() == again.yaml_path.read_text()
    assert first.data_path.read_bytes() != other.data_path.read_bytes()
    assert BUILTIN_TASKS.get(NAME) is build_builtin_task


def test_items_are_passages_of_held_out_documents_with_their_true_continuation(tmp_path):
    built = build_builtin_task(HELD_OUT, tmp_path, 150, seed=0, choices=4, context_chars=160,
                               continuation_chars=64, exclude=PRETRAINING)
    items = _items(built)
    labels = {item["label"] for item in items}
    assert labels == {0, 1, 2, 3}  # the answer's position is shuffled
    for item in items:
        choices, gold = item["choices"], item["choices"][item["label"]]
        assert len(choices) == 4 and len(set(choices)) == 4
        assert item["context"] + gold in HELD_OUT[item["doc"]]  # the true continuation, verbatim
        for choice in choices:
            assert choice.startswith(" ") and not choice[1].isspace() and not choice.endswith((" ", "\n"))
            assert len(choice) <= 64 + 40  # about as long as the answer (whole words)
        distractors = [c for i, c in enumerate(choices) if i != item["label"]]
        assert not any(item["context"] + d in HELD_OUT[item["doc"]] for d in distractors)
    assert built.n_docs > 10  # items spread over many documents


def test_no_item_passage_shares_a_13_word_run_with_the_pretraining_texts(tmp_path):
    # CPython's topics repeat paragraphs across documents: without the guard, passages would leak.
    leaky = build_builtin_task(HELD_OUT, tmp_path / "leaky", 10_000, seed=0)
    guarded = build_builtin_task(HELD_OUT, tmp_path / "guarded", 10_000, seed=0, exclude=PRETRAINING)
    assert leaky.contaminated == 0 and guarded.contaminated > 0
    assert guarded.n_items == leaky.n_items - guarded.contaminated

    def runs(text: str) -> set[tuple[str, ...]]:
        words = text.lower().split()
        return {tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}

    pretraining = set().union(*map(runs, PRETRAINING))
    overlapping = [i for i in _items(leaky) if runs(i["context"] + i["choices"][i["label"]]) & pretraining]
    assert overlapping  # the corpus does repeat itself...
    assert not any(runs(i["context"] + i["choices"][i["label"]]) & pretraining for i in _items(guarded))


def test_the_task_file_is_an_lm_eval_multiple_choice_task_over_the_items(tmp_path):
    built = build_builtin_task(HELD_OUT, tmp_path, 20, seed=0)
    config = yaml.safe_load(built.yaml_path.read_text())
    assert config["task"] == NAME and config["output_type"] == "multiple_choice"
    assert config["num_fewshot"] == 0 and config["target_delimiter"] == ""
    assert config["dataset_kwargs"]["data_files"]["test"] == built.data_path.name


def test_too_little_held_out_text_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="too little"):
        build_builtin_task(["just a few words here"], tmp_path, 10, seed=0)
    with pytest.raises(InputError, match="too little"):
        build_builtin_task(HELD_OUT[:3], tmp_path, 10, seed=0, exclude=HELD_OUT[:3])
