"""The offline builtin task `synpro_cloze`: passage continuation as multiple choice, from held-out text.

Why: the paper's suite (PIQA, HellaSwag, ...) needs hub datasets; this task needs nothing but the
held-out documents SynPro already has, so the quickstart and the tests measure accuracy for real.

How an item is made (`build_builtin_task`; same inputs and seed → byte-identical files):

1. Source: held-out documents only — the caller passes the validation pool's texts, never the
   organic or extra pools. `exclude` takes the pretraining texts as a second guard: a passage that
   shares any 13-word sequence with them is dropped (the usual n-gram decontamination), so
   duplicated boilerplate in a corpus cannot leak into the task
   (`synpro.evaluation.sources.builtin_task_texts` gives both lists from the data stage).
2. Each document is tiled into non-overlapping windows of `context_chars + continuation_chars`
   characters, cut at spaces. In a window, the context is the first ~`context_chars` characters
   (starting at a word) and the true continuation the words that follow it, up to
   `continuation_chars` characters, starting with its separating space and ending at a word end.
3. Distractors: `choices - 1` pieces from OTHER held-out documents, each starting at a single
   space at a random place with room for the answer's length after it, and ending at the word end
   nearest that length, so no choice stands out by length, a cut word or a missing leading space
   (a random model, which favours short choices, then sits at chance). Repeats are redrawn.
4. `n_items` windows are drawn without replacement (seeded), the answer is put at a random
   position, and the items are written as JSONL with an lm-eval task YAML beside it
   (multiple_choice, zero-shot, choices appended to the context with no delimiter).

A model that has learned the language of the corpus ranks the true continuation first more often
than chance (1/choices); a random model sits at chance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from synpro.errors import InputError
from synpro.evaluation.base import BUILTIN_TASKS, BuiltTask

NAME = "synpro_cloze"
DATA_SUFFIX = ".jsonl"
NGRAM = 13  # words shared with pretraining text that make a passage contaminated
_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"(?<=\S) (?=\S)")  # where a choice may start: one space between words


@dataclass(frozen=True)
class _Window:
    doc: int
    context: str
    gold: str


@BUILTIN_TASKS.register(NAME)
def build_builtin_task(texts: Sequence[str], out_dir: str | Path, n_items: int, seed: int, *,
                       choices: int = 4, context_chars: int = 160, continuation_chars: int = 64,
                       exclude: Iterable[str] = ()) -> BuiltTask:
    """Write `synpro_cloze.jsonl` and `synpro_cloze.yaml` (an lm-eval task) into out_dir.

    texts: held-out documents (never a pretraining pool); exclude: the pretraining texts, whose
    13-word runs no item passage may share. See the module docstring for how items are made.
    """
    name = NAME
    if choices < 2:
        raise InputError.one(f"a multiple-choice item needs at least 2 choices, got {choices}", key="eval.builtin.choices")
    blocked = _ngrams(exclude)
    windows: list[_Window] = []
    contaminated = 0
    for doc, text in enumerate(texts):
        for window in _windows(doc, text, context_chars, continuation_chars):
            if blocked and not blocked.isdisjoint(_ngrams([window.context + window.gold])):
                contaminated += 1
            else:
                windows.append(window)
    starts = {d: np.array([m.start() for m in _SPACE.finditer(text)]) for d, text in enumerate(texts)}
    starts = {d: positions for d, positions in starts.items() if positions.size}  # where a distractor may begin
    if not windows or len(starts) < 2:
        raise InputError.one(
            f"the held-out texts give too little for the {name} task: {len(windows)} passages from "
            f"{len(texts)} documents ({contaminated} dropped as overlapping the pretraining texts)",
            key="eval.builtin", hint="raise budget.validation_tokens, or lower eval.builtin.context_chars "
                                     "and continuation_chars")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(windows), size=min(n_items, len(windows)), replace=False))
    rows = []
    for i, index in enumerate(picked):
        window = windows[index]
        options = [window.gold] + _distractors(rng, texts, window, starts, choices - 1)
        order = rng.permutation(choices)
        rows.append({"id": i, "doc": window.doc, "context": window.context,
                     "choices": [options[j] for j in order], "label": int(np.flatnonzero(order == 0)[0])})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{name}{DATA_SUFFIX}"
    data_path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows),
                         encoding="utf-8")
    yaml_path = out_dir / f"{name}.yaml"
    yaml_path.write_text(_task_yaml(name, data_path.name))  # last: a folder with the YAML is complete
    return BuiltTask(name, yaml_path, data_path, len(rows), len({r["doc"] for r in rows}), contaminated)


def _windows(doc: int, text: str, context_chars: int, continuation_chars: int) -> list[_Window]:
    """Non-overlapping (context, true continuation) windows of one document, cut at single spaces."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    out: list[_Window] = []
    i = 0
    while i < len(words):
        start = words[i][0]
        j = i + 1  # first word of the continuation: the first one starting context_chars in
        while j < len(words) and words[j][0] - start < context_chars:
            j += 1
        if j >= len(words):
            break
        cut = words[j][0] - 1
        if text[cut] != " " or words[j - 1][1] != cut:  # a newline or a run of spaces would tell it apart
            i = j
            continue
        k = j  # last word of the continuation
        while k + 1 < len(words) and words[k + 1][1] - cut <= continuation_chars:
            k += 1
        gold = text[cut:words[k][1]]
        if len(gold) >= continuation_chars // 2:  # a lone short word says too little
            out.append(_Window(doc, text[start:cut], gold))
        i = k + 1
    return out


def _distractors(rng: np.random.Generator, texts: Sequence[str], window: _Window,
                 starts: dict[int, np.ndarray], n: int) -> list[str]:
    """n pieces of other documents, each a single space plus whole words, about as long as the answer.

    A piece starts only where its document has at least the answer's length left, so pieces cut
    short by a document's end cannot make the answer the longest choice.
    """
    others = [d for d in starts if d != window.doc and starts[d][0] <= len(texts[d]) - len(window.gold)]
    pieces: list[str] = []
    for _ in range(100 * n):
        if len(pieces) == n or not others:
            break
        doc = others[rng.integers(len(others))]
        text = texts[doc]
        room = starts[doc][starts[doc] <= len(text) - len(window.gold)]
        begin = int(room[rng.integers(len(room))])
        ends = [m.end() for m in _WORD.finditer(text, begin)]
        end = min(ends, key=lambda e: abs((e - begin) - len(window.gold)))
        piece = text[begin:end]
        if piece != window.gold and piece not in pieces:
            pieces.append(piece)
    if len(pieces) < n:
        raise InputError.one(f"could not draw {n} distinct distractors from the other held-out documents",
                             key="eval.builtin.choices", hint="lower eval.builtin.choices")
    return pieces


def _ngrams(texts: Iterable[str]) -> set[int]:
    """Hashes of every run of NGRAM words (case-folded) in the texts."""
    grams: set[int] = set()
    for text in texts:
        words = text.lower().split()
        grams.update(hash(tuple(words[i:i + NGRAM])) for i in range(len(words) - NGRAM + 1))
    return grams


def _task_yaml(name: str, data_file: str) -> str:
    """lm-eval task config. data_files is relative to this folder: `task_config` anchors it."""
    return f"""# SynPro's offline cloze task (synpro/evaluation/builtin.py says how the items are made).
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""
