"""Filling a DataTable: plain text, and columns as wide as their widest cell.

Two things DataTable does on its own go wrong for this console:
- it reads string cells as Rich markup, so a printed name or a bundle name from USB media
  containing "[/]" would stop the render (and "[red]" would restyle it);
- it measures new rows on its next idle, and a frame drawn before that stays in its render
  cache with header-wide columns (seen as a rare snapshot failure under load).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable


def fill_table(table: DataTable, columns: Sequence[str],
               rows: Iterable[tuple[object, Sequence[object]]]) -> None:
    """Replace every column and row of `table`; each row is (key, cells)."""
    cells_by_key = [(key, [Text(str(cell), no_wrap=True, end="") for cell in cells])
                    for key, cells in rows]
    table.clear(columns=True)
    for i, label in enumerate(columns):
        widths = [Text(label).cell_len, *(cells[i].cell_len for _, cells in cells_by_key)]
        table.add_column(label, width=max(widths))
    for key, cells in cells_by_key:
        table.add_row(*cells, key=key)  # type: ignore[arg-type]
