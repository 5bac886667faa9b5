"""The full record of one audit event: every field, nothing obscured (11.10(e), 11.50)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from appliance.text import shown
from tui.trail_view import Row

# Shown first, in this order; any other key of the body follows, so nothing is ever hidden.
_ORDER = ("seq", "ts", "actor", "terminal", "action", "target", "outcome", "reason",
          "signature", "old", "new", "details", "clock_warning")


def manifestation(sig: dict[str, Any]) -> str:
    """11.50: printed name, date and time, and meaning of a signature, in one line."""
    return (f"{sig.get('name', '')} ({sig.get('username', '')}), {sig.get('meaning', '')}, "
            f"{sig.get('ts', '')}")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def record_table(row: Row) -> Table:
    """Every field of the stored body, then the chain links it was hashed into."""
    data = row.data
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    for key in (*_ORDER, *sorted(set(data) - set(_ORDER))):
        if key not in data:
            continue
        value = data[key]
        if key == "actor":
            grid.add_row("actor", _text(f"{value['name']} ({value['username']}), "
                                        f"role {value['role']}"))
        elif key == "target":
            grid.add_row("target", _text(f"{value['type']} {value['id']}".strip() or "-"))
            if value.get("digest"):
                grid.add_row("target digest", Text(value["digest"]))
        elif key == "signature" and isinstance(value, dict):
            grid.add_row("signed", Text(shown(manifestation(value)), style="bold"))
            for sub in sorted(set(value) - {"name", "username", "meaning", "ts"}):
                grid.add_row(f"  {sub}", _text(value[sub]))
        elif key == "outcome":
            style = {"failure": "bold red", "denied": "bold yellow"}.get(value, "")
            grid.add_row("outcome", Text(value, style=style))
        elif key == "ts":
            grid.add_row("time (UTC)", Text(value))
        elif key == "clock_warning":
            grid.add_row("clock warning", Text(shown(value), style="bold yellow"))
        elif value is None or value == {}:
            grid.add_row(key, Text("-", style="dim"))
        else:
            grid.add_row(key, _text(value))
    grid.add_row("prev hash", row.event.prev_hash.hex())
    grid.add_row("hash", row.event.hash.hex())
    return grid


def _text(value: Any) -> Text:
    """Plain text, never Rich markup: reasons, names and details are typed by people or
    come from media, and "[/]" in one would stop the render. Control characters show as
    their escapes (`appliance.text.shown`): exact, and unable to move the cursor."""
    if isinstance(value, str):
        return Text(shown(value))
    return Text(shown(_json(value), keep_newlines=True))


class EventDetail(VerticalScroll):
    """Scrollable detail pane for the highlighted event."""

    DEFAULT_CSS = """
    EventDetail { scrollbar-size-vertical: 1; }
    EventDetail > Static { width: 1fr; }
    """

    def compose(self):
        yield Static("No event selected.", id="detail-body")

    def show(self, row: Row | None) -> None:
        body = self.query_one("#detail-body", Static)
        body.update(record_table(row) if row is not None else "No event selected.")
        self.scroll_home(animate=False)
