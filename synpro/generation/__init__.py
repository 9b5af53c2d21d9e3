"""Synthetic data: rewrite organic windows with an LLM (rephrase, reformat), filter, cache, measure."""

from synpro.generation.synthetic import SyntheticSet, generate_set, set_key

__all__ = ["SyntheticSet", "generate_set", "set_key"]
