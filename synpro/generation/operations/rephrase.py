"""Rephrase: a faithful, cleaner paraphrase that keeps the source's structure and adds nothing."""

from synpro.generation.operations.base import OPERATIONS, Filters, Operation

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
