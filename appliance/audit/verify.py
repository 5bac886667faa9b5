"""Verification of the audit trail from the stored bytes, trusting only a public key.

Re-hashes each stored canonical body (never re-encodes), checks the chain links (the
stored prev_hash column as well as the hashes), the sequence, every checkpoint's signature,
head hash and Merkle root, the lookup that filtered reads use, what `structure` checks
(trigger definitions, deleted checkpoints, signatures no checkpoint covers), and, given an
anchor from external media, truncation and rollback of the file. Findings name the first
bad sequence number and the kind of tampering; a column of the wrong type or a body that
is not UTF-8 JSON is a finding too, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from appliance import db
from appliance.audit import lookup, structure
from appliance.audit.checkpoint import Anchor, Checkpoint, all_checkpoints, decoded
from appliance.audit.merkle import Frontier
from appliance.audit.report import GENESIS, Finding, VerifyReport
from appliance.errors import IntegrityError
from appliance.keys import fingerprint, load_public_pem, verify_signature

BATCH = 50_000
PARALLEL_MIN = 200_000

__all__ = ["Finding", "VerifyReport", "verify_trail"]


def verify_trail(conn: sqlite3.Connection, public_key: ec.EllipticCurvePublicKey,
                 anchor: Anchor | None = None, incremental: bool = False) -> VerifyReport:
    """Verify in one read transaction: a snapshot, so what others commit meanwhile (a
    signed event and its checkpoint, say) is seen whole or not at all, never half."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        return _verify(conn, public_key, anchor, incremental)
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")


def _verify(conn: sqlite3.Connection, public_key: ec.EllipticCurvePublicKey,
            anchor: Anchor | None, incremental: bool) -> VerifyReport:
    # An anchor vouches for the events up to it only when the walk re-hashes them: an
    # incremental walk trusts what its start checkpoint signed, and whoever holds the key
    # (a file on the appliance) can re-sign that over a rewritten history.
    incremental = incremental and anchor is None
    report = VerifyReport(mode="incremental" if incremental else "full")
    structure.check_triggers(conn, report)
    key_id = fingerprint(public_key)
    ours = _appliance_id(conn) if anchor is not None else None
    foreign = anchor is not None and anchor.body.get("appliance_id") != ours
    if foreign:
        # Said plainly, and alone: another appliance's anchor vouches for nothing here, and
        # "history was rewritten" would mislead an auditor who picked the wrong file. It
        # fails all the same: it is also what a database swapped for another's would give.
        report.findings.append(Finding(
            "foreign-anchor", None,
            f"the anchor is of appliance {anchor.body.get('appliance_id')}, this database of "
            f"appliance {ours}: the wrong anchor file, or another appliance's "
            "database"))
    elif anchor is not None:
        anchor_key = load_public_pem(anchor.public_key_pem.encode())
        if fingerprint(anchor_key) != key_id:
            report.findings.append(Finding(
                "key-mismatch", None,
                "the appliance key differs from the key that signed the anchor"))
    stored = all_checkpoints(conn)
    structure.check_checkpoint_ids(conn, stored, report)
    if incremental:
        # Only the checkpoints from the newest good one on: each signature costs ~0.1 ms.
        start, checkpoints = _incremental_start(conn, stored, public_key, key_id, report)
    else:
        start, checkpoints = None, _valid_checkpoints(stored, public_key, key_id, report)

    if start is None:
        frontier, last_hash, expected = Frontier(), GENESIS, 1
    else:
        frontier = Frontier.from_bytes(start.tree_size, start.frontier)
        last_hash, expected = bytes.fromhex(start.head_hash), start.tree_size + 1
    report.start_seq = expected
    pending = {cp.tree_size: cp for cp in checkpoints if cp.tree_size >= expected}
    covered = max((cp.tree_size for cp in checkpoints), default=0)  # newest valid checkpoint
    head = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0] or 0
    sizes = sorted(size for size in pending if 0 < size <= head)
    db_path = _db_path(conn)
    if head - expected + 1 >= PARALLEL_MIN and db_path is not None:
        # The chain walk and the Merkle leaves are independent: on a large trail, hash the
        # Merkle tree in a second process while this one walks the chain.
        # The lookup check is shared between them so that both finish together.
        split = expected + (head - expected) * 9 // 20
        worker = _start_merkle_worker(db_path, expected, frontier, sizes, split)
        reached, signed = _walk(conn, report, last_hash, expected, pending, covered)
        mine = _lookup(conn, expected, split)
        roots, theirs = _finish_merkle_worker(worker)
        mismatch = mine if mine is not None else theirs
    else:
        reached, signed = _walk(conn, report, last_hash, expected, pending, covered)
        roots, mismatch = _merkle_roots(conn, expected, frontier, sizes), _lookup(conn, expected)
    if mismatch is not None:
        report.findings.append(Finding(
            "lookup", mismatch, f"the lookup row of event {mismatch} does not match its "
                                "stored body, so filtered views and exports would misfile it"))
    for cp in reached:
        if roots.get(cp.tree_size) != cp.merkle_root:
            _mismatch(cp, report)
    for size, cp in sorted(pending.items()):
        if size > head:
            report.findings.append(Finding(
                "truncated", head + 1,
                f"checkpoint {cp.id} covers {size} events but the trail ends at {head}"))
    structure.check_signed_events(signed, covered, report)
    # Every signed event is followed by a "signature" checkpoint at its own sequence (a
    # missing one is reported above): those, and the candidates after the newest.
    structure.check_signatures(conn, sorted(
        {cp.tree_size for cp in checkpoints
         if cp.body.get("reason") == "signature" and cp.tree_size >= report.start_seq}
        | {seq for seq, _ in signed}), report)
    if anchor is not None and not foreign:
        _check_anchor(conn, anchor, head, report)
    return report


def _lookup(conn: sqlite3.Connection, start: int, stop: int | None = None) -> int | None:
    """The lookup is derived data, but filtered views and exports read through it: a row
    edited or removed there would hide or misfile an event. (Backups from before the
    lookup existed have none to check.)"""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_lookup'").fetchone():
        return lookup.first_mismatch(conn, start, stop)
    return None


def _valid_checkpoints(checkpoints: list[Checkpoint], key: ec.EllipticCurvePublicKey,
                       key_id: str, report: VerifyReport) -> list[Checkpoint]:
    valid = []
    for cp in checkpoints:
        body_ok = bool(cp.body) and cp.body.get("tree_size") == cp.tree_size
        if cp.body and cp.body.get("key_id") != key_id:
            report.findings.append(Finding(
                "checkpoint-foreign-key", cp.tree_size,
                f"checkpoint {cp.id} claims key {str(cp.body.get('key_id'))[:16]}, "
                f"not the appliance key {key_id[:16]}"))
        elif not body_ok or not verify_signature(key, cp.signature, cp.text.encode("utf-8")):
            report.findings.append(Finding(
                "checkpoint-signature", cp.tree_size,
                f"checkpoint {cp.id} does not carry a valid appliance signature"))
        else:
            valid.append(cp)
    return valid


def _incremental_start(conn: sqlite3.Connection, stored: list[Checkpoint],
                       key: ec.EllipticCurvePublicKey, key_id: str, report: VerifyReport
                       ) -> tuple[Checkpoint | None, list[Checkpoint]]:
    """The newest correctly signed checkpoint whose frontier folds to its signed root and
    whose head still matches the stored event, and the valid checkpoints after it; no
    start means a full walk over every valid checkpoint."""
    newer: list[Checkpoint] = []
    for i in range(len(stored) - 1, -1, -1):
        cp = stored[i]
        if not _valid_checkpoints([cp], key, key_id, report):
            continue
        try:
            frontier = Frontier.from_bytes(cp.tree_size, cp.frontier)
        except ValueError:
            frontier = None
        row = conn.execute("SELECT CAST(hash AS BLOB) FROM audit_events WHERE seq = ?",
                           (cp.tree_size,)).fetchone()
        if frontier is not None and frontier.root().hex() == cp.merkle_root and (
                cp.tree_size == 0 or (row and row[0] and row[0].hex() == cp.head_hash)):
            report.checkpoints_checked += 1
            return cp, [cp, *reversed(newer)]
        newer.append(cp)
    return None, list(reversed(newer))  # every checkpoint was examined: walk it all


# The hot loop's query, and the one a batch falls back to when a column is not valid UTF-8
# text (sqlite3 then refuses the whole fetch): every column as bytes, with its type, so a
# column of the wrong type or bytes that are not text become a finding, never a crash.
_ROWS = "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
_RAW = ("CAST(prev_hash AS BLOB), CAST(hash AS BLOB), CAST(body AS BLOB), typeof(prev_hash), "
        "typeof(hash), typeof(body) FROM audit_events")
_RAW_ROWS = f"SELECT seq, {_RAW} WHERE seq > ? ORDER BY seq LIMIT ?"


def _batch(conn: sqlite3.Connection, after: int) -> list[tuple]:
    """The next rows as (seq, prev_hash, hash, body text); in a batch that cannot be read as
    text, None stands for a column of the wrong type or a body that is not UTF-8, which the
    walk then examines as a bad row."""
    try:
        return conn.execute(_ROWS, (after, BATCH)).fetchall()
    except sqlite3.OperationalError:  # "Could not decode to UTF-8"
        rows = conn.execute(_RAW_ROWS, (after, BATCH)).fetchall()
        return [(seq, prev if tp == "blob" else None, stored if th == "blob" else None,
                 decoded(body) if tb == "text" else None)
                for seq, prev, stored, body, tp, th, tb in rows]


def _walk(conn: sqlite3.Connection, report: VerifyReport, last_hash: bytes, expected: int,
          pending: dict[int, Checkpoint], covered: int
          ) -> tuple[list[Checkpoint], list[tuple[int, str]]]:
    """The hot loop: one chain hash and one link comparison per event. Only rows that fail
    (hash, prev_hash column, or a column of the wrong type) are looked at closely to name
    the tampering. Returns the checkpoints reached whose head matched, for the Merkle
    comparison, and the events after `covered` that may carry a signature (for
    `structure.check_signed_events`: the walk reads them anyway)."""
    sha256 = hashlib.sha256
    reached: list[Checkpoint] = []
    signed: list[tuple[int, str]] = []
    before_last = None  # hash of the event before the last one, to recognise insertions
    quiet = 0           # a row already explained by the previous finding
    resync = False      # after an anomaly, follow the stored links so one attack is one finding
    checked = 0
    seq = expected - 1
    while rows := _batch(conn, seq):
        checked += len(rows)
        for seq, prev, stored, text in rows:
            if seq != expected:
                report.findings.append(Finding(
                    "deleted", expected, f"events {expected}..{seq - 1} are missing"))
                last_hash = _prev_hash(conn, seq)
                quiet = seq
            elif resync:
                last_hash = _prev_hash(conn, seq)
                resync = False
            try:  # a body that is not text (None, bytes, a number) has no encode
                good = prev == last_hash and \
                    sha256(last_hash + text.encode("utf-8")).digest() == stored
            except AttributeError:
                good = False
            if not good:
                row = _raw_row(conn, seq)
                stored = row.hash
                if seq != quiet:
                    finding = _classify(conn, row, last_hash, before_last)
                    report.findings.append(finding)
                    quiet = seq + 1 if finding.kind == "reordered" else 0
                resync = True
                if b'"clock_warning"' in row.body:
                    _clock_warning(report, seq)
            elif '"clock_warning"' in text:
                _clock_warning(report, seq)
            before_last, last_hash = last_hash, stored
            expected = seq + 1
            if pending:
                cp = pending.pop(seq, None)
                if cp is not None:
                    report.checkpoints_checked += 1
                    if cp.head_hash == last_hash.hex():
                        reached.append(cp)
                    else:
                        _mismatch(cp, report)
        if seq > covered:  # only the batches that reach past the newest valid checkpoint
            signed += [(s, text) for s, _, _, text in rows
                       if s > covered and type(text) is str and structure.SIGNED in text]
    report.events_checked = checked
    report.head_seq = expected - 1
    report.head_hash = last_hash.hex()
    if pending.pop(0, None) is not None:
        report.checkpoints_checked += 1
    return reached, signed


def _clock_warning(report: VerifyReport, seq: int) -> None:
    report.warnings.append(Finding(
        "clock", seq, f"event {seq} was recorded with a clock earlier than the event before it"))


def _prev_hash(conn: sqlite3.Connection, seq: int) -> bytes:
    return conn.execute("SELECT CAST(prev_hash AS BLOB) FROM audit_events WHERE seq = ?",
                        (seq,)).fetchone()[0] or b""


@dataclass(frozen=True)
class _RawRow:
    """A row that failed the chain, as bytes, with the SQLite type of each column."""

    seq: int
    prev: bytes
    hash: bytes
    body: bytes
    types: tuple[str, str, str]


def _raw_row(conn: sqlite3.Connection, seq: int) -> _RawRow:
    prev, stored, body, *types = conn.execute(f"SELECT {_RAW} WHERE seq = ?", (seq,)).fetchone()
    return _RawRow(seq, prev or b"", stored or b"", body or b"", tuple(types))


def _body_seq(data: bytes | None) -> object:
    """The `seq` a stored body claims; None when it is not a JSON object."""
    try:
        obj = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deeply
        return None
    return obj.get("seq") if isinstance(obj, dict) else None


def _classify(conn: sqlite3.Connection, row: _RawRow, last_hash: bytes,
              before_last: bytes | None) -> Finding:
    """Name what happened to a row that does not continue the chain."""
    seq, prev, stored, data = row.seq, row.prev, row.hash, row.body
    for column, kind, want in zip(("prev_hash", "hash", "body"), row.types,
                                  ("blob", "blob", "text"), strict=True):
        if kind != want:
            return Finding("edited", seq, f"event {seq}'s {column} is stored as {kind}, not "
                                          f"{want}: the row was edited")
    body_seq = _body_seq(data)
    if body_seq is None:
        return Finding("edited", seq, f"event {seq}'s body is not a JSON object in UTF-8: "
                                      "its content was edited")
    self_consistent = hashlib.sha256(prev + data).digest() == stored
    if self_consistent and before_last is not None and prev == before_last:
        return Finding("inserted", seq - 1,
                       f"event {seq - 1} is not part of the chain: a forged row was inserted")
    if body_seq != seq:
        nxt = conn.execute("SELECT CAST(body AS BLOB) FROM audit_events WHERE seq > ? "
                           "ORDER BY seq LIMIT 1", (seq,)).fetchone()
        if nxt is not None and _body_seq(nxt[0]) == seq:
            return Finding("reordered", seq,
                           f"rows {seq} and {seq + 1} hold each other's events: rows were swapped")
        if isinstance(body_seq, int) and body_seq > seq:
            return Finding("deleted", seq,
                           f"row {seq} holds event {body_seq}: events were deleted and renumbered")
        return Finding("reordered", seq, f"row {seq} holds event {body_seq}: rows were moved")
    if prev != last_hash and hashlib.sha256(last_hash + data).digest() == stored:
        return Finding("edited", seq, f"event {seq}'s prev_hash column is not the hash of "
                                      f"event {seq - 1}: the link was edited")
    if not self_consistent or prev == last_hash:
        return Finding("edited", seq,
                       f"event {seq} does not match its hash: its content was edited")
    return Finding("edited", seq - 1,
                   f"event {seq - 1} was rewritten: event {seq} no longer links to it")


def _mismatch(cp: Checkpoint, report: VerifyReport) -> None:
    report.findings.append(Finding(
        "checkpoint-mismatch", cp.tree_size,
        f"the trail up to {cp.tree_size} differs from what checkpoint {cp.id} signed: "
        "history was rewritten"))


def _merkle_roots(conn: sqlite3.Connection, start: int, frontier: Frontier,
                  sizes: list[int]) -> dict[int, str]:
    """Merkle roots of the stored events at each checkpoint size, extending `frontier`."""
    wanted = set(sizes)
    roots: dict[int, str] = {}
    push = frontier.push_leaf_hash
    sha256 = hashlib.sha256
    seq = start - 1
    while wanted:
        rows = conn.execute("SELECT seq, CAST(body AS BLOB) FROM audit_events WHERE seq > ? "
                            "ORDER BY seq LIMIT ?", (seq, BATCH)).fetchall()
        if not rows:
            break
        for seq, data in rows:
            push(sha256(b"\x00" + data).digest())
            if seq in wanted:
                roots[seq] = frontier.root().hex()
                wanted.discard(seq)
    return roots


def _start_merkle_worker(db_path: str, start: int, frontier: Frontier,
                         sizes: list[int], lookup_from: int) -> subprocess.Popen:
    """A plain subprocess (not multiprocessing: callers need no `__main__` guard)."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance.audit.verify"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    job = {"db": db_path, "start": start, "size": frontier.size,
           "frontier": frontier.to_bytes().hex(), "sizes": sizes, "lookup_from": lookup_from}
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    return proc


def _finish_merkle_worker(proc: subprocess.Popen) -> tuple[dict[int, str], int | None]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise IntegrityError("the Merkle verification worker failed",
                             "run `appliance audit verify` again")
    result = json.loads(out)
    return {int(k): v for k, v in result["roots"].items()}, result["lookup"]


def _merkle_worker_main() -> None:
    job = json.loads(sys.stdin.read())
    conn = sqlite3.connect(f"file:{job['db']}?mode=ro", uri=True)
    frontier = Frontier.from_bytes(job["size"], bytes.fromhex(job["frontier"]))
    roots = _merkle_roots(conn, job["start"], frontier, job["sizes"])
    sys.stdout.write(json.dumps({"roots": roots, "lookup": _lookup(conn, job["lookup_from"])}))


def _db_path(conn: sqlite3.Connection) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main" and path:
            return path
    return None


def _appliance_id(conn: sqlite3.Connection) -> str | None:
    try:
        return db.appliance_id(conn)
    except sqlite3.Error:  # a database without its meta table: other findings say so
        return None


def _check_anchor(conn: sqlite3.Connection, anchor: Anchor, head: int,
                  report: VerifyReport) -> None:
    size = anchor.tree_size
    if size > head:
        max_cp = conn.execute("SELECT MAX(tree_size) FROM audit_checkpoints").fetchone()[0] or 0
        seq_row = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit_checkpoints'").fetchone()
        max_id = conn.execute("SELECT MAX(id) FROM audit_checkpoints").fetchone()[0] or 0
        traces = max_cp > head or (seq_row is not None and seq_row[0] > max_id)
        if traces:
            report.findings.append(Finding(
                "truncated", head + 1,
                f"the anchor covers {size} events but the trail ends at {head}: "
                "its tail was cut off"))
        else:
            report.findings.append(Finding(
                "rollback", head + 1,
                f"the anchor covers {size} events but this database holds {head}: "
                "it was replaced by an older copy"))
        return
    row = conn.execute("SELECT CAST(hash AS BLOB) FROM audit_events WHERE seq = ?",
                       (size,)).fetchone()
    if row is None or (row[0] or b"").hex() != anchor.body["head_hash"]:
        report.findings.append(Finding(
            "anchor-mismatch", size,
            f"event {size} differs from the one the anchor recorded: history was rewritten"))


if __name__ == "__main__":
    _merkle_worker_main()
