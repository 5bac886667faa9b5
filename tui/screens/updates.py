"""Updates: bundles by state, the approval view, signed approval, rejection and rollback
(through the shared signature dialog), and install progress. Every action is a service
call in a worker thread; the screen only shows results.

Install progress comes from the install's own step points (`Hooks.point`, the same edge
the crash tests kill at), posted to the screen as messages.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.services import updates
from appliance.services.signing import SignatureRequest
from appliance.updates.install import Edges
from appliance.updates.view import install_text, view_text
from tui.screens.signature import SignatureAsk, request_signature
from tui.widgets.tables import fill_table

COLUMNS = ("bundle", "state", "publisher", "imported by", "digest")

# Install step points worth a line of progress (the others are per-file or internal).
STEPS = {
    "started:committed": "started: APPROVED -> INSTALLING",
    "laid_out:committed": "release laid out from the content store",
    "switch:after": "`current` switched to the new release",
    "restart:recorded": "services restarted (or the restart recorded)",
    "healthy:committed": "health checks passed",
    "failed:committed": "health check FAILED: switching back",
    "switch_back:after": "`current` switched back to the previous release",
    "activate:committed": "ACTIVE",
    "rolled_back:committed": "ROLLED_BACK",
}

# What each action of the screen needs (what the footer offers; the services check it).
PERMISSIONS = {"approve": "update.approve", "reject": "update.approve",
               "install": "update.install", "rollback": "update.rollback"}

# Signed actions: permission (checked before the dialog opens), meaning, what is signed.
SIGNED = {
    "approve": ("update.approve", "approved", "approve {ref} for installation"),
    "reject": ("update.approve", "rejected", "reject {ref}"),
    "rollback": ("update.rollback", "approved", "roll back to {ref}"),
}


class UpdatesScreen(Screen):
    # Back first, and a compact footer without the palette's key (ctrl+p still opens it):
    # at 80 columns an admin's footer then holds every key, Quit included.
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("o", "open", "Open"),
        Binding("a", "approve", "Approve"),
        Binding("x", "reject", "Reject"),
        Binding("i", "install", "Install"),
        Binding("b", "rollback", "Roll back"),
        Binding("r", "refresh", "Refresh"),
    ]

    class Loaded(Message):
        def __init__(self, rows: list[dict], status: dict) -> None:
            super().__init__()
            self.rows, self.status = rows, status

    class Opened(Message):
        def __init__(self, ref: str, data: dict) -> None:
            super().__init__()
            self.ref, self.data = ref, data

    class Step(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Done(Message):
        def __init__(self, text: str, ok: bool) -> None:
            super().__init__()
            self.text, self.ok = text, ok

    class Failed(Message):
        def __init__(self, error: ApplianceError, job: bool = False) -> None:
            super().__init__()
            self.error, self.job = error, job   # job: an install, rollback or signing

    def compose(self) -> ComposeResult:
        yield Header()
        table = DataTable(id="upd-list", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="upd-message", markup=False)
        yield Static("", id="upd-progress", markup=False)
        with VerticalScroll(id="upd-view-box"):
            yield Static("Select a bundle and press o to open its approval view.",
                         id="upd-view", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def __init__(self) -> None:
        super().__init__()
        # What runs now ("installing demo-clinical@1"): one job at a time, so a second
        # key neither wipes its progress nor asks a signature the service must refuse.
        self.busy: str | None = None

    def on_mount(self) -> None:
        self.action_refresh()

    # -- helpers ------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        return self.app.session

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value)

    def say(self, text: str, error: bool = False) -> None:
        msg = self.query_one("#upd-message", Static)
        msg.update(text)
        msg.set_class(error, "-error")

    def show_progress(self, text: str) -> None:
        """The install's steps; hidden while there are none (empty, its rule and blank line
        took two of the approval view's lines at 80x24)."""
        box = self.query_one("#upd-progress", Static)
        box.update(text)
        box.display = bool(text)

    def edges(self, hooks=None) -> Edges:
        edges = Edges(source=self.app.ctx.gpu_source)
        if hooks is not None:
            edges.hooks = hooks
        return edges

    def _wait(self) -> bool:
        """True (and says so) while a job runs."""
        if self.busy:
            self.say(f"wait: {self.busy} is still running", error=True)
        return self.busy is not None

    # -- actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Approve, reject, install and roll back are offered to the roles that hold them
        (every role sees this screen; an auditor was offered all four); the service
        decides anyway."""
        needs = PERMISSIONS.get(action)
        return needs is None or self.app.may(needs)

    def action_refresh(self) -> None:
        self._load(self.session)

    def action_open(self) -> None:
        ref = self.selected()
        if ref:
            self.say(f"opening {ref}…")
            self._open(self.session, ref)

    def _ask(self, what: str, ref: str) -> None:
        permission, meaning, subject = SIGNED[what]
        ask = SignatureAsk(permission, meaning, subject.format(ref=ref), "bundle", ref)

        def then(req: SignatureRequest | None) -> None:
            if req is None:
                self.busy = None
                self.say("not signed: nothing was changed")
            else:
                self.say(f"signing: {ask.subject}…")
                self._sign(self.session, what, ref, req)

        self.busy = f"signing: {ask.subject}"
        request_signature(self, ask, then,
                          lambda exc: self.post_message(self.Failed(exc, job=True)))

    def action_approve(self) -> None:
        ref = self.selected()
        if ref and not self._wait():
            self._ask("approve", ref)

    def action_reject(self) -> None:
        ref = self.selected()
        if ref and not self._wait():
            self._ask("reject", ref)

    def action_rollback(self) -> None:
        ref = self.selected()
        if ref and not self._wait():
            self._ask("rollback", ref)

    def action_install(self) -> None:
        ref = self.selected()
        if ref and not self._wait():
            self.busy = f"installing {ref}"
            self.show_progress("")
            self.say(f"installing {ref}…")
            self._install(self.session, ref)

    # -- workers ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="updates-load")
    def _load(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                rows = updates.list_updates(app, session)
                status = updates.status(app, session)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(rows, status))

    @work(thread=True, exclusive=True, group="updates-act")
    def _open(self, session: Session, ref: str) -> None:
        try:
            with self.app.ctx.open() as app:
                data = updates.show(app, session, ref, source=self.app.ctx.gpu_source)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Opened(ref, data))

    @work(thread=True, exclusive=True, group="updates-act")
    def _sign(self, session: Session, what: str, ref: str, req: SignatureRequest) -> None:
        try:
            with self.app.ctx.open() as app:
                if what == "approve":
                    out = updates.approve(app, session, ref, req, self.app.ctx.gpu_source)
                    text = f"{ref}: {out['state']} ({out['signatures']} of {out['required']} " \
                           f"approvals)"
                elif what == "reject":
                    updates.reject(app, session, ref, req)
                    text = f"{ref}: REJECTED"
                else:
                    result = updates.rollback(app, session, ref, req, self.edges(
                        _Progress(self)))
                    self.post_message(self.Done(install_text(result.to_dict()),
                                                result.outcome == "activated"))
                    return
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, job=True))
            return
        self.post_message(self.Done(text, True))

    @work(thread=True, exclusive=True, group="updates-act")
    def _install(self, session: Session, ref: str) -> None:
        try:
            with self.app.ctx.open() as app:
                result = updates.install(app, session, ref, self.edges(_Progress(self)))
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, job=True))
            return
        self.post_message(self.Done(install_text(result.to_dict()),
                                    result.outcome == "activated"))

    # -- results ------------------------------------------------------------------------

    def on_updates_screen_loaded(self, msg: Loaded) -> None:
        table = self.query_one(DataTable)
        keep = self.selected()
        fill_table(table, COLUMNS, [(r["ref"], (r["ref"], r["state"], r["publisher"],
                                                r["imported_by"], r["digest"][:12]))
                                    for r in msg.rows])
        if keep in {r["ref"] for r in msg.rows}:
            table.move_cursor(row=table.get_row_index(keep))
        st = msg.status
        active = st["active"]["ref"] if st["active"] else "nothing"
        resolved = st["recovery"]["resolved"]
        note = f"; recovered an interrupted {resolved['op']}: {resolved['decision']}" \
            if resolved else ""
        if not self.query_one("#upd-message", Static).content:
            self.say(f"active: {active}; current -> {st['current'] or '(none)'}{note}")

    def on_updates_screen_opened(self, msg: Opened) -> None:
        self.query_one("#upd-view", Static).update(view_text(msg.data))
        self.say(f"{msg.ref}: {msg.data['bundle']['state']} (opened; recorded)")
        self._load(self.session)

    def on_updates_screen_step(self, msg: Step) -> None:
        text = str(self.query_one("#upd-progress", Static).content)
        self.show_progress(f"{text}\n{msg.text}" if text else msg.text)

    def on_updates_screen_done(self, msg: Done) -> None:
        self.busy = None
        self.say(msg.text.splitlines()[0], error=not msg.ok)
        if "\n" in msg.text:
            self.query_one("#upd-view", Static).update(msg.text)
        self._load(self.session)

    def on_updates_screen_failed(self, msg: Failed) -> None:
        if msg.job:
            self.busy = None
        if not self.app.session_error(msg.error, "nothing was changed"):
            self.say(f"error: {msg.error}", error=True)


class _Progress:
    """Install hooks that report the main steps to the screen (called in the worker)."""

    def __init__(self, screen: UpdatesScreen) -> None:
        self.screen = screen
        self.files = 0

    def point(self, label: str) -> None:
        if label.startswith("layout:"):
            self.files += 1
            if self.files % 25 == 0:
                self.screen.post_message(UpdatesScreen.Step(f"laying out: {self.files} files"))
        elif label in STEPS:
            self.screen.post_message(UpdatesScreen.Step(STEPS[label]))
