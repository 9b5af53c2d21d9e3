"""How numbers look to people (tables, reports) and to strict JSON readers."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    """A short human form: 4 significant digits, thousands separators, yes/no, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def finite(value: Any) -> Any:
    """Strict JSON has no Infinity/NaN: a non-finite number (e.g. D_eff past the fitted floor) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


NO_INTERVAL = "no interval (use --bootstrap N)"


def interval(ci: Any) -> str:
    """'[low, high]' with as many digits as it takes for the two ends to differ, so an interval
    never reads as zero-width; no interval (None) says how to get one."""
    if ci is None:
        return NO_INTERVAL
    low, high = ci
    for digits in range(4, 16):
        shown = f"{low:.{digits}g}", f"{high:.{digits}g}"
        if shown[0] != shown[1]:
            break
    return f"[{shown[0]}, {shown[1]}]"


def constant_interval(name: str, ci: Any, how: Any) -> str:
    """The interval cell of one fitted constant, given a fit's `ci` map and `interval` block: a
    bootstrap whose refits did not spread says so instead of showing a zero-width interval."""
    if how and name in how.get("no_spread", []):
        return f"none: all {how['n']} refits agreed"
    return interval((ci or {}).get(name))


def estimate(value: Any, ci: Any) -> str:
    """A fitted constant with its interval, e.g. '15.39 [13.1, 18.2]' or '15.39, no interval (...)'."""
    if value is None:
        return "-"
    return f"{fmt(value)} {interval(ci)}" if ci is not None else f"{fmt(value)}, {NO_INTERVAL}"


def seed_estimate(value: Any, ci: Any, n_seeds: Any) -> str:
    """A mean over seeds with its interval, e.g. '2.61 [1.9, 3.4] (3 seeds)'; one seed has none."""
    if value is None:
        return "-"
    seeds = f"({n_seeds} seed{'s' if n_seeds != 1 else ''})" if n_seeds else ""
    return " ".join(part for part in (fmt(value), interval(ci) if ci is not None else "", seeds) if part)


def identification(entry: Any) -> str:
    """'yes', 'no: <reason>', or 'not assessed' for a fit stored before identification existed."""
    if entry is None:
        return "not assessed (refit to assess)"
    return "yes" if entry["identified"] else f"no: {entry['reason']}"
