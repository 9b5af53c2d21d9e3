"""Scaling laws and their fitting: what the loss of a run should be, and what repeated data is worth."""

from synpro.scaling.laws import (
    CHINCHILLA,
    LAWS,
    MUENNIGHOFF_C4,
    ChinchillaLaw,
    DataConstrainedLaw,
    PowerLaw,
    ScalingLaw,
)

__all__ = ["CHINCHILLA", "LAWS", "MUENNIGHOFF_C4", "ChinchillaLaw", "DataConstrainedLaw", "PowerLaw",
           "ScalingLaw"]
