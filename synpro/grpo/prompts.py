"""GRPO prompts: organic windows cut as the synthesize stage cuts them, one prompt per chunk, and a held-out split.

Windows come from the pools' organic documents (`synpro.generation.chunking`, the generation section's
`window_tokens` and `chunk_chars`), so the generator trains on the inputs it will rewrite. Only as many
windows are read as the run can use (held-out prompts + steps × prompts per step): the pools stage has
already shuffled the documents, and the chunks read are shuffled again with the seed before the split, so
the held-out prompts never reach training. Each row's `source` is the organic chunk the rewards compare
against; `messages` is the operation's chat, ending with the pre-filled answer start when there is one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synpro.errors import InputError
from synpro.generation.chunking import iter_windows, split_chunks

if TYPE_CHECKING:
    from synpro.generation.operations.base import Operation
    from synpro.spec import Spec


def prompt_rows(spec: "Spec", op: "Operation", organic_docs: Path, tokenizer_dir: Path,
                seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows); each row has `messages`, `source` (the organic chunk) and `window`."""
    from transformers import AutoTokenizer

    g, gen = spec.grpo, spec.generation
    wanted = g.heldout_prompts + g.steps * g.prompts_per_step
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows: list[dict[str, Any]] = []
    for window in iter_windows(Path(organic_docs), tokenizer, gen.window_tokens):
        for chunk in split_chunks(window.text, gen.chunk_chars):
            rows.append({"messages": op.messages(chunk), "source": chunk, "window": window.id})
        if len(rows) >= wanted:
            break
    random.Random(seed).shuffle(rows)
    if len(rows) < g.heldout_prompts + g.prompts_per_step:
        raise InputError.one(f"the organic pool gives {len(rows)} prompts: too few for {g.heldout_prompts} held-out "
                             f"prompts and one step of {g.prompts_per_step}", file=spec.source_file,
                             key="grpo.heldout_prompts", hint="hold out fewer prompts or use a larger pool")
    return rows[g.heldout_prompts:], rows[:g.heldout_prompts]


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The chat as the text trl tokenizes for a plain-text prompt: a final assistant message is continued (the
    pre-filled heading), otherwise a new assistant turn is opened. trl's own conversational path always opens a
    new turn, which would close the pre-filled answer instead of continuing it."""
    from synpro.generation.backends import continuation

    text = tokenizer.apply_chat_template(messages, tokenize=False, **continuation(messages))
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("", add_special_tokens=True)["input_ids"]:
        text = text[len(bos):]  # the tokenizer adds it again
    return text
