"""Inputs for the console: a steady cursor when headless, so snapshots never catch a blink."""

from __future__ import annotations

from textual.widgets import Input


class ConsoleInput(Input):
    def on_mount(self) -> None:
        if self.app.is_headless:
            self.cursor_blink = False
