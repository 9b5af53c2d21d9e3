"""Tables that fit the terminal they are printed in, without ever cutting a number.

A table is a list of `Column`s; each cell is a string. Numeric columns never wrap (a number is
shown whole or not at all); text columns may wrap at spaces. When the columns' minimum widths do
not fit the console, the optional columns are left out, last-listed first, and the caller says
which (and how to choose them: `--columns`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from rich.console import Console
from rich.table import Table

# What rich's default box draws around n columns: one border plus a space of padding each side.
_EDGE, _PER_COLUMN = 1, 3


@dataclass
class Column:
    key: str  # its name for --columns
    header: str
    numeric: bool = True  # right-aligned; a cell is kept on one line
    required: bool = False  # kept at any width
    rank: int = 0  # when the table is too wide, optional columns go lowest rank first

    def max_width(self, cells: list[str]) -> int:
        """Its width with nothing wrapped."""
        return max([len(self.header)] + [len(line) for text in cells for line in text.splitlines()] + [1])

    def min_width(self, cells: list[str]) -> int:
        """The narrowest this column may get: its longest cell (numeric) or longest word (text), and its
        header's longest word (headers wrap)."""
        words = [w for text in cells for w in (text.splitlines() if self.numeric else text.split())]
        return max([len(w) for w in self.header.split()] + [len(w) for w in words] + [1])


def _width(columns: list[Column], widths: dict[str, int]) -> int:
    return _EDGE + sum(widths[c.key] + _PER_COLUMN for c in columns)


def choose(columns: list[Column], rows: list[dict[str, str]], width: int,
           wanted: list[str] | None = None) -> tuple[list[Column], list[Column]]:
    """The columns to show (in their order) and those left out: `wanted` by key when given (required
    columns always kept), else every column that fits, dropping optional ones from the end."""
    if wanted is not None:
        keep = [c for c in columns if c.required or c.key in wanted]
        return keep, [c for c in columns if c not in keep]
    widths = {c.key: c.min_width([r.get(c.key, "") for r in rows]) for c in columns}
    keep = list(columns)
    droppable = sorted((c for c in columns if not c.required), key=lambda c: (c.rank, -columns.index(c)))
    for column in droppable:
        if _width(keep, widths) <= width:
            break
        keep.remove(column)
    return keep, [c for c in columns if c not in keep]


@contextlib.contextmanager
def at_width(console: Console, width: int) -> Iterator[Console]:
    """The console at `width` columns for a while, as it was after."""
    before = console._width  # noqa: SLF001 - rich keeps a fixed width here; None: ask the terminal
    console.width = width
    try:
        yield console
    finally:
        console._width = before  # noqa: SLF001


def fitted(console: Console) -> contextlib.AbstractContextManager[Console]:
    """The console at `width_of` its terminal while a table and its notes print (COLUMNS is read then, not
    at import)."""
    return at_width(console, width_of(console))


def width_of(console: Console) -> int:
    """The width to fit: `COLUMNS` when set (piped output included), else the console's."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else console.width


def render(console: Console, title: str, columns: list[Column], rows: list[dict[str, str]],
           wanted: list[str] | None = None) -> list[Column]:
    """Print the table fitted to `console`'s width; return the columns left out."""
    shown, hidden = choose(columns, rows, width_of(console), wanted)
    # Wider than the terminal only when the columns that must stay cannot be narrower: a line runs over
    # rather than a number being cut.
    needed = _width(shown, {c.key: c.min_width([r.get(c.key, "") for r in rows]) for c in shown})
    width = max(width_of(console), needed)
    table = Table(title=title, title_justify="left")
    for c, w in zip(shown, _widths(shown, rows, width)):
        # Widths set here, not by rich (whose shrinking can leave a table wider than the console): no column
        # is narrower than its longest word, so text wraps at spaces and a number is never cut.
        table.add_column(c.header, justify="right" if c.numeric else "left", width=w, overflow="fold")
    for row in rows:
        table.add_row(*(row.get(c.key, "") for c in shown))
    with at_width(console, width):
        console.print(table)
    return hidden


def _widths(columns: list[Column], rows: list[dict[str, str]], width: int) -> list[int]:
    """Each column's minimum width, then the room left shared out, narrowest need first, up to each
    column's unwrapped width."""
    cells = [[r.get(c.key, "") for r in rows] for c in columns]
    widths = [c.min_width(v) for c, v in zip(columns, cells)]
    wanted = [c.max_width(v) for c, v in zip(columns, cells)]
    room = width - _EDGE - _PER_COLUMN * len(columns) - sum(widths)
    for i in sorted(range(len(columns)), key=lambda i: wanted[i] - widths[i]):
        grow = max(0, min(room, wanted[i] - widths[i]))
        widths[i] += grow
        room -= grow
    return widths


def unknown_columns(columns: list[Column], wanted: list[str]) -> list[str]:
    """Keys in `wanted` that no column has."""
    keys = {c.key for c in columns}
    return [w for w in wanted if w not in keys]
