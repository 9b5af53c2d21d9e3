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
