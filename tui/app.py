"""The admin console app, one factory for `appliance tui` and for the tests.

Screens: login, then the dashboard; the audit trail, updates, media and users open over
it. The app holds the logged-in Session and nothing else of the appliance's state: screens
ask services.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from appliance.clock import Clock
from appliance.errors import ApplianceError, SessionExpired
from appliance.hardware import GpuSource
from appliance.identity.roles import granting_role
from appliance.identity.session import Session
from appliance.services import audit, auth
from appliance.services.access import check_session
from tui.context import ConsoleContext
from tui.screens.audit import AuditScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.login import LoginScreen
from tui.screens.media import MediaScreen
from tui.screens.password import PasswordChangeScreen
from tui.screens.provision import ProvisionScreen
from tui.screens.updates import UpdatesScreen
from tui.screens.users import UsersScreen

# Reading the clock from a timer would shift recorded times in tests; every 30 s is
# plenty for a 15-minute limit and never fires within a test.
IDLE_CHECK_SECONDS = 30
# Events left unsealed past the audit policy's minutes, with no append since to trigger a
# checkpoint, are sealed by the open console (`audit.seal_overdue`).
SEAL_CHECK_SECONDS = 60


class ConsoleApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Appliance console"
    BINDINGS = [
        # Shown in the dashboard's footer; here so that it works on every screen.
        Binding("ctrl+l", "logout", "Log out", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.session: Session | None = None

    def on_mount(self) -> None:
        self.sub_title = f"appliance {self.ctx.appliance_id[:8]}"
        self.push_screen(LoginScreen())
        self.set_interval(IDLE_CHECK_SECONDS, self._check_idle)
        self.set_interval(SEAL_CHECK_SECONDS, self.seal_overdue)

    # -- session ---------------------------------------------------------------------

    def start_session(self, session: Session) -> None:
        """Where a successful login leads: a temporary or expired password is changed first."""
        self.session = session
        screen: Screen[None] = (PasswordChangeScreen(expired=session.password_expired)
                                if session.must_change_password else DashboardScreen())
        self.call_later(self._enter, screen,
                        f"{session.username} ({', '.join(session.roles)})")

    async def _enter(self, screen: Screen[None], sub_title: str) -> None:
        # The title changes once the login screen is gone: its header, torn down, must not
        # be asked to show the new one (as in _back_to_login).
        await self.switch_screen(screen)
        self.sub_title = sub_title

    def password_changed(self) -> None:
        self.switch_screen(DashboardScreen())

    def end_session(self, notice: str) -> None:
        """Back to the login screen, saying why (logout, idle expiry). Any open dialog is
        closed, and the notice says so, so no typed-in work disappears silently."""
        dialogs = [s for s in self.screen_stack if isinstance(s, ModalScreen)]
        if dialogs:
            notice += f"; the open dialog was closed without acting ({len(dialogs)})" \
                if len(dialogs) > 1 else "; the open dialog was closed without acting"
        self.session = None
        self.call_later(self._back_to_login, notice)

    async def _back_to_login(self, notice: str) -> None:
        # Screens go one at a time, and the title changes last: a header being torn
        # down must not be asked to show the new one.
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        await self.switch_screen(LoginScreen(notice))
        self.sub_title = f"appliance {self.ctx.appliance_id[:8]}"

    def told_elsewhere(self, screen: Screen, text: str, severity: str = "information") -> bool:
        """From a worker thread: a job whose screen was left meanwhile (the job goes on, and
        is recorded) says how it ended in a notification, as the screen's own line is gone.
        True if it did; False while the screen is there to say it."""
        if screen.is_attached:
            return False
        self.call_from_thread(self.notify, text, severity=severity, timeout=30)
        return True

    def session_error(self, error: ApplianceError, undone: str = "") -> bool:
        """Return to the login screen if a service said the session is over; True if so."""
        if not isinstance(error, SessionExpired) or self.session is None:
            return False
        notice = error.message + (f"; {undone}" if undone else "") + ": log in again"
        self.end_session(notice)
        return True

    def _check_idle(self) -> None:
        """An unattended console leaves by itself; the service records the expiry."""
        session = self.session
        if session is None or session.ended:
            return
        idle = timedelta(minutes=self.ctx.idle_minutes)
        if self.ctx.clock.now() - session.last_activity > idle:
            self._expire(session)

    @work(thread=True, exclusive=True, group="session")
    def _expire(self, session: Session) -> None:
        try:
            with self.ctx.open() as app:
                check_session(app, session)
        except SessionExpired as exc:
            self.call_from_thread(self.session_error, exc)

    @work(thread=True, exclusive=True, group="seal", exit_on_error=False)
    def seal_overdue(self) -> None:
        """Housekeeping, logged in or not. Whatever it meets (a read-only, damaged or
        tampered database) is left for the dashboard's verify and the next action, which
        say it in one line; the console stays up."""
        try:
            with self.ctx.open() as app:
                audit.seal_overdue(app)
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    def may(self, permission: str) -> bool:
        """Whether the session's roles hold `permission`: what the console offers. The roles
        are the account's as the services last read them (every service call re-reads them);
        the services decide."""
        session = self.session
        return session is not None and granting_role(session.roles, permission) is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "logout":
            return self.session is not None
        if action in ("open_audit", "open_dashboard", "open_users", "open_updates",
                      "open_media", "open_provision"):
            if self.session is None or self.session.must_change_password:
                return False
            needs = {"open_users": "users.view", "open_media": "media.scan",
                     "open_provision": "provision.view"}.get(action)
            return needs is None or self.may(needs)
        return True

    def action_logout(self) -> None:
        if self.session is not None:
            self._logout(self.session)

    @work(thread=True, exclusive=True, group="session")
    def _logout(self, session: Session) -> None:
        notice = f"{session.username} logged out"
        try:
            with self.ctx.open() as app:
                auth.logout(app, session)
        except ApplianceError as exc:
            # The console still closes the session: leaving it open would be worse.
            notice += f" (the logout could not be recorded: {exc.message})"
        self.call_from_thread(self.end_session, notice)

    # -- navigation ------------------------------------------------------------------

    def _open(self, action: str, screen_type: type[Screen[None]]) -> None:
        """Open a screen over the dashboard, one of each: a screen already open is returned
        to (those above it close), any other replaces the one over the dashboard. Jumping
        between screens from keys or the palette never stacks copies. Never over a dialog."""
        if not self.check_action(action, ()) or isinstance(self.screen, ModalScreen):
            return
        stack = self.screen_stack
        keep = next((i + 1 for i, s in enumerate(stack) if isinstance(s, screen_type)), None)
        for _ in range(len(stack) - (keep or 2)):
            self.pop_screen()
        if keep is None:
            self.push_screen(screen_type())

    def action_open_audit(self) -> None:
        self._open("open_audit", AuditScreen)

    def action_open_updates(self) -> None:
        self._open("open_updates", UpdatesScreen)

    def action_open_media(self) -> None:
        self._open("open_media", MediaScreen)

    def action_open_provision(self) -> None:
        self._open("open_provision", ProvisionScreen)

    def action_open_users(self) -> None:
        self._open("open_users", UsersScreen)

    def action_open_dashboard(self) -> None:
        self._open("open_dashboard", DashboardScreen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Not Textual's "Screenshot": it writes the screen to the user's downloads,
        # unrecorded (a temporary password shown once, pages of the trail without the
        # export's event and manifest, whatever the role).
        yield from (c for c in super().get_system_commands(screen) if c.title != "Screenshot")
        if self.session is None:
            return
        if self.session.must_change_password:
            yield SystemCommand("Log out", "End this session", self.action_logout)
            return
        yield SystemCommand("Dashboard", "Appliance, audit chain, events, GPUs",
                            self.action_open_dashboard)
        yield SystemCommand("Audit trail", "Browse, filter, verify and export the trail",
                            self.action_open_audit)
        yield SystemCommand("Updates", "Bundles by state, approval, install, rollback",
                            self.action_open_updates)
        if self.check_action("open_media", ()):
            yield SystemCommand("Media", "Scan removable media or a path for bundles; import",
                                self.action_open_media)
        if self.check_action("open_provision", ()):
            yield SystemCommand("Provisioning", "Check or run playbooks, follow them, runs "
                                "and artifacts", self.action_open_provision)
        if self.check_action("open_users", ()):
            yield SystemCommand("Users", "Accounts, roles, passwords, lockouts",
                                self.action_open_users)
        # A screen's own commands, as its keys: only those its check_action allows (the
        # palette calls the action directly, past any binding check).
        if isinstance(screen, AuditScreen):
            if screen.check_action("verify", ()):
                yield SystemCommand("Verify audit trail", "Check the whole chain and "
                                    "checkpoints", screen.action_verify)
            if screen.check_action("export", ()):
                yield SystemCommand("Export audit trail", "CSV, JSON Lines or PDF with a "
                                    "signed manifest", screen.action_export)
        if isinstance(screen, UsersScreen):
            for name, title in (("enable", "Enable account"), ("unlock", "Unlock account"),
                                ("training", "Record training")):
                if screen.check_action("account", (name,)):
                    yield SystemCommand(title, "For the selected user, with a reason",
                                        partial(screen.action_account, name))
            if screen.check_action("review", ()):
                yield SystemCommand("Review access", "Sign the account list as reviewed",
                                    screen.action_review)
        yield SystemCommand("Log out", "End this session", self.action_logout)


def build_app(home: Path, clock: Clock | None = None, *, terminal: str | None = None,
              gpu_source: GpuSource | None = None) -> ConsoleApp:
    """The console on the appliance at `home`; tests pass a fixed clock, terminal and GPUs."""
    return ConsoleApp(ConsoleContext.load(Path(home), clock, terminal, gpu_source))


def run_console(home: Path) -> None:
    build_app(home).run()
