"""The audit screen's filter inputs: actor, action (or `prefix.*`), target, since, until."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input

from appliance.audit.query import EventFilter
from appliance.errors import ApplianceError
from tui.filters import build_filter
from tui.widgets.inputs import ConsoleInput

FIELDS = (("actor", "actor"), ("action", "action (x.*)"), ("target", "target type:id"),
          ("since", "since (UTC)"), ("until", "until (UTC)"))


class FilterBar(Horizontal):
    """Enter in any field applies all of them; a bad time is reported, never half-applied."""

    DEFAULT_CSS = """
    FilterBar { height: 1; }
    FilterBar > Input { width: 1fr; margin-right: 1; }
    FilterBar > Input:last-of-type { margin-right: 0; }
    """

    class Changed(Message):
        def __init__(self, flt: EventFilter) -> None:
            super().__init__()
            self.flt = flt

    class Invalid(Message):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def compose(self) -> ComposeResult:
        for name, placeholder in FIELDS:
            yield ConsoleInput(placeholder=placeholder, id=f"filter-{name}", compact=True)

    def values(self) -> dict[str, str]:
        return {name: self.query_one(f"#filter-{name}", Input).value for name, _ in FIELDS}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply()

    def apply(self) -> None:
        try:
            flt = build_filter(**self.values())
        except ApplianceError as exc:
            self.post_message(self.Invalid(str(exc)))
            return
        self.post_message(self.Changed(flt))

    def clear(self) -> None:
        for name, _ in FIELDS:
            self.query_one(f"#filter-{name}", Input).value = ""
        self.apply()
