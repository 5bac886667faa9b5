"""The dashboard: which appliance, who is signed in, the audit chain, event count, GPUs.

Verification and counting run in one worker (verify first, so the count includes the
verify event it records); the GPU reading runs in another, since NVML can be slow.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from appliance.audit.query import EventFilter
from appliance.audit.verify import VerifyReport
from appliance.errors import ApplianceError
from appliance.identity.roles import granting_role, roles_for
from appliance.identity.session import Session
from appliance.services import audit, users


@dataclass(frozen=True)
class DashboardData:
    report: VerifyReport | None      # None: this user may not verify
    events: int
    conflicts: list[str]             # "alice holds both admin and security: ..."
    lockouts: list[dict] | None      # None: this user may not view accounts


def chain_text(report: VerifyReport | None) -> tuple[str, str]:
    """(text, class) for the audit chain line."""
    if report is None:
        need = ", ".join(sorted(roles_for("audit.verify")))
        return f"not checked (verifying needs one of: {need})", "-muted"
    if report.ok:
        return (f"OK ({report.mode}: {report.events_checked:,} events checked, "
                f"head seq {report.head_seq:,})", "-ok")
    kinds = ", ".join(sorted(report.kinds()))
    where = f" at seq {report.first_bad_seq}" if report.first_bad_seq else ""
    return f"FAILED{where} ({kinds})", "-error"


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("a", "app.open_audit", "Audit trail"),
        Binding("b", "app.open_updates", "Updates"),
        Binding("m", "app.open_media", "Media"),
        # Not in the footer (full at 80 columns); the command palette lists it.
        Binding("p", "app.open_provision", "Provision", show=False),
        Binding("u", "app.open_users", "Users"),
        Binding("r", "refresh", "Refresh"),
        Binding("ctrl+l", "app.logout", "Log out"),
    ]

    class Loaded(Message):
        def __init__(self, data: DashboardData) -> None:
            super().__init__()
            self.data = data

    class GpuRead(Message):
        def __init__(self, summary: str) -> None:
            super().__init__()
            self.summary = summary

    class Failed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def compose(self) -> ComposeResult:
        session = self.app.session
        yield Header()
        with VerticalScroll(id="dashboard"):
            yield Static("", id="role-warning", markup=False)
            with Grid(id="dash-grid"):
                yield Static("Appliance", classes="dash-key")
                yield Static(self.app.ctx.appliance_id, id="dash-appliance", markup=False)
                yield Static("Signed in", classes="dash-key")
                yield Static(f"{session.full_name} ({session.username})", id="dash-user",
                             markup=False)
                yield Static("Roles", classes="dash-key")
                yield Static(", ".join(session.roles), id="dash-roles", markup=False)
                yield Static("Audit chain", classes="dash-key")
                yield Static("checking…", id="dash-chain", markup=False)
                yield Static("Events", classes="dash-key")
                yield Static("counting…", id="dash-events", markup=False)
                yield Static("GPUs", classes="dash-key")
                yield Static("reading…", id="dash-gpus", markup=False)
                yield Static("Lockouts", classes="dash-key", id="dash-lockouts-key")
                yield Static("", id="dash-lockouts", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def on_screen_resume(self) -> None:
        # Back from another screen: the count moved on, the chain was checked on open.
        if self.is_mounted and self.app.session is not None:
            self._load(self.app.session, verify=False)

    def action_refresh(self) -> None:
        self.query_one("#dash-chain", Static).update("checking…")
        self._load(self.app.session, verify=True)
        self._read_gpus()

    @work(thread=True, exclusive=True, group="dashboard")
    def _load(self, session: Session, verify: bool) -> None:
        may_verify = granting_role(session.roles, "audit.verify") is not None
        may_view_users = granting_role(session.roles, "users.view") is not None
        try:
            with self.app.ctx.open() as app:
                report = audit.verify(app, session, incremental=True) if (
                    verify and may_verify) else None
                events = audit.count(app, session, EventFilter())
                conflicts = users.role_conflicts(app)
                lockouts = users.recent_lockouts(app, session, 5) if may_view_users else None
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(DashboardData(report, events, conflicts, lockouts)))

    @work(thread=True, exclusive=True, group="gpus")
    def _read_gpus(self) -> None:
        self.post_message(self.GpuRead(self.app.ctx.gpu_summary()))

    def on_dashboard_screen_loaded(self, message: Loaded) -> None:
        data = message.data
        session = self.app.session
        if session is None:
            return
        if data.report is not None or granting_role(session.roles, "audit.verify") is None:
            text, cls = chain_text(data.report)
            chain = self.query_one("#dash-chain", Static)
            chain.update(text)
            chain.set_classes(cls)
        self.query_one("#dash-events", Static).update(f"{data.events:,}")
        # The services read the roles from the account as stored now (a grant or a revoke
        # counts at once): show what they read, not what the account had at login.
        self.query_one("#dash-roles", Static).update(", ".join(session.roles))
        warning = self.query_one("#role-warning", Static)
        warning.update("\n".join(f"Warning: {c}" for c in data.conflicts))
        warning.display = bool(data.conflicts)
        lockouts = self.query_one("#dash-lockouts", Static)
        lockouts.display = data.lockouts is not None
        self.query_one("#dash-lockouts-key").display = data.lockouts is not None
        if data.lockouts is not None:
            lockouts.update("none" if not data.lockouts else "\n".join(
                f"{x['username']} at {x['ts']} (until {x['locked_until']})"
                for x in data.lockouts))
            lockouts.set_class(bool(data.lockouts), "-error")

    def on_dashboard_screen_gpu_read(self, message: GpuRead) -> None:
        self.query_one("#dash-gpus", Static).update(message.summary)

    def on_dashboard_screen_failed(self, message: Failed) -> None:
        if self.app.session_error(message.error):
            return
        chain = self.query_one("#dash-chain", Static)
        chain.update(str(message.error))
        chain.set_classes("-error")
