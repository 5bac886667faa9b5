"""The forced password change: a temporary or expired password can do nothing else."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.services import users
from tui.widgets.inputs import ConsoleInput

FIELDS = ("#old-password", "#new-password", "#repeat-password")


class PasswordChangeScreen(Screen):
    AUTO_FOCUS = "#old-password"
    BINDINGS = [Binding("ctrl+l", "app.logout", "Log out")]

    class Changed(Message):
        pass

    class Failed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, expired: bool = False) -> None:
        super().__init__()
        self.expired = expired
        self.busy = False

    def compose(self) -> ComposeResult:
        why = ("Your password has expired." if self.expired else
               "You logged in with a temporary password.")
        yield Header()
        with Center():
            with Vertical(id="password-box"):
                yield Static("Change your password", id="password-title")
                yield Static(f"{why} Choose a new one before anything else.",
                             id="password-why", markup=False)
                yield Label("Current password")
                yield ConsoleInput(password=True, id="old-password", compact=True)
                yield Label("New password")
                yield ConsoleInput(password=True, id="new-password", compact=True)
                yield Label("Repeat the new password")
                yield ConsoleInput(password=True, id="repeat-password", compact=True)
                yield Button("Change password", variant="primary", id="change")
                yield Static("", id="password-message", markup=False)
                yield Static("", id="password-hint", markup=False)
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        index = FIELDS.index(f"#{event.input.id}")
        if index < len(FIELDS) - 1:
            self.query_one(FIELDS[index + 1], Input).focus()
        else:
            self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit()

    def submit(self) -> None:
        if self.busy:
            return
        old, new, repeat = (self.query_one(f, Input).value for f in FIELDS)
        if not old or not new:
            self._show("enter your current and your new password", "all fields are required")
            return
        if new != repeat:
            self._show("the new passwords differ", "type the same new password twice")
            self.query_one("#repeat-password", Input).value = ""
            return
        self.busy = True
        self._show("changing…", "", error=False)
        self._change(self.app.session, old, new)

    @work(thread=True, exclusive=True, group="password")
    def _change(self, session: Session, old: str, new: str) -> None:
        try:
            with self.app.ctx.open() as app:
                users.change_password(app, session, old, new)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Changed())

    def on_password_change_screen_changed(self, message: Changed) -> None:
        self.busy = False
        self.app.password_changed()

    def on_password_change_screen_failed(self, message: Failed) -> None:
        self.busy = False
        if self.app.session_error(message.error, "the password was not changed"):
            return
        self._show(message.error.message, message.error.hint)
        for f in FIELDS:
            self.query_one(f, Input).value = ""
        self.query_one("#old-password", Input).focus()

    def _show(self, text: str, hint: str, error: bool = True) -> None:
        line = self.query_one("#password-message", Static)
        line.update(text)
        line.set_class(error, "-error")
        self.query_one("#password-hint", Static).update(hint)
