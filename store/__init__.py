"""SynPro's results store: studies, trials, arms and learning curves in SQLite or PostgreSQL."""

from store.store import Store

__all__ = ["Store"]
