"""The console's modal forms share one behaviour: the button whose id ends in `-ok` (or
Enter in the last field) submits, any other button or Escape dismisses with None, so
nothing happens."""

from __future__ import annotations

from typing import TypeVar

from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input

T = TypeVar("T")


class FormDialog(ModalScreen[T | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    # Enter in a field submits; a form whose fields are filled in turn names its last one,
    # and Enter in the others moves on.
    LAST_FIELD: str | None = None

    def submit(self) -> None:
        """Check the fields and `dismiss` with the form's value (or say what is missing)."""
        raise NotImplementedError

    def last_field(self) -> str | None:
        return self.LAST_FIELD

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if (event.button.id or "").endswith("-ok"):
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        last = self.last_field()
        if last is None or event.input.id == last:
            self.submit()
        else:
            self.focus_next()

    def action_cancel(self) -> None:
        self.dismiss(None)
