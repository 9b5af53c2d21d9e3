"""Stages: content-keyed, lockable, resumable units of work; importing this registers the built-ins."""

from synpro.stages import evaltask, evaluate, extra, pools, pretrain, probe, synthesize  # noqa: F401  (registration)
from synpro.stages.base import STAGES, Stage, StageContext
from synpro.stages.runner import MANIFEST, Runner, is_done, read_manifest

__all__ = ["MANIFEST", "STAGES", "Runner", "Stage", "StageContext", "is_done", "read_manifest"]
