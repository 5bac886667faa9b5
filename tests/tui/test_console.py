"""The console driven with Pilot against a real appliance: log in, dashboard, audit trail."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, ProgressBar, RadioButton

from appliance.audit import lookup
from appliance.audit.events import Actor, Event
from appliance.audit.trail import iter_events, read_head
from appliance.context import Appliance
from tests.conftest import ADMIN, PASSWORD
from tests.tui.conftest import AUDITOR
from tests.tui.pilot import (
    audit_ready,
    dashboard_ready,
    fill,
    filter_events,
    log_in,
    log_in_to_audit,
    run_command,
    settle,
    text_of,
    type_into,
    wait_for,
)
from tui.screens.audit import AuditScreen
from tui.screens.export import ExportDialog
from tui.screens.login import LoginScreen
from tui.screens.updates import UpdatesScreen
from tui.screens.users import UsersScreen
from tui.widgets.event_detail import EventDetail
from tui.widgets.event_list import EventList
from tui.widgets.job_status import JobStatus

pytestmark = pytest.mark.asyncio


def last_event(app: Appliance) -> dict:
    head = read_head(app.conn).seq
    return next(iter_events(app.conn, head)).data


def detail_text(pilot) -> str:
    body = pilot.app.screen.query_one(EventDetail).query_one("#detail-body").content
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(body)
    return console.export_text()


async def test_wrong_password_shows_one_line_error_and_is_recorded(make_console, history):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, "not the password", typed=True)
        await wait_for(pilot, lambda: "failed" in text_of(pilot, "#login-message"))
        assert isinstance(app.screen, LoginScreen)
        assert text_of(pilot, "#login-message") == "login failed: unknown user or wrong password"
        assert "Traceback" not in text_of(pilot, "#login-hint")
        assert app.screen.query_one("#password", Input).value == ""
        assert app.session is None
    event = last_event(history)
    assert (event["action"], event["outcome"], event["target"]["id"]) == (
        "auth.login", "failure", ADMIN)
    assert event["terminal"] == "console-test"


async def test_right_password_opens_dashboard(make_console, history):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        assert app.session is not None and app.session.username == ADMIN
        assert text_of(pilot, "#dash-appliance") == history.appliance_id
        assert text_of(pilot, "#dash-user") == "Alice Adams (alice)"
        assert text_of(pilot, "#dash-roles") == "admin, security"
        chain = text_of(pilot, "#dash-chain")
        assert chain.startswith("OK (incremental")
        # The count includes the console's own login and verify events.
        assert text_of(pilot, "#dash-events") == f"{read_head(history.conn).seq:,}"
        assert text_of(pilot, "#dash-gpus") == (
            "2 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15")
        warning = app.screen.query_one("#role-warning")
        assert warning.display and "separate the admin and security roles" in str(
            warning.content)
    assert last_event(history)["action"] == "audit.verify"


async def test_the_dashboard_reads_this_hosts_gpus_through_nvml(history, clock):
    """No recorded reading: the console asks NVML itself. Without a driver (CI) the line
    says so; on a GPU server it is what nvidia-smi reports (the hardware tests hold the
    reading to nvidia-smi's figures)."""
    from appliance.hardware import read_inventory
    from tests.hardware.host import smi_csv
    from tui.app import build_app
    app = build_app(history.layout.root, clock, terminal="console-test")
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        await wait_for(pilot, lambda: text_of(pilot, "#dash-gpus") != "reading…",
                       what="the GPU reading")
        shown = text_of(pilot, "#dash-gpus")
    assert shown == read_inventory().summary()
    if smi_csv() is None:
        assert shown == "no NVIDIA driver found"
    else:
        assert "NVIDIA" in shown and "driver" in shown


async def test_dashboard_shows_failed_chain_with_first_bad_seq(make_console, history):
    # Tamper with the raw file the way an attacker would: drop the trigger, edit a row.
    history.conn.execute("DROP TRIGGER audit_events_no_update")
    # The newest event lies after the last checkpoint, where incremental verify re-hashes.
    history.conn.execute("UPDATE audit_events SET body = replace(body, 'radiology-2', "
                         "'radiology-9') WHERE seq = (SELECT MAX(seq) FROM audit_events)")
    bad = history.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, AUDITOR, PASSWORD)
        await dashboard_ready(pilot)
        chain = text_of(pilot, "#dash-chain")
        assert chain.startswith("FAILED"), chain
        assert chain.startswith(f"FAILED at seq {bad} ("), chain
        assert "trigger-missing" in chain


async def test_auditor_sees_role_warning_about_the_first_account(make_console):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, AUDITOR, PASSWORD)
        await dashboard_ready(pilot)
        assert text_of(pilot, "#dash-roles") == "auditor"
        assert "Warning: alice holds both admin and security" in str(
            app.screen.query_one("#role-warning").content)


async def test_audit_screen_pages_filters_and_shows_the_full_record(make_console, history):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        events = await log_in_to_audit(pilot, ADMIN, PASSWORD)
        head = read_head(history.conn).seq
        assert len(events.view) == head
        assert events.current.event.seq == head  # newest first

        await filter_events(pilot, events, "action", "update.*")
        seqs = [events.view.rows.seq_at(i) for i in range(len(events.view))]
        actions = {json.loads(e.text)["action"] for e in iter_events(history.conn)
                   if e.seq in seqs}
        assert len(seqs) == 5 and actions == {"update.import", "update.approve",
                                              "update.install"}
        assert app.screen.focused is events

        await pilot.press("down")  # newest is the failed install; next is the approval
        await wait_for(pilot, lambda: "update.approve" in detail_text(pilot))
        text = detail_text(pilot)
        assert "Alice Adams (alice), approved, 2026-01-15T09:00:01.000Z" in text
        assert '"state": "PENDING_APPROVAL"' in text and '"state": "APPROVED"' in text
        assert "validated on site" in text and "cd" * 32 in text
        assert events.current.event.hash.hex() in text

        await type_into(pilot, "#filter-since", "yesterday")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "not a time" in app.screen.query_one(JobStatus).message)
        assert events.view.flt.since is None  # the bad filter was not half-applied


async def test_opening_the_audit_screen_indexes_what_appends_left(make_console, history):
    """Appends leave the filter lookup to its readers: the screen indexes it in a worker."""
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        actor = Actor("itops", "Ira Tech", "it")
        with history.transaction():
            for i in range(lookup.BATCH + 5):
                history.trail.append(Event("test.bulk", actor, details={"i": i}))
        assert lookup.unindexed(history.conn) >= lookup.BATCH + 5
        await pilot.press("a")
        await audit_ready(pilot)  # the unfiltered view reads no lookup
        await wait_for(pilot, lambda: lookup.unindexed(history.conn) < lookup.BATCH,
                       what="the worker indexing the tail")
    assert lookup.first_mismatch(history.conn) is None


async def test_verify_runs_in_a_worker_and_shows_the_result(make_console, history):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await pilot.press("v")
        job = app.screen.query_one(JobStatus)
        await wait_for(pilot, lambda: job.message.startswith("Chain"), what="verify")
        head = read_head(history.conn).seq
        assert job.message.startswith(f"Chain OK: {head - 1:,} events")
        await settle(pilot)
    event = last_event(history)
    assert (event["action"], event["details"]["mode"]) == ("audit.verify", "full")


async def test_export_writes_file_and_records_the_export(make_console, history, tmp_path: Path):
    out = tmp_path / "usb" / "audit.jsonl"
    out.parent.mkdir()
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await type_into(pilot, "#filter-actor", "itops")
        await pilot.press("enter")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        app.screen.query_one("#fmt-jsonl", RadioButton).value = True
        await fill(pilot, "#export-out", str(out))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen))
        job = app.screen.query_one(JobStatus)
        await wait_for(pilot, lambda: job.message.startswith(("Exported", "export failed")),
                       what="export")
        assert job.message.startswith(f"Exported 3 events to {out}"), job.message
        bar = job.query_one(ProgressBar)  # fed from the worker through call_from_thread
        assert (bar.progress, bar.total) == (3, 3)
        await settle(pilot)
    assert out.exists()
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert [x["event"]["actor"]["username"] for x in lines] == ["itops"] * 3
    event = last_event(history)
    assert event["action"] == "audit.export" and event["details"]["path"] == str(out)
    assert event["details"]["filter"]["actor"] == "itops"


async def test_export_to_default_directory_creates_it(make_console, history):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        await pilot.click("#export-ok")
        job_done = lambda: app.screen.query_one(JobStatus).message.startswith(  # noqa: E731
            ("Exported", "export failed"))
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen) and job_done())
        assert app.screen.query_one(JobStatus).message.startswith("Exported")
        await settle(pilot)
    files = sorted(p.suffix for p in history.layout.exports.iterdir())
    assert ".csv" in files and len(files) == 2  # the export and its manifest


async def test_command_palette_offers_console_commands_and_logout(make_console):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        assert "Audit trail" not in [c.title for c in app.get_system_commands(app.screen)]
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Dashboard", "Audit trail", "Updates", "Users", "Log out"} <= set(titles)
        await run_command(pilot, "audit trail")
        await audit_ready(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Verify audit trail", "Export audit trail"} <= set(titles)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert app.session is None
        assert text_of(pilot, "#login-message") == "alice logged out"
        assert len(app.screen_stack) == 2


async def test_jumping_between_screens_never_stacks_copies(make_console):
    """Opening a screen from the palette keeps the one already open, or replaces the one
    over the dashboard; it never stacks copies, nor opens over a dialog."""
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        await run_command(pilot, "audit trail")
        audit = app.screen
        await audit_ready(pilot)
        await run_command(pilot, "updates")
        await wait_for(pilot, lambda: isinstance(app.screen, UpdatesScreen))
        assert len(app.screen_stack) == 3  # the updates screen replaced the audit screen
        await run_command(pilot, "audit trail")
        await audit_ready(pilot)
        assert app.screen is not audit and len(app.screen_stack) == 3
        audit = app.screen
        await run_command(pilot, "audit trail")  # already open: the same screen stays
        await pilot.pause()
        assert app.screen is audit and len(app.screen_stack) == 3
        await pilot.press("e")  # the export dialog
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        app.action_open_users()
        await pilot.pause()
        assert isinstance(app.screen, ExportDialog)  # a dialog is never left behind unseen
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen))
        await run_command(pilot, "dashboard")
        await dashboard_ready(pilot)
        assert len(app.screen_stack) == 2
        await settle(pilot)


async def test_no_database_or_gpu_work_on_the_ui_thread(make_console, tmp_path: Path):
    """The UI never waits on SQLite or NVML: every statement runs in a worker thread."""
    app = make_console()
    threads: set[int] = set()
    plain_open = app.ctx.open

    def traced_open() -> Appliance:
        opened = plain_open()
        opened.conn.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
        return opened

    app.ctx.open = traced_open
    reading = app.ctx.gpu_source
    gpu_threads: list[int] = []

    class TracedGpus:
        def read(self):
            gpu_threads.append(threading.get_ident())
            return reading.read()

    app.ctx.gpu_source = TracedGpus()
    ui_thread = threading.get_ident()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await fill(pilot, "#filter-actor", ADMIN)
        await pilot.press("enter", "pagedown", "end", "home", "o", "v")
        job = app.screen.query_one(JobStatus)
        await wait_for(pilot, lambda: job.message.startswith("Chain"))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        await fill(pilot, "#export-out", str(tmp_path))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen)
                       and job.message.startswith("Exported"))
        await settle(pilot)
    assert threads and ui_thread not in threads
    assert gpu_threads and ui_thread not in gpu_threads


async def test_dashboard_keys_open_updates_and_users(make_console):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, UpdatesScreen))
        await pilot.press("escape")
        await dashboard_ready(pilot)
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, UsersScreen))
        await settle(pilot)


async def open_detail_of(pilot, action: str) -> EventList:
    """Log in as the admin, open the audit screen, filter to `action`, show its record."""
    events = await log_in_to_audit(pilot, ADMIN, PASSWORD)
    await filter_events(pilot, events, "action", action)
    await wait_for(pilot, lambda: action in detail_text(pilot))
    return events


async def test_audit_detail_shows_brackets_as_typed_never_as_markup(make_console, history):
    """People type reasons and names and media carry bundle names: "[/]" in one must show
    as typed in the auditor's detail pane, not stop the render or restyle it."""
    with history.transaction():
        history.trail.append(Event(
            action="test.brackets", actor=Actor("odd", "Dr [/] Odd [red]", "it"),
            target_type="bundle", target_id="[bold]demo[/bold]", reason="fixed [/] typo",
            details={"note": "[WARNING]: kept"}, terminal="[/]"))
    app = make_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_detail_of(pilot, "test.brackets")
        text = detail_text(pilot)
        for typed in ("Dr [/] Odd [red] (odd)", "bundle [bold]demo[/bold]", "fixed [/] typo",
                      '"[WARNING]: kept"'):
            assert typed in text, typed


async def test_control_characters_in_a_stored_event_show_as_escapes(make_console, history):
    """Events the appliance writes can carry text from elsewhere (a failure's message, a
    path on media): a newline or escape in one shows as its escape, in the list and in
    the detail, and never reaches the terminal raw."""
    with history.transaction():
        history.trail.append(Event(
            action="test.controls", actor=Actor("odd", "Dr\x1b[8m Odd", "it"),
            target_type="media", target_id="/media/usb\nfake", reason="probe:\n2 lines\u202e",
            details={"stderr": "line one\nline two\x9b2J"}))
    app = make_console()
    async with app.run_test(size=(160, 40)) as pilot:
        events = await open_detail_of(pilot, "test.controls")
        text = detail_text(pilot)
        for escaped in ("Dr\\x1b[8m Odd (odd)", "media /media/usb\\nfake",
                        "probe:\\n2 lines\\u202e", '"line one\\nline two\\x9b2J"'):
            assert escaped in text, escaped
        assert not any(ch in text for ch in "\x1b\x9b\u202e")
        row = events.render_line(events.cursor - events.scroll_offset.y).text
        assert "media:/media/usb\\nfake" in row and "\n" not in row


async def test_a_damaged_database_met_mid_session_is_said_plainly(make_console, history):
    """A corrupt page found by a screen's worker is the one-line IntegrityError, shown on the
    screen; the console keeps running."""
    history.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the page is in the file
    root, size = history.conn.execute(
        "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
        "WHERE name = 'bundles'").fetchone()
    app = make_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        with open(history.layout.db, "r+b") as f:
            f.seek((root - 1) * size)
            f.write(b"\xa5" * size)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, UpdatesScreen))
        await wait_for(pilot, lambda: "damaged" in text_of(pilot, "#upd-message"))
        assert text_of(pilot, "#upd-message").startswith(
            "error: the appliance database is damaged (database disk image is malformed)")
