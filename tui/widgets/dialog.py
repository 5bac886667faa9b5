"""The console's modal forms share one behaviour: the button whose id ends in `-ok` (or
Enter in the last field) submits, any other button or Escape dismisses with None, so
nothing happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input

T = TypeVar("T")


class FormDialog(ModalScreen[T | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    # Enter in a field submits; a form whose fields are filled in turn names its last one,
    # and Enter in the others moves on.
    last_field: str | None = None
    # Each form's own: check the fields, then `dismiss` with its value (or say what is
    # missing and stay open).
    submit: Callable[[], None]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if (event.button.id or "").endswith("-ok"):
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.last_field is None or event.input.id == self.last_field:
            self.submit()
        else:
            self.focus_next()

    def action_cancel(self) -> None:
        self.dismiss(None)
