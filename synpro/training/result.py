"""What a training run produces: its learning curve and its result (read by callbacks, stages, the store)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalPoint:
    """One point of the learning curve; `train_loss` is None at tokens=0."""

    tokens: int
    step: int
    val_loss: float
    train_loss: float | None


@dataclass(frozen=True)
class TrainResult:
    curve: list[EvalPoint]
    tokens_seen: int
    steps: int
    final_dir: Path
    tokens_per_source: dict[str, int]
    epochs_per_source: dict[str, float]
    seconds: float  # wall-clock of training over all sessions of the run, evaluations included
    tokens_per_second: float
    start_tokens: int = 0  # where this run began on the token axis (a continued run: its parent's tokens)
    stopped_early: bool = False  # a callback asked to stop before total_tokens
    tagged: dict[str, str] = field(default_factory=dict)  # requested token count → kept checkpoint folder
    snapshots: dict[str, str] = field(default_factory=dict)  # tokens → model folder (see snapshot_every)
    last_checkpoint: str = ""  # the checkpoint (model + optimizer state) the run ended on: where a next round continues
    resumed_at_tokens: int = 0  # where the last session picked the run up from its own checkpoint (0: it did not)
    mfu: float | None = None  # model FLOPs utilisation over `seconds` (synpro.training.mfu); None: no known peak

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss

    def to_json(self) -> str:
        data = asdict(self)
        data["final_dir"] = str(self.final_dir)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainResult":
        data = json.loads(text)
        data["curve"] = [EvalPoint(**p) for p in data["curve"]]
        data["final_dir"] = Path(data["final_dir"])
        return cls(**data)
