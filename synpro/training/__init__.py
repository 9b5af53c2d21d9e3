"""Pretraining: the token loader, the LR schedule and the resumable training loop."""

from synpro.training.callbacks import Callback, RichProgress
from synpro.training.loader import SourceUsage, TokenLoader, eval_batches
from synpro.training.schedule import learning_rate
from synpro.training.result import EvalPoint, TrainResult
from synpro.training.trainer import train

__all__ = ["Callback", "EvalPoint", "RichProgress", "SourceUsage", "TokenLoader", "TrainResult",
           "eval_batches", "learning_rate", "train"]
