"""Rephrase: a faithful, cleaner paraphrase that keeps the source's structure and adds nothing."""

from synpro.generation.operations.base import OPERATIONS, Filters, Operation
from synpro.generation.operations.presets import PRESETS, Texts

HEADING = "Here is a paraphrased version:"

# Tuned on SmolLM2-135M-Instruct: the text first, then a short task, then the heading to start with.
REPHRASE = OPERATIONS.register("rephrase")(Operation(
    name="rephrase",
    system_prompt="You are an expert writer. You rewrite text so it is clearer, without changing its meaning.",
    prompt=("Text:\n{text}\n\n"
            "Task: rewrite the text above in clearer words. Keep the facts, the order and the layout "
            "(paragraphs, lists, code); add nothing and do not comment.\n"
            f'Begin your answer with "{HEADING}"'),
    heading=HEADING,
    filters=Filters(min_chars=200, min_length_ratio=0.5, max_length_ratio=1.25, min_similarity=0.6),
))

# The authors' release (method.md §2, §6), in our words: the task first, with its boilerplate-removal rules.
PRESETS["release"]["rephrase"] = Texts(
    system_prompt="You are a helpful assistant that rewrites web documents into clean, faithful text.",
    prompt=("Paraphrase the document below. Rules:\n"
            "- Remove content that is clearly not part of the document itself: navigation menus, "
            "advertisements, cookie and subscription notices, share buttons, footers and similar boilerplate.\n"
            "- Keep every piece of information the document gives, in its order; add nothing that it does not "
            "say, and do not comment on it.\n"
            "- Keep its structure: paragraphs, lists, tables, code blocks and markup.\n"
            "- Write clear, fluent, well-formed text.\n"
            f'Begin your answer with "{HEADING}" on its own line, followed by the paraphrase only.\n\n'
            "Document:\n{text}"),
    heading=HEADING, prefill_heading=False)
