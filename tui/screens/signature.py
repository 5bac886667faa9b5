"""The one electronic-signature dialog, used by every screen that signs (11.200, 11.50, 11.10(j)).

`request_signature` first asks the signing service whether this session may take the action
at all (a refusal is recorded and shown before anyone types a password) and what to ask: the
username only for the session's first signature, the statement only before the user's very
first. The dialog returns a `SignatureRequest`; the screen hands it to its own service,
which re-checks everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Input, Label, Static
from textual.worker import Worker, get_current_worker

from appliance.errors import ApplianceError
from appliance.services import signing
from appliance.services.signing import SignaturePrompt, SignatureRequest
from tui.widgets.dialog import FormDialog
from tui.widgets.inputs import ConsoleInput


@dataclass(frozen=True)
class SignatureAsk:
    """One signed action as a screen describes it."""

    permission: str     # checked before the dialog opens
    meaning: str        # approved, rejected, reviewed, ...
    subject: str        # what is signed, in words ("approve demo-clinical@1")
    target_type: str
    target_id: str


class SignatureDialog(FormDialog[SignatureRequest]):
    """Meaning, reason and password; the username on the session's first signature; the
    statement and its acknowledgement on the user's first signature ever."""

    last_field = "sig-password"

    def __init__(self, ask: SignatureAsk, prompt: SignaturePrompt, username: str) -> None:
        super().__init__()
        self.ask, self.prompt, self.username = ask, prompt, username

    def compose(self) -> ComposeResult:
        ask, prompt = self.ask, self.prompt
        # Scrolls on a small terminal: the first signature (statement, username) is long.
        with VerticalScroll(id="sig-box"):
            yield Static(f"Electronic signature: {ask.meaning}", id="sig-title", markup=False)
            yield Static(f"Signing: {ask.subject}", id="sig-subject", markup=False)
            yield Static(f"Signer: {prompt.full_name} ({self.username})", id="sig-signer",
                         markup=False)
            if prompt.statement:
                yield Static(prompt.statement_text, id="sig-statement", markup=False)
                yield Checkbox("I have read and accept the statement above", id="sig-ack",
                               compact=True)
            with Grid(id="sig-fields"):
                yield Label("Reason")
                yield ConsoleInput(id="sig-reason", compact=True,
                                   placeholder="recorded with the signature")
                if prompt.username:
                    yield Label("Username")
                    yield ConsoleInput(id="sig-user", compact=True,
                                       placeholder="first signature of this session")
                yield Label("Password")
                yield ConsoleInput(password=True, id="sig-password", compact=True)
            yield Static("", id="sig-error", markup=False)
            with Horizontal(id="sig-buttons"):
                yield Button("Sign", variant="primary", id="sig-ok")
                yield Button("Cancel", id="sig-cancel")

    def on_mount(self) -> None:
        self.query_one("#sig-ack" if self.prompt.statement else "#sig-reason").focus()

    def _value(self, selector: str) -> str:
        found = self.query(selector)
        return found.first(Input).value if found else ""

    def _missing(self) -> str:
        """What the service would refuse for anyway, said before a password is spent."""
        if self.prompt.statement and not self.query_one("#sig-ack", Checkbox).value:
            return "accept the signature statement: your first signature needs it"
        if not self._value("#sig-reason").strip():
            return "type a reason: it is recorded with the signature"
        if self.prompt.username and not self._value("#sig-user").strip():
            return "enter your username: the first signature of a session needs it"
        if not self._value("#sig-password"):
            return "enter your password"
        return ""

    def submit(self) -> None:
        missing = self._missing()
        self.query_one("#sig-error", Static).update(missing)
        if missing:
            return
        self.dismiss(SignatureRequest(
            self.ask.meaning, self._value("#sig-reason").strip(), self._value("#sig-password"),
            self._value("#sig-user").strip() or None,
            self.prompt.statement and self.query_one("#sig-ack", Checkbox).value))


def request_signature(screen: Screen, ask: SignatureAsk,
                      then: Callable[[SignatureRequest | None], None],
                      refused: Callable[[ApplianceError], None]) -> None:
    """Ask the service (in a worker) what to ask, then show the dialog; `then` gets the
    request or None if cancelled, `refused` the service's error (no dialog was shown)."""
    app = screen.app
    session = app.session

    def prepare() -> None:
        worker = get_current_worker()
        try:
            with app.ctx.open() as opened:
                prompt = signing.prompt(opened, session, ask.permission,
                                        target_type=ask.target_type, target_id=ask.target_id)
        except ApplianceError as exc:
            app.call_from_thread(refused, exc)
            return
        app.call_from_thread(show, prompt, worker)

    def show(prompt: SignaturePrompt, worker: Worker) -> None:
        # The check takes a moment: the screen may have been left (Escape, another screen)
        # or the session ended meanwhile. A dialog over another screen would sign for one
        # that no longer exists (its result had nowhere to go: the console stopped).
        if app.session is not session:
            return
        if screen not in app.screen_stack:
            app.notify(f"not signed: {ask.subject} (the screen was left before the "
                       "signature dialog opened)", severity="warning")
            return
        if worker.is_cancelled:
            # Asked again meanwhile (the key pressed twice): that request shows the one
            # dialog; a second would sign the same thing again once the first was done.
            return
        app.push_screen(SignatureDialog(ask, prompt, session.username), then)

    screen.run_worker(prepare, name="signature-prompt", group="signature", exclusive=True,
                      thread=True)
