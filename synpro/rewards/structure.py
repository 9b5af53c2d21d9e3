"""structure (rephrase): 1 if the output keeps the source's layout, else 0.

Offline, a layout is the set of block kinds a text uses (lists, code, headings) and its paragraph count:
the output must use exactly the source's kinds (keeping a list, adding no code) and have between half and
twice its paragraphs (±1). With `scorer: llm` a judge sees {source} and {output} and answers 1 or 0; an
unparseable verdict scores 0 and is counted in `failures`.
"""

from __future__ import annotations

import re

from synpro.rewards.base import REWARDS, Reward
from synpro.rewards.judges import judge_for

_LIST = re.compile(r"^[ \t]*(?:[-*+•]|\d+[.)])[ \t]+\S", re.M)
_CODE = re.compile(r"^(?:```|~~~|>>> |(?: {4}|\t)\S)", re.M)
_HEADING = re.compile(r"^(?:#{1,6}[ \t]+\S|[=\-~^]{3,}[ \t]*$)", re.M)


def layout(text: str) -> tuple[frozenset[str], int]:
    """(block kinds used, number of paragraphs): the offline structure signature."""
    kinds = {name for name, pattern in (("list", _LIST), ("code", _CODE), ("heading", _HEADING)) if pattern.search(text)}
    return frozenset(kinds), len([p for p in re.split(r"\n[ \t]*\n", text) if p.strip()])


def same_layout(source: str, output: str) -> bool:
    (src_kinds, src_paras), (out_kinds, out_paras) = layout(source), layout(output)
    return bool(output.strip()) and src_kinds == out_kinds and src_paras / 2 - 1 <= out_paras <= 2 * src_paras + 1


@REWARDS.register("structure")
class Structure(Reward):
    name = "structure"
    kinds = frozenset({"rephrase"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        outputs = self.answers(answers)
        if self.spec.rewards.structure.scorer == "offline":
            return [float(same_layout(s, o)) for s, o in zip(sources, outputs)]
        judged = judge_for(self.spec.rewards.structure.judge, "rewards.structure.judge").rate(source=sources, output=outputs)
        self.failures += sum(v is None for v in judged)
        return [float(v is not None and v >= 0.5 and bool(o.strip())) for v, o in zip(judged, outputs)]

    def check(self) -> None:
        if self.spec.rewards.structure.scorer == "llm":
            judge_for(self.spec.rewards.structure.judge, "rewards.structure.judge")

    def settings(self) -> dict:
        return {**super().settings(), **self.spec.rewards.structure.settings()}
