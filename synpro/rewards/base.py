"""What every reward shares: trl's reward-function shape and the one answer-extraction rule.

An instance is a picklable callable `reward(completions, source=[...], **columns) -> list[float]` with a
`__name__`, as trl's GRPOTrainer takes it (it logs `rewards/<name>/mean`): `completions` are the generator's
full answers, heading included, as strings or as chat messages (the last message's content); `source` is
the dataset column of organic texts; other columns are ignored. Heavy scorers (models, embeddings) load
lazily and are cached per process, so an instance pickles as its settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from synpro.registry import Registry

if TYPE_CHECKING:
    from synpro.generation.operations.base import Operation
    from synpro.influence.service import InfluenceSource
    from synpro.spec import Spec


class Reward:
    name: ClassVar[str]
    kinds: ClassVar[frozenset[str] | None] = None  # operation kinds it applies to; None: every kind
    version: ClassVar[int] = 1

    def __init__(self, spec: "Spec", operation: "Operation", influence: "InfluenceSource | None" = None):
        self.spec, self.operation, self.influence = spec, operation, influence
        self.__name__ = self.name
        # Scores it could not compute (a judge's unparseable answer), since it was built: each is reported
        # (GRPO's metrics as `unparseable/<name>`), never a silent 0.
        self.failures = 0

    def __call__(self, completions: Sequence[Any], source: Sequence[str], **columns: Any) -> list[float]:
        return self.score(list(source), [as_text(c) for c in completions])

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        """One value per (source, full answer) pair."""
        raise NotImplementedError

    def answers(self, answers: list[str]) -> list[str]:
        """The extracted outputs: the text after the heading's first occurrence ("" without a heading)."""
        return [self.operation.answer(a) for a in answers]

    def settings(self) -> dict:
        """What the value depends on besides the inputs, for manifests and MLflow params."""
        return {"version": self.version}

    def check(self) -> None:
        """Load or reach what can fail (judges, models) now, as an InputError, not mid-training."""


def as_text(completion: Any) -> str:
    """A completion as trl passes it: a string, or a list of chat messages (the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


REWARDS: Registry[type[Reward]] = Registry("reward")
