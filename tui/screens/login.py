"""Log in: username and password, checked by the auth service in a worker (scrypt is slow)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.services import auth
from tui.widgets.inputs import ConsoleInput


def demo_hint(logins: tuple[tuple[str, str], ...]) -> str:
    return "Demo logins: " + ", ".join(f"{u} / {p}" for u, p in logins)


class LoginScreen(Screen):
    """The console's only way in; `notice` says why it is shown again (e.g. logged out)."""

    AUTO_FOCUS = "#username"

    class LoggedIn(Message):
        def __init__(self, session: Session) -> None:
            super().__init__()
            self.session = session

    class Failed(Message):
        def __init__(self, message: str, hint: str) -> None:
            super().__init__()
            self.message, self.hint = message, hint

    def __init__(self, notice: str = "") -> None:
        super().__init__()
        self.notice = notice
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Center():
            with Vertical(id="login-box"):
                yield Static("Sign in to the appliance console", id="login-title")
                yield Static(f"Appliance {self.app.ctx.appliance_id}", id="login-appliance",
                             markup=False)
                yield Label("Username")
                yield ConsoleInput(id="username")
                yield Label("Password")
                yield ConsoleInput(password=True, id="password")
                yield Button("Log in", variant="primary", id="login")
                yield Static(self.notice, id="login-message", markup=False)
                yield Static("", id="login-hint", markup=False)
        if self.app.ctx.demo_logins:
            # `make demo` printed these; the console covers that terminal.
            yield Static(demo_hint(self.app.ctx.demo_logins), id="login-demo", markup=False)
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "username":
            self.query_one("#password", Input).focus()
        else:
            self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit()

    def submit(self) -> None:
        if self.busy:
            return
        username = self.query_one("#username", Input).value.strip()
        password = self.query_one("#password", Input).value
        if not username or not password:
            self._show("enter a username and a password", "both are required", error=True)
            return
        self.busy = True
        self._show("checking…", "")
        self._attempt(username, password)

    @work(thread=True, exclusive=True, group="login")
    def _attempt(self, username: str, password: str) -> None:
        try:
            with self.app.ctx.open() as app:
                session = auth.login(app, username, password)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc.message, exc.hint))
            return
        self.post_message(self.LoggedIn(session))

    def on_login_screen_failed(self, message: Failed) -> None:
        self.busy = False
        self._show(message.message, message.hint, error=True)
        password = self.query_one("#password", Input)
        password.value = ""
        password.focus()

    def on_login_screen_logged_in(self, message: LoggedIn) -> None:
        self.busy = False
        self.app.start_session(message.session)

    def _show(self, text: str, hint: str, error: bool = False) -> None:
        line = self.query_one("#login-message", Static)
        line.update(text)
        line.set_class(error, "-error")
        self.query_one("#login-hint", Static).update(hint)
