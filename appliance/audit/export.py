"""Exports of the audit trail (CSV, JSON Lines, PDF) and their signed manifests (11.10(b)).

SQLite formats every row itself (CSV quoting, hex hashes, JSON fragments), so an export of
a million events streams at about the speed of `sqlite3 -csv`. JSON Lines keeps each
event's stored canonical bytes verbatim as the last member of its line, so an auditor can
re-hash them without re-encoding anything. Files are written beside their final name and
renamed only once the export's own audit event is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from appliance import __version__
from appliance.audit import query
from appliance.audit.checkpoint import Checkpoint
from appliance.audit.events import FLAT_COLUMNS, Actor, StoredEvent
from appliance.audit.lookup import SeqRange, matching_seqs
from appliance.audit.query import EventFilter
from appliance.canonical import canonical_text
from appliance.durable import StagedFile
from appliance.keys import SigningKey, fingerprint, public_pem

FORMATS = ("csv", "jsonl", "pdf")
MANIFEST_FORMAT = "appliance-audit-export-manifest/1"
BATCH = 5000

Progress = Callable[[int, int], None]


def _json_or_empty(path: str, *empty: str) -> str:
    """A JSON fragment of the stored body as `StoredEvent.flat` shows it; '' when absent."""
    expr = f"body -> '{path}'"
    for value in ("null", *empty):
        expr = f"nullif({expr}, '{value}')"
    return f"ifnull({expr}, '')"


# StoredEvent.flat() as SQL, column for column; the canonical body is the only source, so
# nested values appear exactly as hashed (RFC 8785 text).
FLAT_SQL: dict[str, str] = {
    "seq": "seq",
    "ts": "json_extract(body, '$.ts')",
    "actor": "json_extract(body, '$.actor.username')",
    "actor_name": "json_extract(body, '$.actor.name')",
    "actor_role": "json_extract(body, '$.actor.role')",
    "terminal": "ifnull(json_extract(body, '$.terminal'), '')",
    "action": "json_extract(body, '$.action')",
    "target_type": "json_extract(body, '$.target.type')",
    "target_id": "json_extract(body, '$.target.id')",
    "target_digest": "ifnull(json_extract(body, '$.target.digest'), '')",
    "outcome": "json_extract(body, '$.outcome')",
    "reason": "ifnull(json_extract(body, '$.reason'), '')",
    "old": _json_or_empty("$.old"),
    "new": _json_or_empty("$.new"),
    "details": _json_or_empty("$.details", "{}"),
    # 11.50: printed name, meaning and time of an electronic signature, in one cell.
    "signature": "CASE WHEN ifnull(body -> '$.signature', '{}') IN ('{}', 'null') THEN '' "
                 "ELSE printf('%s (%s), %s, %s', json_extract(body, '$.signature.name'), "
                 "json_extract(body, '$.signature.username'), "
                 "json_extract(body, '$.signature.meaning'), "
                 "json_extract(body, '$.signature.ts')) END",
    "clock_warning": "ifnull(json_extract(body, '$.clock_warning'), '')",
    "prev_hash": "lower(hex(prev_hash))",
    "hash": "lower(hex(hash))",
}
assert tuple(FLAT_SQL) == FLAT_COLUMNS

# Columns that never need CSV quoting (digits, ISO time, hex); every other one is quoted.
_BARE = {"seq", "ts", "prev_hash", "hash"}

FLAT_SELECT = ", ".join(FLAT_SQL.values())
# One printf per row builds the whole CSV line inside SQLite: "%w" doubles embedded double
# quotes, which is CSV's escaping. Measured: 40% less CPU than replace() and || per column.
# Lines come back as BLOBs with their line end, so Python neither decodes nor re-encodes
# them (another 12%).
_CSV_FORMAT = ",".join("%s" if c in _BARE else '"%w"' for c in FLAT_COLUMNS) + "\r\n"
# SQLite's JSON functions stop at an escaped NUL (\u0000) inside a string, so rows whose
# body holds one come back NULL here and are formatted in Python from the stored body.
HAS_NUL = "instr(body, '\\u0000') > 0"

# Spreadsheets run a cell that begins with one of these as a formula (CSV injection), so a
# free-text cell that does gets a leading apostrophe, and so does one that begins with an
# apostrophe already: the rule reverses exactly (verify-audit-export undoes it), and the
# JSON Lines export keeps the text as stored. JSON, hex and times never start a formula.
FORMULA_START = "=+-@\t\r'"
# `actor` too: a failed login records the username as typed, before any account checks it.
GUARDED = ("actor", "actor_name", "terminal", "target_type", "target_id", "reason",
           "signature")
# Every guarded cell begins with a string value of the body, so a row holds one to guard
# only if its body has `:"` before such a character (tab and return are JSON-escaped):
# those rare rows come back NULL and are formatted in Python too (one GLOB: about 7 %).
MAY_START_FORMULA = "body GLOB '*:\"[-=+@''\\]*'"
CSV_LINE = f"CASE WHEN {HAS_NUL} OR {MAY_START_FORMULA} THEN NULL " \
    f"ELSE CAST(printf('{_CSV_FORMAT}', " + ", ".join(
    v if c in _BARE or v.startswith(("ifnull(", "CASE")) else f"ifnull({v}, '')"
    for c, v in FLAT_SQL.items()) + ") AS BLOB) END"
CSV_HEADER = (",".join(FLAT_COLUMNS) + "\r\n").encode("ascii")
# The body must stay the LAST member and be copied verbatim: the verifier slices it out.
JSONL_LINE = ("CAST(printf('{\"seq\":%d,\"prev_hash\":\"%s\",\"hash\":\"%s\",\"event\":%s}\n', "
              "seq, lower(hex(prev_hash)), lower(hex(hash)), body) AS BLOB)")


@dataclass(frozen=True)
class ExportHeader:
    """What the title block and the manifest say about an export."""

    appliance_id: str
    fmt: str
    flt: EventFilter
    checkpoint: Checkpoint
    exported_by: Actor
    exported_at: str
    key_id: str

    @property
    def head_seq(self) -> int:
        return self.checkpoint.tree_size

    @property
    def head_hash(self) -> str:
        return self.checkpoint.head_hash


@dataclass(frozen=True)
class Written:
    """What an export file holds: the manifest states it and the verifier checks it."""

    count: int
    first_seq: int | None
    last_seq: int | None
    first_ts: str | None
    last_ts: str | None
    sha256: str
    size: int


class HashingWriter:
    """Hashes and writes on a background thread while SQLite formats the next batch.

    sqlite3, hashlib and file writes all release the GIL, so the two overlap on a second
    core; syncing every 64 MiB spreads the disk writes over the export instead of leaving
    them all to the final fsync. Errors (a full disk) come back on the next call.
    """

    SYNC_EVERY = 64 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="audit-export-writer",
                                        daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        self._raise()
        self._queue.put(data)
        self.size += len(data)

    def finish(self) -> str:
        """Wait for every byte to be written and fsynced; return the SHA-256."""
        self._stop()
        self._raise()
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.h.hexdigest()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        unsynced = 0
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self.h.update(data)
                self.f.write(data)
                unsynced += len(data)
                if unsynced >= self.SYNC_EVERY:
                    self.f.flush()
                    os.fsync(self.f.fileno())
                    unsynced = 0
            except BaseException as exc:  # handed to the producer, never lost
                self._error = exc

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()


def count_matching(conn: sqlite3.Connection, flt: EventFilter, upto: int) -> int:
    return query.count(conn, flt, upto)


def iter_batches(conn: sqlite3.Connection, select: str, flt: EventFilter, upto: int,
                 batch: int = BATCH) -> Iterator[list[tuple]]:
    """Keyset-paged batches of `seq, <select>` for the events the filter matches."""
    where, args = flt.where()
    after = 0
    while True:
        source, params = matching_seqs(where, args, SeqRange(after=after, upto=upto), batch)
        rows = conn.execute(f"SELECT seq, {select} FROM audit_events WHERE seq IN ({source}) "
                            "ORDER BY seq LIMIT ?", (*params, batch)).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _stream_lines(conn: sqlite3.Connection, select: str, header: bytes,
                  hdr: ExportHeader, out: HashingWriter, progress: Progress | None,
                  total: int) -> tuple[int, int | None, int | None]:
    count, first, last = 0, None, None
    out.write(header)
    for rows in iter_batches(conn, select, hdr.flt, hdr.head_seq):
        if first is None:
            first = rows[0][0]
        last = rows[-1][0]
        lines = [r[1] for r in rows]
        if None in lines:
            lines = [line if line is not None else _csv_line_python(conn, r[0])
                     for line, r in zip(lines, rows, strict=True)]
        out.write(b"".join(lines))
        count += len(rows)
        if progress is not None:
            progress(count, total)
    return count, first, last


def stored_event(conn: sqlite3.Connection, seq: int) -> StoredEvent:
    return StoredEvent(*conn.execute(
        "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq = ?", (seq,)).fetchone())


def csv_cells(flat: dict[str, Any]) -> list[str]:
    """One CSV row's cells from `StoredEvent.flat()`, free text guarded against formulas."""
    return [("'" + v if v[:1] and v[0] in FORMULA_START else v) if k in GUARDED else str(v)
            for k, v in flat.items()]


def _csv_line_python(conn: sqlite3.Connection, seq: int) -> bytes:
    """The row as `_CSV_FORMAT` lays it out in SQLite, byte for byte: every cell quoted
    (inner quotes doubled) but the bare ones, so one file never mixes two quotings."""
    cells = csv_cells(stored_event(conn, seq).flat())
    return (",".join(v if c in _BARE else '"' + v.replace('"', '""') + '"'
                     for c, v in zip(FLAT_COLUMNS, cells, strict=True)) + "\r\n").encode("utf-8")


def write_export(conn: sqlite3.Connection, hdr: ExportHeader, target: StagedFile,
                 progress: Progress | None = None) -> Written:
    """Write the export to its staged file (fsynced); return what it holds."""
    total = count_matching(conn, hdr.flt, hdr.head_seq)
    if progress is not None:
        progress(0, total)
    with target.open() as f, HashingWriter(f) as out:
        if hdr.fmt == "csv":
            count, first, last = _stream_lines(conn, CSV_LINE, CSV_HEADER, hdr, out,
                                               progress, total)
        elif hdr.fmt == "jsonl":
            count, first, last = _stream_lines(conn, JSONL_LINE, b"", hdr, out, progress,
                                               total)
        else:
            from appliance.audit.pdf import write_pdf

            first, last = _seq_range(conn, hdr)
            count = write_pdf(conn, hdr, out, total, _ts_of(conn, first), _ts_of(conn, last),
                              progress)
        digest = out.finish()
    return Written(count, first, last, _ts_of(conn, first), _ts_of(conn, last), digest,
                   out.size)


def _seq_range(conn: sqlite3.Connection, hdr: ExportHeader) -> tuple[int | None, int | None]:
    where, args = hdr.flt.where()
    source, params = matching_seqs(where, args, SeqRange(upto=hdr.head_seq))
    return conn.execute(f"SELECT min(seq), max(seq) FROM ({source})", params).fetchone()


def _ts_of(conn: sqlite3.Connection, seq: int | None) -> str | None:
    if seq is None:
        return None
    row = conn.execute("SELECT json_extract(body, '$.ts') FROM audit_events WHERE seq = ?",
                       (seq,)).fetchone()
    return row[0] if row else None


def build_manifest(hdr: ExportHeader, file_name: str, written: Written,
                   key: SigningKey) -> dict[str, Any]:
    cp = hdr.checkpoint
    return {
        "appliance_id": hdr.appliance_id,
        "export": {"file": file_name, "format": hdr.fmt, "sha256": written.sha256,
                   "size": written.size,
                   "columns": list(FLAT_COLUMNS) if hdr.fmt == "csv" else None},
        "filter": asdict(hdr.flt),
        "range": {"first_seq": written.first_seq, "last_seq": written.last_seq,
                  "first_ts": written.first_ts, "last_ts": written.last_ts,
                  "upto_seq": hdr.head_seq},
        "count": written.count,
        "chain": {"head_seq": hdr.head_seq, "head_hash": hdr.head_hash},
        "checkpoint": {"id": cp.id, "body": cp.body, "text": cp.text,
                       "signature": cp.signature},
        "public_key_pem": public_pem(key.public).decode("ascii"),
        "key_id": fingerprint(key.public),
        "exported_by": {"username": hdr.exported_by.username, "name": hdr.exported_by.name,
                        "role": hdr.exported_by.role},
        "exported_at": hdr.exported_at,
        "generator": f"clinical-appliance {__version__}",
    }


def sign_manifest(manifest: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """The signed text is what counts; the readable copy beside it must parse to the same."""
    text = canonical_text(manifest)
    return {"format": MANIFEST_FORMAT, "manifest": manifest, "manifest_text": text,
            "signature": key.sign(text.encode("utf-8")), "signature_alg": "ECDSA-P256-SHA256"}


def write_json(target: StagedFile, doc: dict[str, Any]) -> None:
    with target.open() as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")
