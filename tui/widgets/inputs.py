"""Inputs for the console: a steady cursor when headless, so snapshots never catch a blink;
typed paths read as a shell would read them."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input


def typed_path(text: str) -> Path:
    """`~` expanded where it can be; `~nosuchuser` stays as typed, for the service to say
    that no such directory exists (expanduser raises on it, on the console's own thread)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


class ConsoleInput(Input):
    def on_mount(self) -> None:
        if self.app.is_headless:
            self.cursor_blink = False
