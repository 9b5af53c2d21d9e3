"""SynPro: turn a limited organic corpus into more useful pretraining tokens, and measure it."""

__version__ = "0.1.0"
