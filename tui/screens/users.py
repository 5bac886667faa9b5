"""Accounts (11.100, 11.300): the list, the security officer's changes, each with a reason,
and the signed periodic access review.

Every change is one service call in a worker; the services check the role, record old and
new values and refuse what the rules forbid (the last security officer, untrained admins).
A reset password is shown once, here, and never stored or logged anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from appliance.context import Appliance
from appliance.errors import ApplianceError
from appliance.identity.roles import ROLES
from appliance.identity.session import Session
from appliance.identity.users import User
from appliance.services import users
from appliance.services.signing import SignatureRequest
from tui.screens.signature import SignatureAsk, request_signature
from tui.widgets.dialog import FormDialog
from tui.widgets.inputs import ConsoleInput
from tui.widgets.tables import fill_table


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    password: bool = False
    placeholder: str = ""


@dataclass(frozen=True)
class AccountAction:
    """One account change: what the dialog asks and which service does it."""

    title: str
    fields: tuple[Field, ...]
    run: Callable[[Appliance, Session, str, dict[str, str]], str]
    needs_user: bool = True
    permission: str = "users.manage"   # what the footer offers it to; the service checks


COLUMNS = ("username", "printed name", "roles", "status", "")
ROLE_FIELD = Field("role", "Role", placeholder=" / ".join(ROLES))
REASON = Field("reason", "Reason (recorded in the audit trail)")


def _add(app: Appliance, s: Session, _user: str, v: dict[str, str]) -> str:
    roles = [r.strip() for r in v["roles"].replace(",", " ").split() if r.strip()]
    user = users.add_user(app, s, v["username"], v["full_name"], roles, v["password"],
                          v["reason"])
    return f"added {user.username} ({', '.join(user.roles)}); the password must be " \
           "changed at first login"


def _reset(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    temp = users.reset_password(app, s, name, v["reason"])
    return (f"temporary password for {temp.username}: {temp.password} (shown once; it "
            "signs nothing and must be changed at login)")


def _unlock(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.unlock(app, s, name, v["reason"])
    return f"unlocked {name}"


def _training(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.record_training(app, s, name, v["role"].strip(), v["reason"])
    return f"recorded {name}'s training for {v['role'].strip()}"


def _grant(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.grant_role(app, s, name, v["role"].strip(), v["reason"])
    return f"{name} now holds {v['role'].strip()}"


def _revoke(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.revoke_role(app, s, name, v["role"].strip(), v["reason"])
    return f"{name} no longer holds {v['role'].strip()}"


def _disable(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.disable_user(app, s, name, v["reason"])
    return f"disabled {name} (the username stays reserved)"


def _enable(app: Appliance, s: Session, name: str, v: dict[str, str]) -> str:
    users.enable_user(app, s, name, v["reason"])
    return f"enabled {name}"


ACTIONS: dict[str, AccountAction] = {
    "add": AccountAction("New user", (
        Field("username", "Username"), Field("full_name", "Printed name"),
        Field("roles", "Roles", placeholder=" ".join(ROLES)),
        Field("password", "Temporary password", password=True), REASON), _add, False),
    "grant": AccountAction("Grant a role", (ROLE_FIELD, REASON), _grant),
    "revoke": AccountAction("Revoke a role", (ROLE_FIELD, REASON), _revoke),
    "disable": AccountAction("Disable the account", (REASON,), _disable),
    "enable": AccountAction("Enable the account", (REASON,), _enable),
    "reset": AccountAction("Reset the password", (REASON,), _reset),
    "unlock": AccountAction("Unlock the account", (REASON,), _unlock),
    "training": AccountAction("Record training", (ROLE_FIELD, REASON), _training,
                              permission="users.train"),
}


class AccountDialog(FormDialog[dict[str, str]]):
    """The fields of one account action; Escape cancels and nothing changes."""

    def __init__(self, action: AccountAction, username: str | None) -> None:
        super().__init__()
        self.action = action
        self.last_field = f"account-{action.fields[-1].name}"
        self.username = username

    def compose(self) -> ComposeResult:
        title = self.action.title + (f": {self.username}" if self.username else "")
        with Vertical(id="account-box"):
            yield Static(title, id="account-title", markup=False)
            for field in self.action.fields:
                yield Label(field.label)
                yield ConsoleInput(placeholder=field.placeholder, password=field.password,
                                   id=f"account-{field.name}", compact=True)
            yield Static("", id="account-note", markup=False)
            with Horizontal(id="account-buttons"):
                yield Button("Apply", variant="primary", id="account-ok")
                yield Button("Cancel", id="account-cancel")

    def submit(self) -> None:
        """Every field is needed: an empty one is said here and the form stays open (the
        service's refusal used to close it, and a new user's form was typed again)."""
        values = {f.name: self.query_one(f"#account-{f.name}", Input).value
                  for f in self.action.fields}
        empty = next((f for f in self.action.fields if not values[f.name].strip()), None)
        if empty is not None:
            note = self.query_one("#account-note", Static)
            note.update(f"{empty.label.split(' (')[0]} is empty: every field is needed")
            note.display = True
            self.query_one(f"#account-{empty.name}", Input).focus()
            return
        self.dismiss(values)


def _row(user: User) -> tuple[str, ...]:
    flags = "must change password" if user.must_change_password else ""
    return (user.username, user.full_name, ", ".join(user.roles), user.status, flags)


class UsersScreen(Screen):
    BINDINGS = [
        Binding("n", "account('add')", "New"),
        Binding("g", "account('grant')", "Grant"),
        Binding("k", "account('revoke')", "Revoke"),
        Binding("d", "account('disable')", "Disable"),
        Binding("p", "account('reset')", "Reset pw"),
        Binding("r", "review", "Review"),
        Binding("e", "account('enable')", "Enable", show=False),
        Binding("u", "account('unlock')", "Unlock", show=False),
        Binding("t", "account('training')", "Training", show=False),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, accounts: list[User]) -> None:
            super().__init__()
            self.accounts = accounts

    class Done(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Failed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def compose(self) -> ComposeResult:
        yield Header()
        table = DataTable(id="user-list", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="users-message", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self._load(self.app.session)

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Each change is offered to the roles that hold it (an auditor or an admin, who
        may only view accounts, was offered them all); the service decides anyway."""
        if action == "account" and parameters:
            return self.app.may(ACTIONS[str(parameters[0])].permission)
        if action == "review":
            return self.app.may("users.review")
        return True

    def action_account(self, name: str) -> None:
        action = ACTIONS[name]
        username = self.selected() if action.needs_user else None
        if action.needs_user and username is None:
            return
        self.app.push_screen(AccountDialog(action, username),
                             lambda values: self._apply(name, username, values))

    def action_review(self) -> None:
        """Periodic access review: the security officer signs the account list as it is."""
        count = self.query_one(DataTable).row_count
        ask = SignatureAsk("users.review", "reviewed",
                           f"access review of the {count} accounts listed", "access_review",
                           "users")

        def then(req: SignatureRequest | None) -> None:
            if req is None:
                self.say("not signed: nothing was changed")
            else:
                self.say("signing the access review…")
                self._review(self.app.session, req)

        request_signature(self, ask, then, lambda exc: self.post_message(self.Failed(exc)))

    @work(thread=True, exclusive=True, group="users")
    def _review(self, session: Session, req: SignatureRequest) -> None:
        try:
            with self.app.ctx.open() as app:
                sig = users.review_access(app, session, req)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Done(f"access review signed: {sig.line()}"))

    def _apply(self, name: str, username: str | None, values: dict[str, str] | None) -> None:
        if values is None:
            self.say("cancelled: nothing was changed")
            return
        self.say("applying…")
        self._run(self.app.session, ACTIONS[name], username or "", values)

    @work(thread=True, exclusive=True, group="users")
    def _run(self, session: Session, action: AccountAction, username: str,
             values: dict[str, str]) -> None:
        try:
            with self.app.ctx.open() as app:
                text = action.run(app, session, username, values)
                accounts = users.users(app, session)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Done(text))
        self.post_message(self.Loaded(accounts))

    @work(thread=True, exclusive=True, group="users")
    def _load(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                accounts = users.users(app, session)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(accounts))

    def on_users_screen_loaded(self, message: Loaded) -> None:
        table = self.query_one(DataTable)
        keep = self.selected()
        fill_table(table, COLUMNS, [(user.username, _row(user)) for user in message.accounts])
        if keep is not None and keep in {u.username for u in message.accounts}:
            table.move_cursor(row=table.get_row_index(keep))

    def on_users_screen_done(self, message: Done) -> None:
        self.say(message.text)

    def on_users_screen_failed(self, message: Failed) -> None:
        if not self.app.session_error(message.error, "nothing was changed"):
            self.say(str(message.error), error=True)

    def say(self, text: str, error: bool = False) -> None:
        line = self.query_one("#users-message", Static)
        line.update(text)
        line.set_class(error, "-error")
