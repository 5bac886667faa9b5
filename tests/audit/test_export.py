"""Audit-trail exports (11.10(b)): contents of each format, filters, manifest, permissions."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.audit.checkpoint import latest
from appliance.audit.events import FLAT_COLUMNS, Actor, Event
from appliance.audit.export import CSV_LINE, HashingWriter, _csv_line_python, csv_cells
from appliance.audit.query import EventFilter
from appliance.audit.trail import iter_events
from appliance.audit.verify import verify_trail
from appliance.context import Appliance
from appliance.durable import StagedFile
from appliance.errors import ApplianceError, AuditFailure, InvalidInput, PermissionDenied
from appliance.keys import load_public_pem, verify_signature
from appliance.services import auth
from appliance.services.audit_export import ExportResult, export_trail
from appliance.services.setup import init_appliance
from tests.audit.exportdata import (
    BOB,
    IRA,
    JSONL_RE,
    SIGNATURE,
    pdf_pages,
    pdf_text,
    populate,
)
from tests.conftest import ADMIN, FAST, PASSWORD, SteppingClock

SIGNED_CELL = "Bob Approver (bob), approved, 2026-01-15T10:00:00.000Z"


@pytest.fixture
def trail(appliance, clock):
    populate(appliance, clock)
    return appliance


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty destination directory (the appliance home is elsewhere in tmp_path)."""
    d = tmp_path / "exports"
    d.mkdir()
    return d


@pytest.fixture
def auditor(make_user):
    return make_user(["auditor"], username="audrey", full_name="Audrey Auditor")


def stored(app, upto: int) -> list:
    return list(iter_events(app.conn, 1, upto))


def manifest_of(result: ExportResult) -> dict:
    return json.loads(result.manifest_path.read_text(encoding="utf-8"))


def test_csv_holds_every_column_of_every_event_as_stored(trail, auditor, out) -> None:
    result = export_trail(trail, auditor, "csv", out / "trail.csv")
    with open(result.path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    head = manifest_of(result)["manifest"]["chain"]["head_seq"]
    expected = [dict(zip(FLAT_COLUMNS, csv_cells(e.flat()), strict=True))
                for e in stored(trail, head)]
    assert list(rows[0]) == list(FLAT_COLUMNS)
    assert rows == expected  # SQLite's formatting equals StoredEvent.flat(), cell for cell
    assert result.count == len(rows) == head
    signed = [r for r in rows if r["action"] == "update.approve"]
    assert [r["signature"] for r in signed] == [SIGNED_CELL]
    assert any("second line" in r["reason"] and "李" in r["reason"] for r in rows)
    assert any(r["clock_warning"] for r in rows)
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256


def test_jsonl_lines_rehash_from_the_stored_bytes(trail, auditor, out) -> None:
    result = export_trail(trail, auditor, "jsonl", out / "trail.jsonl")
    lines = result.path.read_bytes().splitlines()
    by_seq = {e.seq: e for e in stored(trail, result.count)}
    prev = bytes(32)
    for line in lines:
        m = JSONL_RE.fullmatch(line)
        assert m is not None
        seq, prev_hex, hash_hex, body = int(m[1]), m[2].decode(), m[3].decode(), m[4]
        assert body == by_seq[seq].text.encode("utf-8")
        assert prev_hex == prev.hex()
        assert hashlib.sha256(bytes.fromhex(prev_hex) + body).hexdigest() == hash_hex
        prev = bytes.fromhex(hash_hex)
    assert len(lines) == result.count and prev.hex() == result.head_hash
    signed = [json.loads(x)["event"] for x in lines if b'"update.approve"' in x]
    assert signed[0]["signature"] == SIGNATURE


def test_pdf_has_title_table_signatures_and_head_on_every_page(appliance, clock, auditor,
                                                               out) -> None:
    populate(appliance, clock, n=150)
    result = export_trail(appliance, auditor, "pdf", out / "trail.pdf")
    data = result.path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = pdf_pages(data)
    text = pdf_text(data)
    assert pages > 2
    for page in range(1, pages + 1):  # the total is substituted as its own text run
        assert f"(Page {page} of ) Tj ({pages}) Tj" in text
    assert text.count(f"sha256 {result.head_hash}") == pages  # chain head on every page
    cp = latest(appliance.conn)
    assert cp.body["reason"] == "export"
    assert text.count(f"tree size {cp.tree_size}, head {cp.head_hash[:16]}") == pages
    assert text.count(f"signature {cp.signature[:24]}") == pages
    assert "Audrey Auditor \\(audrey, role auditor\\)" in text
    assert appliance.appliance_id in text
    assert ("ELECTRONIC SIGNATURE: Bob Approver \\(bob\\) | meaning: approved | signed "
            "2026-01-15T10:00:00.000Z UTC") in text
    assert "Z\\\\u00f6e" not in text and "Zo\\u00eb" not in text  # Latin-1 stays as it is
    assert "\\\\u674e" in text  # beyond Latin-1: a visible escape, never dropped
    m = manifest_of(result)["manifest"]
    assert m["export"] == {"file": "trail.pdf", "format": "pdf", "sha256": result.sha256,
                           "size": len(data), "columns": None}
    assert m["count"] == result.count == cp.tree_size


def test_values_sqlite_json_cannot_read_are_exported_whole(appliance, auditor, out) -> None:
    # SQLite's JSON functions stop at NUL; such rows are formatted from the stored body.
    with appliance.transaction():
        ev = appliance.trail.append(Event("odd.input", IRA, "file", "a\x00b",
                                          reason="before\x00after, \"end\""))
    flt = EventFilter(action="odd.input")
    result = export_trail(appliance, auditor, "csv", out, flt)
    with open(result.path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{k: str(v) for k, v in ev.stored().flat().items()}]
    assert rows[0]["reason"] == "before\x00after, \"end\""
    pdf = export_trail(appliance, auditor, "pdf", out, flt)
    assert "before\\\\x00after" in pdf_text(pdf.path.read_bytes())


def test_pdf_of_an_empty_selection_says_so(trail, auditor, out) -> None:
    result = export_trail(trail, auditor, "pdf", out / "none.pdf",
                          EventFilter(actor="nobody"))
    assert result.count == 0
    assert "No events match this filter." in pdf_text(result.path.read_bytes())
    assert manifest_of(result)["manifest"]["range"]["first_seq"] is None


@pytest.mark.parametrize("flt", [
    EventFilter(action="media.*"),
    EventFilter(action="update.approve"),
    EventFilter(actor="ZOE"),
    EventFilter(target_type="bundle"),
    EventFilter(target_type="dataset", target_id="item-3"),
    EventFilter(since="seq 5", until="seq 9"),
], ids=lambda f: ",".join(f"{k}={v}" for k, v in vars(f).items() if v))
def test_filters_select_exactly_the_matching_events(trail, auditor, out, flt) -> None:
    if flt.since == "seq 5":  # a time window around stored events, whatever the clock said
        ts = {e.seq: e.data["ts"] for e in stored(trail, 9)}
        flt = EventFilter(since=ts[5], until=ts[9])
    result = export_trail(trail, auditor, "csv", out, flt)
    with open(result.path, encoding="utf-8", newline="") as f:
        got = [int(r["seq"]) for r in csv.DictReader(f)]
    m = manifest_of(result)["manifest"]

    def matches(e) -> bool:
        d = e.flat()
        return ((not flt.action or (d["action"].startswith(flt.action[:-1])
                                    if flt.action.endswith("*") else d["action"] == flt.action))
                and (not flt.actor or d["actor"] == flt.actor.lower())
                and (not flt.target_type or d["target_type"] == flt.target_type)
                and (not flt.target_id or d["target_id"] == flt.target_id)
                and (not flt.since or d["ts"] >= flt.since)
                and (not flt.until or d["ts"] < flt.until))

    want = [e.seq for e in stored(trail, m["chain"]["head_seq"]) if matches(e)]
    assert got == want and want
    assert m["filter"] == {k: getattr(flt, k) for k in m["filter"]}
    assert (m["count"], m["range"]["first_seq"], m["range"]["last_seq"]) == (
        len(want), want[0], want[-1])


def test_export_is_itself_an_audit_event(trail, auditor, out) -> None:
    flt = EventFilter(action="media.*")
    result = export_trail(trail, auditor, "jsonl", out, flt)
    last = list(iter_events(trail.conn))[-1].data
    assert last["action"] == "audit.export" and last["outcome"] == "success"
    assert last["actor"] == {"username": "audrey", "name": "Audrey Auditor", "role": "auditor"}
    assert last["target"]["digest"] == result.sha256
    d = last["details"]
    assert (d["format"], d["count"], d["sha256"]) == ("jsonl", result.count, result.sha256)
    assert d["filter"]["action"] == "media.*" and d["head_hash"] == result.head_hash
    assert result.path.parent == out and result.path.suffix == ".jsonl"


def test_manifest_is_signed_by_the_appliance_key_and_states_the_export(trail, auditor,
                                                                        out) -> None:
    result = export_trail(trail, auditor, "csv", out / "a.csv")
    doc = manifest_of(result)
    m = doc["manifest"]
    assert json.loads(doc["manifest_text"]) == m
    pem = (trail.layout.public_key).read_bytes()
    assert m["public_key_pem"].encode() == pem and m["key_id"] == trail.key.key_id
    assert verify_signature(load_public_pem(pem), doc["signature"],
                            doc["manifest_text"].encode("utf-8"))
    assert not verify_signature(load_public_pem(pem), doc["signature"],
                                doc["manifest_text"].replace('"count":', '"count":1').encode())
    cp = latest(trail.conn)
    assert m["checkpoint"]["text"] == cp.text and m["checkpoint"]["signature"] == cp.signature
    assert m["chain"] == {"head_seq": cp.tree_size, "head_hash": cp.head_hash}
    assert cp.head_hash == result.head_hash and cp.body["reason"] == "export"
    assert m["appliance_id"] == trail.appliance_id
    assert m["exported_by"] == {"username": "audrey", "name": "Audrey Auditor",
                                "role": "auditor"}
    assert m["export"]["sha256"] == result.sha256 and m["count"] == result.count


def test_it_only_user_may_not_export_and_the_denial_is_recorded(trail, make_user,
                                                                out) -> None:
    it = make_user(["it"])
    with pytest.raises(PermissionDenied):
        export_trail(trail, it, "csv", out / "x.csv")
    assert list(out.iterdir()) == []
    last = list(iter_events(trail.conn))[-1].data
    assert (last["action"], last["outcome"], last["details"]["permission"]) == (
        "access.denied", "denied", "audit.export")


def test_admin_and_auditor_may_export(trail, admin_session, auditor, out) -> None:
    for session, name in ((admin_session, "admin.csv"), (auditor, "auditor.csv")):
        assert export_trail(trail, session, "csv", out / name).path.exists()


def test_bad_destinations_and_formats_are_refused_before_any_work(trail, auditor,
                                                                  out) -> None:
    (out / "taken.csv").write_text("keep me")
    with pytest.raises(InvalidInput, match="already exists"):
        export_trail(trail, auditor, "csv", out / "taken.csv")
    with pytest.raises(InvalidInput, match="does not exist"):
        export_trail(trail, auditor, "csv", out / "no" / "such.csv")
    with pytest.raises(InvalidInput, match="unknown export format"):
        export_trail(trail, auditor, "xlsx", out)
    assert (out / "taken.csv").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["taken.csv"]


def test_two_exports_into_one_directory_get_different_names(trail, auditor, out) -> None:
    a = export_trail(trail, auditor, "csv", out)
    b = export_trail(trail, auditor, "csv", out)
    assert a.path != b.path and a.path.exists() and b.path.exists()
    assert a.path.name.startswith(f"audit-{trail.appliance_id[:8]}-")


def test_no_export_exists_when_its_audit_event_cannot_be_recorded(trail, auditor,
                                                                  out) -> None:
    # A real database failure at the moment the export's own event is written.
    trail.conn.execute(
        "CREATE TEMP TRIGGER refuse_export BEFORE INSERT ON main.audit_events "
        "WHEN json_extract(NEW.body, '$.action') = 'audit.export' "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    before = trail.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    with pytest.raises(AuditFailure):
        export_trail(trail, auditor, "jsonl", out / "x.jsonl")
    assert list(out.iterdir()) == []  # neither the file, its manifest, nor a temp file
    assert trail.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == before


def test_an_export_is_put_in_place_only_after_its_event_commits(trail, auditor, out,
                                                                  clock) -> None:
    """A crash (SIGKILL in a forked child) at the first rename: the event is durable and
    names the export, no file is under its final name, and the trail verifies."""
    target = out / "x.jsonl"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is invisible to the parent
        try:
            app = Appliance.open(trail.layout.root, clock=SteppingClock(clock.t),
                                 terminal="crash-child")
            StagedFile.commit = lambda self: os.kill(os.getpid(), signal.SIGKILL)
            export_trail(app, auth.login(app, ADMIN, PASSWORD), "jsonl", target)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    [(body,)] = trail.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'audit.export'").fetchall()
    event = json.loads(body)
    assert event["outcome"] == "success" and event["details"]["path"] == str(target)
    assert not target.exists() and not (out / "x.jsonl.manifest.json").exists()
    assert [p.name.startswith(".x.jsonl.") for p in out.iterdir()] == [True, True]
    assert verify_trail(trail.conn, trail.key.public).ok


def test_an_export_that_cannot_be_put_in_place_is_a_recorded_failure(trail, auditor,
                                                                     out) -> None:
    target = out / "x.csv"
    # Something takes the name while the export is written: the rename fails for real.
    with pytest.raises(ApplianceError, match=r"^could not put the export in place at "):
        export_trail(trail, auditor, "csv", target,
                     progress=lambda done, total: target.mkdir(exist_ok=True))
    events = [json.loads(b) for (b,) in trail.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'audit.export' ORDER BY seq")]
    assert [e["outcome"] for e in events] == ["success", "failure"]
    assert "File exists" in events[1]["details"]["error"]
    assert [p.name for p in out.iterdir()] == ["x.csv"] and target.is_dir()


def test_progress_reports_batches_of_at_most_5000(appliance, auditor, out) -> None:
    actor = Actor("bob", "Bob", "it")
    with appliance.transaction():
        for i in range(11_000):
            appliance.trail.append(Event("test.bulk", actor, target_id=str(i)))
    calls: list[tuple[int, int]] = []
    result = export_trail(appliance, auditor, "csv", out, EventFilter(action="test.*"),
                          progress=lambda done, total: calls.append((done, total)))
    assert result.count == 11_000
    assert calls[0] == (0, 11_000) and calls[-1] == (11_000, 11_000)
    steps = [b[0] - a[0] for a, b in zip(calls, calls[1:], strict=False)]
    assert all(0 < s <= 5000 for s in steps) and len(calls) == 4


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "appliance", *args], input=PASSWORD + "\n",
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_export_and_events(tmp_path, out) -> None:
    # The real clock here: the subprocess checks password age against today.
    home = tmp_path / "cli-home"
    with init_appliance(home, ADMIN, "Alice Adams", PASSWORD, settings=FAST) as app:
        with app.transaction():
            for i in range(3):
                app.trail.append(Event("media.import", IRA, "bundle", f"b{i}"))
            app.trail.append(Event("update.approve", BOB, "release", "r-42",
                                   signature=SIGNATURE))
    out = out / "out.jsonl"
    r = run_cli(home, "audit", "export", "--format", "jsonl", "--out", str(out),
                "--action", "media.*", "--since", "2026-01-15T09:00:00+00:00",
                "--user", ADMIN, "--password-stdin", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["path"] == str(out) and data["sha256"] == hashlib.sha256(
        out.read_bytes()).hexdigest()
    m = json.loads(Path(data["manifest"]).read_text())["manifest"]
    assert m["filter"]["since"] == "2026-01-15T09:00:00.000Z" and m["filter"]["action"] == "media.*"
    assert data["count"] == m["count"] == 3
    assert data["key_id"] == m["key_id"]

    # The hint names the key to pin and asks for an anchor: the key alone cannot tell a
    # trail that root rewrote and re-signed with it (it is a file on the appliance).
    r = run_cli(home, "audit", "export", "--format", "csv", "--out", str(out.with_suffix(".csv")),
                "--user", ADMIN, "--password-stdin")
    assert r.returncode == 0, r.stderr
    hint = r.stdout.strip().splitlines()[-1]
    assert hint.startswith(f"  check it with: verify-audit-export {out.with_suffix('.csv')} "
                           f"--key {data['key_id']} --anchor "), hint

    r = run_cli(home, "audit", "events", "--action", "update.approve", "--user", ADMIN,
                "--password-stdin", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["signature"] for x in rows] == [SIGNED_CELL]
    r = run_cli(home, "audit", "events", "--action", "update.approve", "--user", ADMIN,
                "--password-stdin")
    assert "signed: " + SIGNED_CELL in r.stdout

    r = run_cli(home, "audit", "export", "--format", "csv", "--out", str(out),
                "--until", "last week", "--user", ADMIN, "--password-stdin")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --until 'last week' is not an ISO 8601 date or time "
        "(e.g. 2026-01-15 or 2026-01-15T09:30:00Z)"]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# Keys from both sides of U+E000..U+FFFF vs the astral planes: RFC 8785 sorts by UTF-16
# code units, so "\uffff" comes after "\U0001f600" there and before it in code points.
_key = _text | st.sampled_from(["\uffff", "\ue000", "\U0001f600", "\U00010000", "a"])
_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | _text
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_key, inner, max_size=3), max_leaves=8)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # one trail, appended to
@given(name=_text, reason=st.none() | _text, target_id=_text, old=_json, details=st.dictionaries(
    _key, _json, max_size=3), meaning=st.none() | _text)
def test_sqlite_csv_line_equals_flat_for_any_text(appliance, name, reason, target_id, old,
                                                  details, meaning) -> None:
    """The SQL that formats CSV rows and the Python that formats the rows it leaves agree
    with StoredEvent.flat() and with each other on arbitrary values, floats and nested
    keys included (both show the stored canonical RFC 8785 text)."""
    sig = {"username": "bob", "name": name, "meaning": meaning, "ts": "t"} if meaning else None
    if old is not None and not (reason or "").strip():
        reason = "a change says why"  # refused without one
    with appliance.transaction():
        ev = appliance.trail.append(Event(
            "prop.test", Actor("bob", name or "x", "admin"), "thing", target_id,
            reason=reason, old=old, details=details, signature=sig))
    line = appliance.conn.execute(f"SELECT {CSV_LINE} FROM audit_events WHERE seq = ?",
                                  (ev.seq,)).fetchone()[0]
    python_line = _csv_line_python(appliance.conn, ev.seq)
    if line is None:  # an escaped NUL, or a cell to guard: the export formats it in Python
        assert "\\u0000" in ev.stored().text or re.search(r':"[-=+@\'\\]', ev.stored().text)
        line = python_line
    assert python_line == line
    text = line.decode("utf-8")
    assert text.endswith("\r\n")
    row = next(csv.reader([text[:-2]]))
    assert row == csv_cells(ev.stored().flat())


def test_python_and_sql_csv_rows_agree_on_floats_and_key_order(appliance) -> None:
    """Rows the export formats in Python show nested values as stored, like the SQL rows:
    0.00001 stays 0.00001 (not 1e-05), keys keep RFC 8785 (UTF-16) order, and the float
    2^53, stored as 9007199254740992, reads back as an integer RFC 8785 would refuse."""
    with appliance.transaction():
        ev = appliance.trail.append(Event(
            "test.x", Actor("bob", "Bob", "it"), "thing", "t1", reason="plain",
            old={"a": [1, 2.5e30, None]}, new={"\ue000": None, "\U00010000": 2.0**53},
            details={"f": 0.00001, "k": {"\U0001F600": 1, "\uffff": 2}}))
    sql = appliance.conn.execute(f"SELECT {CSV_LINE} FROM audit_events WHERE seq = ?",
                                 (ev.seq,)).fetchone()[0]
    assert sql is not None  # nothing to guard: SQLite formats this row
    assert _csv_line_python(appliance.conn, ev.seq) == sql
    row = dict(zip(FLAT_COLUMNS, next(csv.reader([sql.decode()[:-2]])), strict=True))
    assert row["details"] == '{"f":0.00001,"k":{"\U0001F600":1,"\uffff":2}}'
    assert row["old"] == '{"a":[1,2.5e+30,null]}'
    assert row["new"] == '{"\U00010000":9007199254740992,"\ue000":null}'


def test_a_write_error_is_recorded_and_leaves_nothing_behind(trail, auditor, out) -> None:
    # Something else already holds the temporary name (here a link to a full device).
    tmp = out / f".x.csv.{os.getpid()}.tmp"
    tmp.symlink_to("/dev/full")
    with pytest.raises(ApplianceError, match="could not write the export"):
        export_trail(trail, auditor, "csv", out / "x.csv")
    assert sorted(p.name for p in out.iterdir()) == [tmp.name]  # not ours: left alone
    last = list(iter_events(trail.conn))[-1].data
    assert (last["action"], last["outcome"]) == ("audit.export", "failure")
    assert "File exists" in last["details"]["error"]


def test_writer_errors_on_its_thread_reach_the_caller() -> None:
    with open("/dev/full", "wb") as f, HashingWriter(f) as w:
        w.write(b"x" * 100_000)  # larger than the buffer: written, and refused, at once
        with pytest.raises(OSError, match="No space left"):
            w.finish()


@pytest.mark.parametrize("option, when", [("--since", "0001-01-01T00:00+01:00"),
                                          ("--until", "9999-12-31T23:59-01:00")])
def test_a_time_whose_utc_falls_off_the_calendar_is_one_line(tmp_path, option, when) -> None:
    r = run_cli(tmp_path / "no-home", "audit", "events", option, when, "--user", ADMIN,
                "--password-stdin")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {option} {when!r} lies outside the years 1 to 9999 in UTC "
        "(give a time within them)"]


def test_a_file_that_takes_the_name_meanwhile_is_never_overwritten(trail, auditor,
                                                                   out) -> None:
    """Another export (or anyone) writes the same name while this one runs: its file
    stays as it is, and this export is a recorded failure that leaves nothing behind."""
    target = out / "x.jsonl"
    with pytest.raises(ApplianceError, match=r"^could not put the export in place at "):
        export_trail(trail, auditor, "jsonl", target,
                     progress=lambda done, total: target.write_text("someone else's"))
    assert target.read_text() == "someone else's"
    assert [p.name for p in out.iterdir()] == ["x.jsonl"]
    events = [json.loads(b) for (b,) in trail.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'audit.export' ORDER BY seq")]
    assert [e["outcome"] for e in events] == ["success", "failure"]
    assert "File exists" in events[1]["details"]["error"]
    # The manifest's name taken instead: the export file put in place is taken back.
    manifest = out / "y.csv.manifest.json"
    with pytest.raises(ApplianceError, match=r"^could not put the export in place at "):
        export_trail(trail, auditor, "csv", out / "y.csv",
                     progress=lambda done, total: manifest.write_text("someone else's"))
    assert sorted(p.name for p in out.iterdir()) == ["x.jsonl", "y.csv.manifest.json"]
    assert manifest.read_text() == "someone else's"


def test_pdf_shows_every_signature_manifestation_whole_and_cut_values_keep_content(
        appliance, auditor, out) -> None:
    # 11.50: however long the printed name (non-Latin names take six characters each as
    # escapes), the meaning and the time of signing are printed. A value to be cut shows
    # as much of itself as fits, never just its label.
    long_name = "李" * 75
    with appliance.transaction():
        appliance.trail.append(Event(
            "update.approve", BOB, "release", "r-43", reason="signed with a long name",
            signature={**SIGNATURE, "name": long_name, "reason": "r " * 400},
            details={"k": "x" * 140}))
    result = export_trail(appliance, auditor, "pdf", out, EventFilter(action="update.approve"))
    text = pdf_text(result.path.read_bytes())
    assert "| meaning: approved | signed 2026-01-15T10:00:00.000Z UTC" in text
    assert "signed record: {" in text  # the rest of the signature, cut as a value
    assert 'details: {"k":"xxxxxxxxxx' in text


def test_pdf_backslashes_in_text_never_read_as_escapes(appliance, auditor, out) -> None:
    # A character the fonts lack prints as "\u674e"; a typed "\u674e" must look different.
    with appliance.transaction():
        appliance.trail.append(Event("odd.input", IRA, "file", "f1", reason="typed \\u674e"))
        appliance.trail.append(Event("odd.input", IRA, "file", "f2", reason="real 李"))
    result = export_trail(appliance, auditor, "pdf", out, EventFilter(action="odd.input"))
    text = pdf_text(result.path.read_bytes())
    # In the PDF string syntax every shown backslash is written as two.
    assert "typed \\\\\\\\u674e" in text
    assert "real \\\\u674e" in text
    assert "a backslash in free text as \\\\\\\\." in text  # the title block says how
