"""The export dialog: format and destination; the audit screen runs the export itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from tui.widgets.dialog import FormDialog
from tui.widgets.inputs import ConsoleInput, typed_path

FORMATS = ("csv", "jsonl", "pdf")


@dataclass(frozen=True)
class ExportRequest:
    fmt: str
    out: Path


class ExportDialog(FormDialog[ExportRequest]):
    """Asks where to; a directory gets a generated file name, a file is never overwritten."""

    AUTO_FOCUS = "#export-ok"  # Enter exports with the defaults; Tab reaches the options

    def __init__(self, default_dir: Path, summary: str) -> None:
        super().__init__()
        self.default_dir = default_dir
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Static("Export the audit trail", id="export-title")
            yield Static(self.summary, id="export-summary", markup=False)
            yield Label("Format")
            with RadioSet(id="export-format"):
                for i, fmt in enumerate(FORMATS):
                    yield RadioButton(fmt.upper() if fmt != "jsonl" else "JSON Lines",
                                      value=i == 0, id=f"fmt-{fmt}")
            yield Label("Destination (a directory or a new file)")
            yield ConsoleInput(str(self.default_dir), id="export-out")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    def submit(self) -> None:
        pressed = self.query_one(RadioSet).pressed_button
        fmt = (pressed.id or "fmt-csv").removeprefix("fmt-") if pressed else "csv"
        out = self.query_one("#export-out", Input).value.strip()
        # A relative path is the console's working directory's, which nobody at the console
        # sees: said and recorded in full ("exported to audit.csv" told nobody where).
        self.dismiss(ExportRequest(fmt, typed_path(out).absolute() if out else self.default_dir))
