#!/usr/bin/env python3
"""Audit-trail benchmarks: `python tests/perf/bench_audit.py [--quick] [--append-only] [--dir DIR]`.

Builds real appliances in a temporary directory (through the real append path, never a
shortcut into the table) and prints one JSON object per figure on its own line:
{"bench", "metric", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "n"}.
Progress goes to stderr. Not collected by pytest (see tests/perf/conftest.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.audit import lookup  # noqa: E402
from appliance.audit.checkpoint import Checkpointer, CheckpointPolicy  # noqa: E402
from appliance.audit.events import Actor, Event  # noqa: E402
from appliance.audit.export import FLAT_SELECT  # noqa: E402
from appliance.audit.query import EventFilter  # noqa: E402
from appliance.audit.trail import Trail  # noqa: E402
from appliance.audit.verify import verify_trail  # noqa: E402
from appliance.context import Appliance  # noqa: E402
from appliance.db import migrate, split_script  # noqa: E402
from appliance.services import auth  # noqa: E402
from appliance.services.audit_export import export_trail  # noqa: E402
from appliance.services.setup import init_appliance  # noqa: E402
from appliance.settings import PasswordPolicy, Settings  # noqa: E402

BENCH = "audit"
PASSWORD = "quiet horse battery staple"
SETTINGS = Settings(password=PasswordPolicy(scrypt_n=2**10))
ACTORS = [Actor("ira", "Ira Tech", "it"), Actor("dana", "Dana Admin", "admin"),
          Actor("mina", "Mina Learner", "ml"), Actor("ada", "Ada Auditor", "auditor")]
ACTIONS = ["media.scan", "media.import", "bundle.verify", "update.evaluate", "update.approve",
           "update.install", "auth.login", "dataset.register", "finetune.run", "audit.verify"]


def emit(metric: str, value: float, unit: str, baseline: str, baseline_value: float,
         goal: str, n: int) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 4), "unit": unit,
                      "baseline": baseline, "baseline_value": round(baseline_value, 4),
                      "ratio": round(value / baseline_value, 3), "goal": goal, "n": n}),
          flush=True)


def note(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def event(i: int, signatures: bool = True) -> Event:
    """A varied, realistically sized event (about 400 bytes stored); one in 1,000 is signed
    (each signature forces a checkpoint)."""
    action = ACTIONS[i % len(ACTIONS)]
    signed = signatures and action == "update.approve" and i % 1000 == 4
    return Event(
        action=action, actor=ACTORS[i % len(ACTORS)], target_type="bundle",
        target_id=f"bundle-{i // 100}", target_digest=hashlib.sha256(str(i).encode()).hexdigest(),
        outcome="failure" if i % 97 == 0 else "success",
        reason=(f"routine step {i} of the update lifecycle" if i % 3 == 0 or i % 5 == 0
                else None),  # a change (old values) always has one
        old={"state": "VERIFIED"} if i % 5 == 0 else None,
        new={"state": "EVALUATED", "score": i % 100} if i % 5 == 0 else None,
        details={"bytes": i * 4096, "host": "gpu-node-1", "step": i % 7},
        terminal="gpu-node-1:pts/0",
        signature={"username": "dana", "name": "Dana Admin", "meaning": "approved",
                   "ts": "2026-01-15T10:00:00.000Z"} if signed else None)


def new_appliance(root: Path, name: str) -> tuple[Appliance, object]:
    app = init_appliance(root / name, "bench", "Bench Admin", PASSWORD, settings=SETTINGS,
                         terminal="bench")
    return app, auth.login(app, "bench", PASSWORD)


def bulk_append(app: Appliance, start: int, n: int, trail: Trail | None = None,
                per_tx: int = 10_000, signatures: bool = True) -> None:
    """The real append path in large transactions (setup only; about 10k events/s)."""
    trail = trail or app.trail
    t0, done = time.perf_counter(), 0
    while done < n:
        k = min(per_tx, n - done)
        with app.transaction():
            for i in range(start + done, start + done + k):
                trail.append(event(i, signatures))
        done += k
        if done % 100_000 == 0 or done == n:
            rate = done / (time.perf_counter() - t0)
            note(f"  appended {done:,}/{n:,} ({rate:,.0f}/s)")


# The raw side of append_cost: a plain table of the same four columns.
PLAIN = ("CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, "
         "hash BLOB NOT NULL, body TEXT NOT NULL);")
INSERT = "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?, ?, ?, ?)"


def raw_appends(conn: sqlite3.Connection, rows: list[tuple]) -> float:
    """Seconds to insert `rows`, one durable transaction each: the baseline of an append."""
    t = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, row)
        conn.execute("COMMIT")
    return time.perf_counter() - t


def _raw_db(path: Path, ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in split_script(ddl):
        conn.execute(statement)
    return conn


def bench_append_cost(root: Path, n: int, warm: int = 1500) -> None:
    """One durable transaction per event on every side, WAL and synchronous=FULL. Every
    side first appends `warm` events untimed: a fresh WAL file grows with each commit
    (and fdatasync then also journals its size) until the first WAL checkpoint; a
    running appliance is past that, so the figure is the steady state's."""
    app, _ = new_appliance(root, "append")
    schema = sqlite3.connect(root / "schema.db", isolation_level=None)
    migrate(schema)
    schema.execute("PRAGMA journal_mode=WAL")
    schema.execute("PRAGMA synchronous=FULL")
    raws = {"plain": _raw_db(root / "plain.db", PLAIN), "schema": schema}
    existing = app.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events "
                                "ORDER BY seq").fetchall()
    for conn in raws.values():
        conn.executemany(INSERT, existing)  # the same starting point (init's events)
    ours, base = 0.0, dict.fromkeys(raws, 0.0)
    per = 250
    rounds = n // per
    # built before timing, like the rows; the first `warm` are the untimed warm-up
    events = [event(i) for i in range(warm + rounds * per)]
    for r in range(-1, rounds):  # alternate, so disk and cache drift hit all sides alike
        span = range(0, warm) if r < 0 else range(warm + r * per, warm + (r + 1) * per)
        head = app.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
        t = time.perf_counter()
        for i in span:
            with app.transaction():
                app.trail.append(events[i])
        if r >= 0:
            ours += time.perf_counter() - t
        rows = app.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events "
                                "WHERE seq > ? ORDER BY seq", (head,)).fetchall()
        for name, conn in raws.items():
            took = raw_appends(conn, rows)
            if r >= 0:
                base[name] += took
    total = rounds * per
    emit("append_cost", ours / total * 1e6, "us",
         "raw sqlite3 INSERT of the same rows into a plain (seq, prev_hash, hash, body) table, "
         "one transaction each, WAL, synchronous=FULL", base["plain"] / total * 1e6, "ratio <= 1.3",
         total)
    emit("append_cost_same_schema", ours / total * 1e6, "us",
         "raw sqlite3 INSERT of the same rows into the appliance's own schema (the audit table "
         "and its head-checking trigger), one transaction each, WAL, synchronous=FULL",
         base["schema"] / total * 1e6, "ratio <= 1.3", total)
    for conn in raws.values():
        conn.close()
    app.close()


def naive_verify(conn: sqlite3.Connection, start: int = 1) -> tuple[float, int]:
    """What a first attempt does: SELECT *, parse, re-encode, hash, compare, link."""
    t = time.perf_counter()
    prev, n, bad = None, 0, 0
    for row in conn.execute("SELECT * FROM audit_events WHERE seq >= ? ORDER BY seq", (start,)):
        seq, prev_hash, stored, body = row[:4]
        data = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
        if hashlib.sha256(prev_hash + data).digest() != stored:
            bad += 1
        if prev is not None and prev_hash != prev:
            bad += 1
        prev, n = stored, n + 1
    if bad:
        raise SystemExit(f"naive verify found {bad} mismatches: the bench data is not canonical")
    return time.perf_counter() - t, n


def bench_verify(app: Appliance, n_extra: int) -> None:
    t = time.perf_counter()
    report = verify_trail(app.conn, app.key.public)
    full = time.perf_counter() - t
    assert report.ok, report.findings[:3]
    naive, n = naive_verify(app.conn)
    emit("verify_1m", full, "s", "naive Python loop: SELECT *, json re-encoding, sha256, links",
         naive, "value < 4 s", report.events_checked)

    # n_extra events after the newest checkpoint: a policy that never checkpoints by itself.
    with app.transaction():
        app.trail.checkpoint("bench")
    head = app.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    quiet = Trail(app.conn, app.clock, Checkpointer(app.key, app.appliance_id),
                  CheckpointPolicy(every_events=10**12, every_seconds=10**9))
    bulk_append(app, 10**7, n_extra, quiet, signatures=False)
    lookup.refresh(app.conn)  # as above: the lookup rows since the checkpoint are checked too
    t = time.perf_counter()
    report = verify_trail(app.conn, app.key.public, incremental=True)
    inc = time.perf_counter() - t
    assert report.ok and report.mode == "incremental", report.findings[:3]
    naive_inc, n = naive_verify(app.conn, head + 1)
    emit("verify_incremental_10k", inc, "s",
         "naive Python loop over the same events since the checkpoint", naive_inc, "value < 0.2 s",
         report.events_checked)


def bench_export_csv(app: Appliance, session, root: Path) -> None:
    out = root / "exports"
    out.mkdir(exist_ok=True)
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli is None:
        raise SystemExit("the sqlite3 command-line shell is needed for the CSV baseline")
    ours, base, count = [], [], 0
    for _ in range(2):  # best of two each, alternating
        t = time.perf_counter()
        result = export_trail(app, session, "csv", out)
        ours.append(time.perf_counter() - t)
        count = result.count
        size = result.path.stat().st_size
        result.path.unlink()
        result.manifest_path.unlink()
        sql = (f"SELECT {FLAT_SELECT} FROM audit_events WHERE seq <= {count} ORDER BY seq")
        target = out / "baseline.csv"
        t = time.perf_counter()
        with open(target, "wb") as f:
            subprocess.run([sqlite3_cli, "-csv", "-header", "-readonly", str(app.layout.db), sql],
                           stdout=f, check=True)
        base.append(time.perf_counter() - t)
        base_size = target.stat().st_size
        target.unlink()
    note(f"  csv sizes: ours {size:,} bytes, sqlite3 -csv {base_size:,} bytes")
    emit("export_csv_1m", min(ours), "s",
         "sqlite3 -csv -header of the same rows and columns from the same db, to a file",
         min(base), "ratio <= 1.5", count)


def bench_export_pdf(root: Path, n: int) -> None:
    app, session = new_appliance(root, "pdf")
    bulk_append(app, 0, n)
    flt = EventFilter()
    out = root / "pdf-out"
    out.mkdir()
    t = time.perf_counter()
    csv_result = export_trail(app, session, "csv", out, flt)
    csv_time = time.perf_counter() - t
    t = time.perf_counter()
    result = export_trail(app, session, "pdf", out, flt)
    pdf_time = time.perf_counter() - t
    note(f"  pdf: {result.path.stat().st_size:,} bytes; csv of the same: {csv_result.count:,}")
    emit("export_pdf_10k", pdf_time, "s", "CSV export of the same events", csv_time, "value < 10 s",
         result.count)
    app.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, for trying things")
    p.add_argument("--dir", type=Path, help="where to build the trails (default: a temp dir)")
    p.add_argument("--append-only", action="store_true",
                   help="only append_cost (seconds, not minutes: for repeated runs)")
    args = p.parse_args()
    big, extra, appends, pdf_n = ((100_000, 10_000, 400, 2_000) if args.quick
                                  else (1_000_000, 10_000, 6_000, 10_000))
    root = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=args.dir))
    # Shared machines skew every figure: say how busy this one was.
    note(f"load average at start: {os.getloadavg()}")
    try:
        note(f"append_cost: {appends} durable appends each side in {root}")
        bench_append_cost(root, appends)
        if args.append_only:
            return
        note(f"building a {big:,}-event trail through the append path")
        app, session = new_appliance(root, "big")
        bulk_append(app, 0, big)
        # Appends leave the filter lookup to its readers; a running appliance's readers keep
        # it up to date, and verify then checks every lookup row against its body.
        lookup.refresh(app.conn)
        note("verify")
        bench_verify(app, extra)
        note("CSV export")
        bench_export_csv(app, session, root)
        app.close()
        note(f"PDF export of {pdf_n:,} events")
        bench_export_pdf(root, pdf_n)
    finally:
        note(f"load average at end: {os.getloadavg()}")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
