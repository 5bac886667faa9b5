"""The auditor's verifier, run as a subprocess on real exports and on tampered copies."""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.audit.export import sign_manifest
from appliance.audit.query import EventFilter
from appliance.keys import SigningKey, public_pem
from appliance.services.audit_export import ExportResult, export_trail
from tests.audit.exportdata import populate
from tests.audit.rewrite import audit_triggers_dropped, rechain, resign_checkpoints

VERIFIER = Path(__file__).resolve().parents[2] / "packaging" / "verify-audit-export"


def verify(export: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # -I: isolated from the repository and site customisation, as on an auditor's machine.
    return subprocess.run([sys.executable, "-I", str(VERIFIER), str(export), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def failed(r: subprocess.CompletedProcess, reason: str) -> bool:
    lines = r.stderr.strip().splitlines()
    return r.returncode == 1 and len(lines) == 1 and lines[0].startswith("FAILED: ") \
        and reason in lines[0]


@pytest.fixture
def auditor(make_user):
    return make_user(["auditor"], username="audrey", full_name="Audrey Auditor")


@pytest.fixture
def exports(appliance, clock, auditor, tmp_path) -> dict[str, ExportResult]:
    populate(appliance, clock)
    out = tmp_path / "media"
    out.mkdir()
    return {fmt: export_trail(appliance, auditor, fmt, out / f"trail.{fmt}")
            for fmt in ("csv", "jsonl", "pdf")}


@pytest.fixture
def pub(appliance) -> Path:
    return appliance.layout.public_key


def copy(result: ExportResult, dest: Path) -> tuple[Path, Path]:
    dest.mkdir(exist_ok=True)
    path = dest / result.path.name
    shutil.copy(result.path, path)
    shutil.copy(result.manifest_path, dest / result.manifest_path.name)
    return path, dest / result.manifest_path.name


def resign(manifest_path: Path, key: SigningKey, **changes) -> None:
    """Rewrite a manifest with changed fields and a valid signature by `key`."""
    doc = json.loads(manifest_path.read_text())
    m = doc["manifest"]
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = m
        for p in parents:
            target = target[p]
        target[leaf] = value
    manifest_path.write_text(json.dumps(sign_manifest(m, key)))


def test_verifier_uses_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(VERIFIER.read_text())
    roots = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
             for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
             for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}
    assert VERIFIER.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(VERIFIER, os.X_OK)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "pdf"])
def test_real_exports_verify_with_the_trusted_key(exports, appliance, pub, tmp_path,
                                                  fmt) -> None:
    path, _ = copy(exports[fmt], tmp_path / "auditor")  # another place, as on another machine
    for key in (str(pub), appliance.key.key_id,
                ":".join(re.findall("..", appliance.key.key_id.upper()))):
        r = verify(path, "--key", key, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"OK: trail.{fmt}: {fmt}, {exports[fmt].count} events")
        assert "the trusted key given with --key" in r.stdout
    r = verify(path)
    assert r.returncode == 0 and f"signed by key {appliance.key.key_id}" in r.stdout
    assert "compare this fingerprint" in r.stdout


def test_complete_jsonl_export_folds_to_the_signed_merkle_root(exports, pub) -> None:
    r = verify(exports["jsonl"].path, "--key", str(pub))
    assert "Merkle root matches the signed checkpoint" in r.stdout


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "pdf"])
def test_one_changed_byte_in_the_export_fails(exports, pub, tmp_path, fmt) -> None:
    path, _ = copy(exports[fmt], tmp_path / "t")
    data = bytearray(path.read_bytes())
    i = data.index(b"media.import" if fmt != "pdf" else b"/Title")
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    assert failed(verify(path, "--key", str(pub)), "SHA-256 differs")


def test_changed_manifest_fails(exports, pub, tmp_path) -> None:
    path, manifest = copy(exports["csv"], tmp_path / "m")
    original = manifest.read_text()
    doc = json.loads(original)
    doc["manifest"]["count"] += 1  # only the readable part
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path, "--key", str(pub)), "readable part differs")
    doc = json.loads(original)
    doc["manifest_text"] = doc["manifest_text"].replace('"count":', '"count":1')
    doc["manifest"] = json.loads(doc["manifest_text"])  # both, but not re-signed
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path, "--key", str(pub)), "signature does not verify")


def test_manifest_signed_by_a_foreign_key_fails_against_the_trusted_key(
        exports, appliance, pub, tmp_path) -> None:
    path, manifest = copy(exports["jsonl"], tmp_path / "f")
    foreign = SigningKey.generate()
    cp = json.loads(manifest.read_text())["manifest"]["checkpoint"]
    cp["body"]["key_id"] = foreign.key_id  # a forger re-signs checkpoint and manifest
    cp["text"] = json.dumps(cp["body"], separators=(",", ":"), sort_keys=True)
    cp["signature"] = foreign.sign(cp["text"].encode())
    resign(manifest, foreign, public_key_pem=public_pem(foreign.public).decode(),
           key_id=foreign.key_id, checkpoint=cp)
    assert failed(verify(path, "--key", str(pub)), "not by the trusted key")
    assert failed(verify(path, "--key", appliance.key.key_id), "not by the trusted key")
    r = verify(path)  # without a trusted key it can only show whose key signed it
    assert r.returncode == 0 and f"signed by key {foreign.key_id}" in r.stdout
    assert appliance.key.key_id not in r.stdout


def test_foreign_public_key_with_the_original_signature_fails(exports, tmp_path) -> None:
    path, manifest = copy(exports["csv"], tmp_path / "k")
    foreign = SigningKey.generate()
    doc = json.loads(manifest.read_text())
    m = doc["manifest"]
    m["public_key_pem"], m["key_id"] = public_pem(foreign.public).decode(), foreign.key_id
    doc["manifest_text"] = json.dumps(m, separators=(",", ":"), sort_keys=True)
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path), "signature does not verify")


def test_swapped_manifest_fails(exports, pub, tmp_path) -> None:
    path, _ = copy(exports["csv"], tmp_path / "s")
    other = exports["pdf"].manifest_path
    assert failed(verify(path, "--manifest", str(other), "--key", str(pub)),
                  "SHA-256 differs")


def test_edited_event_in_jsonl_is_caught_by_rehashing(exports, appliance, pub,
                                                      tmp_path) -> None:
    # Even a manifest re-signed with the real key cannot cover an edited event body.
    path, manifest = copy(exports["jsonl"], tmp_path / "e")
    text = path.read_text().replace('"target":{"digest":null,"id":"item-1"',
                                    '"target":{"digest":null,"id":"item-X"')
    path.write_text(text)
    resign(manifest, appliance.key, export__sha256=hashlib.sha256(text.encode()).hexdigest())
    assert failed(verify(path, "--key", str(pub)), "does not match its hash")


def test_dropped_events_in_a_whole_trail_export_are_caught(exports, appliance, pub,
                                                          tmp_path) -> None:
    path, manifest = copy(exports["jsonl"], tmp_path / "d")
    lines = path.read_bytes().splitlines(keepends=True)
    data = b"".join(lines[:5] + lines[6:])
    path.write_bytes(data)
    resign(manifest, appliance.key, export__sha256=hashlib.sha256(data).hexdigest(),
           export__size=len(data))
    assert failed(verify(path, "--key", str(pub)), "event 6 is missing")
    data = b"".join(lines[:-1])  # the newest event cut off, count and range "corrected"
    path.write_bytes(data)
    resign(manifest, appliance.key, export__sha256=hashlib.sha256(data).hexdigest(),
           export__size=len(data), count=len(lines) - 1, range__last_seq=len(lines) - 1)
    assert failed(verify(path, "--key", str(pub)), "not at the head")


def test_csv_rows_must_link(exports, appliance, pub, tmp_path) -> None:
    path, manifest = copy(exports["csv"], tmp_path / "c")
    lines = path.read_bytes().split(b"\r\n")
    row = lines[4]
    lines[4] = row[:-64] + (b"0" * 64)  # the hash of event 4, rewritten
    data = b"\r\n".join(lines)
    path.write_bytes(data)
    resign(manifest, appliance.key, export__sha256=hashlib.sha256(data).hexdigest())
    assert failed(verify(path, "--key", str(pub)), "event 5 does not link to event 4")


def test_filtered_export_verifies_and_its_filter_is_checked(appliance, clock, auditor, pub,
                                                            tmp_path) -> None:

    populate(appliance, clock)
    result = export_trail(appliance, auditor, "jsonl", tmp_path / "f.jsonl",
                          EventFilter(action="media.*"))
    r = verify(result.path, "--key", str(pub))
    assert r.returncode == 0, r.stderr
    assert "Merkle root" not in r.stdout  # a filtered export is not the whole trail
    assert "cannot show the appliance's trail holds these very events" in r.stdout
    # A manifest claiming a narrower filter than the contents is caught.
    resign(result.manifest_path, appliance.key, filter__actor="zoe")
    assert failed(verify(result.path, "--key", str(pub)), "does not match the export's filter")
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256


def test_unreadable_inputs_exit_2(tmp_path) -> None:
    r = verify(tmp_path / "missing.csv")
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read manifest")
    (tmp_path / "x.csv").write_text("a")
    (tmp_path / "x.csv.manifest.json").write_text("{}")
    r = verify(tmp_path / "x.csv", "--key", "not-a-key")
    assert r.returncode == 2 and "neither a PEM file nor" in r.stderr


def test_csv_cells_a_spreadsheet_would_run_are_guarded_and_still_verify(
        appliance, auditor, tmp_path, pub) -> None:
    """CSV injection: free text that begins like a formula gets a leading apostrophe in
    the CSV (the JSON Lines copy keeps it as stored), and the verifier undoes the guard to
    check a filter on it."""
    from appliance.audit.events import Actor, Event
    typed = {"name": "@SUM(A1)", "terminal": "+tty", "target_id": "-rf",
             "reason": '=HYPERLINK("http://x","open")', "quoted": "'=1"}
    with appliance.transaction():
        appliance.trail.append(Event(
            "test.formula", Actor("bob", typed["name"], "it"), "host", typed["target_id"],
            reason=typed["reason"], terminal=typed["terminal"], details={"n": -5}))
        appliance.trail.append(Event(
            "test.formula", Actor("bob", "Bob", "it"), "host", typed["target_id"],
            reason=typed["quoted"]))
    out = tmp_path / "usb"
    out.mkdir()
    flt = EventFilter(target_id="-rf")
    csv_export = export_trail(appliance, auditor, "csv", out / "f.csv", flt)
    with open(csv_export.path, encoding="utf-8", newline="") as f:
        first, second = list(csv.DictReader(f))
    assert (first["actor_name"], first["terminal"], first["target_id"], first["reason"]) == (
        "'@SUM(A1)", "'+tty", "'-rf", "'" + typed["reason"])
    assert first["details"] == '{"n":-5}'  # JSON is not free text: never guarded
    assert second["reason"] == "''=1"      # an apostrophe already there is doubled
    jsonl = export_trail(appliance, auditor, "jsonl", out / "f.jsonl", flt)
    bodies = [json.loads(line)["event"] for line in jsonl.path.read_text().splitlines()]
    assert [b["reason"] for b in bodies] == [typed["reason"], typed["quoted"]]
    for export in (csv_export, jsonl):
        r = verify(export.path, "--key", str(pub))
        assert r.returncode == 0, r.stderr


def test_a_manifest_that_is_not_an_object_fails_in_one_line(exports, pub, tmp_path) -> None:
    path, manifest = copy(exports["csv"], tmp_path / "l")
    doc = json.loads(manifest.read_text())
    doc["manifest"], doc["manifest_text"] = [], "[]"
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path, "--key", str(pub)), "not a JSON object")


@pytest.mark.parametrize("changes, reason", [
    ({"filter__actor": 7}, "filter field 'actor'"),
    ({"filter": ["actor", "bob"]}, "filter is not a JSON object"),
    ({"export": "trail.csv"}, "export is not a JSON object"),
    ({"range": 3}, "range is not a JSON object"),
], ids=["int-actor", "list-filter", "string-export", "int-range"])
def test_malformed_parts_of_a_signed_manifest_fail_in_one_line(
        exports, appliance, pub, tmp_path, changes, reason) -> None:
    """Signed with the appliance key, so only the shapes are wrong: still no traceback."""
    path, manifest = copy(exports["csv"], tmp_path / "p")
    resign(manifest, appliance.key, **changes)
    assert failed(verify(path, "--key", str(pub)), reason)


def test_a_username_typed_at_a_failed_login_is_guarded_in_the_csv(
        appliance, auditor, tmp_path, pub) -> None:
    """The actor column holds a failed login's username as typed, before any account
    vouches for it: a formula typed there must not run in the auditor's spreadsheet."""
    from appliance.errors import ApplianceError
    from appliance.services import auth
    typed = '=hyperlink("http://x","open")'
    with pytest.raises(ApplianceError):
        auth.login(appliance, typed, "wrong password")
    out = tmp_path / "usb"
    out.mkdir()
    result = export_trail(appliance, auditor, "csv", out / "a.csv", EventFilter(actor=typed))
    with open(result.path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["actor"], r["target_id"]) for r in rows] == [("'" + typed, "'" + typed)]
    r = verify(result.path, "--key", str(pub))  # the filter is checked on the stored text
    assert r.returncode == 0, r.stderr


def test_a_csv_cell_longer_than_128_kib_still_verifies(appliance, auditor, tmp_path,
                                                       pub) -> None:
    """The CSV holds values whole; the csv module's default field limit is 128 KiB."""
    from appliance.audit.events import Actor, Event
    with appliance.transaction():
        appliance.trail.append(Event("test.big", Actor("bob", "Bob", "it"), "host", "h1",
                                     details={"log": "x" * 200_000}))
    result = export_trail(appliance, auditor, "csv", tmp_path / "big.csv")
    r = verify(result.path, "--key", str(pub))
    assert r.returncode == 0, r.stderr


def _resign_checkpoint(manifest: Path, key: SigningKey, **changes) -> dict:
    cp = json.loads(manifest.read_text())["manifest"]["checkpoint"]
    cp["body"].update(changes)
    cp["text"] = json.dumps(cp["body"], separators=(",", ":"), sort_keys=True)
    cp["signature"] = key.sign(cp["text"].encode())
    return cp


@pytest.mark.parametrize("fmt, changes, reason", [
    ("pdf", {"count": "x"}, "count is not a whole number"),
    ("jsonl", {"range__first_seq": True}, "range first_seq is not a sequence number"),
    ("csv", {"chain__head_hash": 7}, "chain head is not"),
    ("csv", {"export__size": 1.5}, "export format, SHA-256 or size is malformed"),
    ("jsonl", {"chain__head_seq": float("inf")}, "chain head is not"),
], ids=["pdf-text-count", "bool-first-seq", "int-head-hash", "float-size", "inf-head-seq"])
def test_fields_of_the_wrong_type_in_a_signed_manifest_are_refused(
        exports, appliance, pub, tmp_path, fmt, changes, reason) -> None:
    """The appliance writes whole numbers and hex digests: anything else is a malformed
    manifest, refused in one line, never accepted (JSON true == 1 in Python) or a
    traceback (int(Infinity))."""
    path, manifest = copy(exports[fmt], tmp_path / "w")
    if "chain__head_seq" in changes:  # the checkpoint states the same head
        changes["checkpoint"] = _resign_checkpoint(manifest, appliance.key,
                                                   tree_size=changes["chain__head_seq"])
    doc = json.loads(manifest.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = doc["manifest"]
        for p in parents:
            target = target[p]
        target[leaf] = value
    text = json.dumps(doc["manifest"], separators=(",", ":"), sort_keys=True)  # Infinity too
    doc.update(manifest=json.loads(text), manifest_text=text,
               signature=appliance.key.sign(text.encode()))
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path, "--key", str(pub)), reason)


def test_huge_deep_or_unreadable_inputs_are_one_line(exports, pub, tmp_path) -> None:
    path, manifest = copy(exports["jsonl"], tmp_path / "h")
    manifest.write_text('{"format":' + "[" * 100_000 + "]" * 100_000 + "}")
    assert failed(verify(path, "--key", str(pub)), "nested too deeply")
    doc = json.loads(exports["jsonl"].manifest_path.read_text())
    doc["manifest_text"] = "[" * 100_000 + "]" * 100_000
    manifest.write_text(json.dumps(doc))
    assert failed(verify(path, "--key", str(pub)), "signed text is not JSON")
    with open(manifest, "wb") as f:  # read no further than a manifest can be long
        f.truncate(17 << 20)
    assert failed(verify(path, "--key", str(pub)), "larger than any audit export manifest")
    if Path("/proc/self/mem").is_file():  # a regular file whose read fails
        r = verify(exports["jsonl"].path, "--key", "/proc/self/mem")
        assert r.returncode == 2 and r.stderr.startswith("error: cannot read trusted key")
        assert len(r.stderr.strip().splitlines()) == 1


def rewrite_with_the_appliance_key(appliance, seq: int, old: str, new: str) -> None:
    """What root on the appliance can do: the signing key is a file there. Edit one event,
    re-chain every event after it and re-sign every checkpoint with the appliance key."""
    conn = sqlite3.connect(appliance.layout.db, isolation_level=None)
    with audit_triggers_dropped(conn):
        conn.execute("UPDATE audit_events SET body = replace(body, ?, ?) WHERE seq = ?",
                     (old, new, seq))
        rechain(conn)
        resign_checkpoints(conn, appliance.key)
    conn.close()


@pytest.fixture
def anchored(appliance, clock, admin_session, tmp_path) -> Path:
    """An anchor taken off the appliance after the first events, then more events."""
    from appliance.services import audit as audit_service

    populate(appliance, clock)
    media = tmp_path / "usb"
    media.mkdir()
    path = audit_service.anchor(appliance, admin_session, media)
    populate(appliance, clock, n=4)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_anchor_catches_a_trail_rewritten_and_resigned_with_the_appliance_key(
        appliance, auditor, anchored, pub, tmp_path, fmt) -> None:
    out = tmp_path / "media"
    out.mkdir()
    genuine = export_trail(appliance, auditor, fmt, out / f"genuine.{fmt}")
    r = verify(genuine.path, "--anchor", str(anchored))
    assert r.returncode == 0, r.stderr
    assert "the trail continues the anchor" in r.stdout
    seq = json.loads(anchored.read_text())["checkpoint"]["tree_size"] - 3
    assert '"item-' in appliance.conn.execute(
        "SELECT body FROM audit_events WHERE seq = ?", (seq,)).fetchone()[0]
    rewrite_with_the_appliance_key(appliance, seq, '"item-', '"forged-')
    forged = export_trail(appliance, auditor, fmt, out / f"forged.{fmt}")
    assert verify(forged.path, "--key", str(pub)).returncode == 0  # the key alone cannot tell
    assert failed(verify(forged.path, "--key", str(pub), "--anchor", str(anchored)),
                  "differs from the one the anchor recorded: history was rewritten")


def test_an_anchor_pins_the_key_the_appliance_and_the_length(appliance, auditor, anchored,
                                                             tmp_path) -> None:
    out = tmp_path / "media"
    out.mkdir()
    result = export_trail(appliance, auditor, "jsonl", out / "t.jsonl")
    doc = json.loads(anchored.read_text())
    body = doc["checkpoint"]

    def forged_anchor(name: str, key: SigningKey, **changes) -> Path:
        b = {**body, "key_id": key.key_id, **changes}
        text = json.dumps(b, sort_keys=True, separators=(",", ":"))
        path = tmp_path / name
        path.write_text(json.dumps({**doc, "checkpoint": b, "checkpoint_text": text,
                                    "signature": key.sign(text.encode()),
                                    "public_key_pem": public_pem(key.public).decode()}))
        return path

    foreign = forged_anchor("a1", SigningKey.generate())
    assert failed(verify(result.path, "--anchor", str(foreign)),
                  "not by the anchor's key")
    assert failed(verify(result.path, "--anchor", str(forged_anchor(
        "a2", appliance.key, appliance_id="another-appliance"))), "the anchor is from appliance")
    assert failed(verify(result.path, "--anchor", str(forged_anchor(
        "a3", appliance.key, tree_size=10**6))), "cut off or replaced by an older copy")
    altered = tmp_path / "a4"
    altered.write_text(json.dumps({**doc, "checkpoint_text": doc["checkpoint_text"].replace(
        body["head_hash"], "0" * 64)}))
    assert failed(verify(result.path, "--anchor", str(altered)),
                  "does not carry a valid signature")
    for bad in ("[]", "{}", "not json", json.dumps({**doc, "checkpoint_text": "[1]"})):
        altered.write_text(bad)
        assert failed(verify(result.path, "--anchor", str(altered)), "is not an audit anchor")


def test_a_filtered_export_of_an_event_edited_and_rehashed_alone_says_what_it_cannot_show(
        appliance, clock, auditor, anchored, pub, tmp_path) -> None:
    """Root edits one event and re-hashes it alone, without the key: `audit verify` finds it,
    a filtered export of it verifies (nothing links it to the signed head) and says so."""
    from appliance.audit.verify import verify_trail

    [(seq, prev, body)] = appliance.conn.execute(
        "SELECT seq, prev_hash, body FROM audit_events "
        "WHERE json_extract(body, '$.target.id') = 'item-3' ORDER BY seq LIMIT 1").fetchall()
    forged = body.replace("reason 3", "FORGED 3")
    conn = sqlite3.connect(appliance.layout.db, isolation_level=None)
    with audit_triggers_dropped(conn):
        conn.execute("UPDATE audit_events SET body = ?, hash = ? WHERE seq = ?",
                     (forged, hashlib.sha256(prev + forged.encode()).digest(), seq))
    conn.close()
    assert "edited" in verify_trail(appliance.conn, appliance.key.public).kinds()
    result = export_trail(appliance, auditor, "jsonl", tmp_path / "f.jsonl",
                          EventFilter(target_id="item-3"))
    assert b"FORGED 3" in result.path.read_bytes()
    r = verify(result.path, "--key", str(pub), "--anchor", str(anchored))
    assert r.returncode == 0, r.stderr
    assert "cannot show the appliance's trail holds these very events" in r.stdout
    whole = export_trail(appliance, auditor, "jsonl", tmp_path / "w.jsonl")
    assert failed(verify(whole.path, "--key", str(pub)), f"does not link to event {seq}")


def test_an_endless_export_fails_instead_of_hanging(exports, pub) -> None:
    manifest = exports["jsonl"].manifest_path
    r = subprocess.run([sys.executable, "-I", str(VERIFIER), "/dev/zero", "--manifest",
                        str(manifest), "--key", str(pub)], capture_output=True, text=True,
                       timeout=30)
    assert failed(r, "SHA-256 differs")
