"""What the hash chain cannot show: that the protective triggers are the shipped ones, that
no signed checkpoint was deleted, and that every electronic signature is covered by one.

An attacker who deletes the newest checkpoints can rewrite the events after the ones left
and recompute their hashes; the chain is then consistent again. Checkpoints are never
deleted legitimately, their ids come from AUTOINCREMENT (sqlite_sequence remembers the
largest ever issued), and every signed event is followed by a checkpoint in the same
transaction: each of these leaves a trace that this module reports. Traces, not proof:
an attacker who also lowers sqlite_sequence and rewrites only unsigned events leaves
none, and only an anchor kept off the appliance catches that.
"""

from __future__ import annotations

import json
import re
import sqlite3

from appliance.audit.checkpoint import Checkpoint
from appliance.audit.report import Finding, VerifyReport
from appliance.db import split_script
from appliance.schema import AUDIT_TRIGGERS, MIGRATIONS

# A top-level "signature" member of a canonical (compact) body always reads like this; the
# same bytes elsewhere (a nested key, an escaped quote in a string) only cost a JSON parse.
SIGNED = '"signature":'
_CREATE_TRIGGER = re.compile(r"CREATE\s+TRIGGER\s+(\w+)", re.IGNORECASE)


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").rstrip()


def expected_triggers(version: int) -> dict[str, str]:
    """Each protective trigger's CREATE statement (whitespace-normalised) as the first
    `version` migrations left it, so an older backup is held to the definition it was
    made with; the newest definition where those migrations do not define it."""
    applied = MIGRATIONS[:version] if 0 < version <= len(MIGRATIONS) else MIGRATIONS
    found: dict[str, str] = {}
    for ddl in (*MIGRATIONS, *applied):  # the applied definitions are read last and win
        for statement in split_script(ddl):
            match = _CREATE_TRIGGER.search(statement)
            if match and match[1] in AUDIT_TRIGGERS:
                found[match[1]] = _normal(statement[match.start():])
    return found


def check_triggers(conn: sqlite3.Connection, report: VerifyReport) -> None:
    """A trigger dropped, or replaced by another under the same name (a no-op, say)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    expected = expected_triggers(version)
    present = {name: sql for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
    for name in AUDIT_TRIGGERS:
        if name not in present:
            report.findings.append(Finding(
                "trigger-missing", None, f"protective trigger {name} was removed"))
        elif _normal(present[name] or "") != expected[name]:
            report.findings.append(Finding(
                "trigger-altered", None,
                f"protective trigger {name} differs from its definition in the schema: "
                "it was replaced"))


def check_checkpoint_ids(conn: sqlite3.Connection, checkpoints: list[Checkpoint],
                         report: VerifyReport) -> None:
    """Checkpoint ids run 1, 2, 3... with none after the last that sqlite_sequence issued."""
    covered = 0
    for number, cp in enumerate(checkpoints, start=1):
        if cp.id != number:
            report.findings.append(Finding(
                "checkpoint-deleted", covered + 1,
                f"checkpoints {number}..{cp.id - 1} were deleted: the events after "
                f"{covered} lost their signed checkpoints"))
            return
        covered = cp.tree_size
    row = conn.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'audit_checkpoints'").fetchone()
    issued = row[0] if row and isinstance(row[0], int) else 0
    if issued > len(checkpoints):
        report.findings.append(Finding(
            "checkpoint-deleted", covered + 1,
            f"checkpoints {len(checkpoints) + 1}..{issued} were deleted: the events after "
            f"{covered} lost their signed checkpoints"))


def check_signed_events(candidates: list[tuple[int, str]], covered: int,
                        report: VerifyReport) -> None:
    """A signed event beyond `covered` (the newest valid checkpoint's tree size) lost the
    checkpoint its transaction wrote. `candidates`: the (seq, body) of the events after
    `covered` whose text holds SIGNED, which the chain walk collects as it reads them."""
    for seq, text in candidates:
        try:
            body = json.loads(text)
        except ValueError:  # a damaged body: the chain walk names it
            continue
        if isinstance(body, dict) and "signature" in body:
            report.findings.append(Finding(
                "checkpoint-missing", seq,
                f"event {seq} carries an electronic signature but no signed checkpoint "
                f"covers it (the newest covers {covered}): checkpoints were removed"))
            return


def check_signatures(conn: sqlite3.Connection, seqs: list[int], report: VerifyReport) -> None:
    """11.70, both ways. Each stored signature row must be the one its audit event carries:
    the row is what `signatures list/show` and the approval rules read, outside the hash
    chain. And each signature an event records (`seqs`: the events that may carry one)
    must still have its row: deleting it past its trigger would quietly take a signature,
    a rejection say, off its record."""
    from appliance.identity.signatures import all_signatures, trail_mismatch

    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'signatures'").fetchone():
        return
    for sig in all_signatures(conn):
        why = trail_mismatch(conn, sig)
        if why is not None:
            report.findings.append(Finding("signature-altered", sig.audit_seq, why))
    for seq in seqs:
        row = conn.execute("SELECT body FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        try:
            sig = json.loads(row[0]).get("signature")
        except (ValueError, TypeError, AttributeError):  # gone or damaged: the walk names it
            continue
        if not isinstance(sig, dict) or not isinstance(sig.get("id"), str):
            continue
        if conn.execute("SELECT 1 FROM signatures WHERE id = ?", (sig["id"],)).fetchone():
            continue
        report.findings.append(Finding(
            "signature-missing", seq,
            f"event {seq} records electronic signature {sig['id']} "
            f"({sig.get('meaning')} by {sig.get('name')}) but the signatures table no "
            "longer holds it: the row was deleted"))
