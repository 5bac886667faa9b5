#!/usr/bin/env python3
"""Where a durable audit append's time goes: `python tests/perf/bench_append_phases.py`.

Splits each one-event transaction into BEGIN IMMEDIATE, the work inside (our whole
`Trail.append`; the raw side's single INSERT) and COMMIT, for the appliance and for the
raw insert of the same rows that `bench_audit.py`'s append_cost compares it with. Prints
one JSON object per phase, as the other benchmarks do, plus the COMMIT percentiles.

Why it exists: the two sides' COMMITs write the same WAL frames, yet ours runs slower
right after our Python work (the cache it leaves behind is colder for SQLite's own code),
so the gap in append_cost is larger than the append's own time suggests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit import INSERT, PLAIN, _raw_db, event, new_appliance  # noqa: E402


def measure(root: Path, rounds: int, per: int = 250, warm_rounds: int = 6
            ) -> dict[str, list[list[int]]]:
    """Nanoseconds per phase and append, each side, rounds alternating as in append_cost."""
    app, _ = new_appliance(root, "phases")
    raw = _raw_db(root / "plain.db", PLAIN)
    raw.executemany(INSERT, app.conn.execute(
        "SELECT seq, prev_hash, hash, body FROM audit_events ORDER BY seq").fetchall())
    events = [event(i) for i in range((warm_rounds + rounds) * per)]
    clock = time.perf_counter_ns
    phases: dict[str, list[list[int]]] = {"ours": [[], [], []], "plain": [[], [], []]}
    for r in range(-warm_rounds, rounds):
        keep = r >= 0
        head = app.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
        start = (r + warm_rounds) * per
        for i in range(start, start + per):
            tx = app.transaction()
            a = clock()
            tx.__enter__()
            b = clock()
            app.trail.append(events[i])
            c = clock()
            tx.__exit__(None, None, None)
            d = clock()
            if keep:
                for phase, ns in zip(phases["ours"], (b - a, c - b, d - c), strict=True):
                    phase.append(ns)
        rows = app.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events "
                                "WHERE seq > ? ORDER BY seq", (head,)).fetchall()
        for row in rows:
            a = clock()
            raw.execute("BEGIN IMMEDIATE")
            b = clock()
            raw.execute(INSERT, row)
            c = clock()
            raw.execute("COMMIT")
            d = clock()
            if keep:
                for phase, ns in zip(phases["plain"], (b - a, c - b, d - c), strict=True):
                    phase.append(ns)
    raw.close()
    app.close()
    return phases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=36, help="rounds of 250 appends each side")
    p.add_argument("--dir", type=Path, help="scratch directory (default: a temp dir)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-phases-", dir=args.dir))
    try:
        phases = measure(root, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(phases["ours"][0])
    for k, name in enumerate(("begin", "append", "commit")):
        ours, plain = sum(phases["ours"][k]) / n / 1e3, sum(phases["plain"][k]) / n / 1e3
        print(json.dumps({"bench": "audit", "metric": f"append_phase_{name}",
                          "value": round(ours, 2), "unit": "us",
                          "baseline": "the same phase of the raw insert in append_cost",
                          "baseline_value": round(plain, 2), "ratio": round(ours / plain, 3),
                          "goal": "report", "n": n}), flush=True)
    commits = {side: sorted(v[2]) for side, v in phases.items()}
    pct = {side: {f"p{q}": round(v[int(len(v) * q / 100)] / 1e3, 1) for q in (10, 50, 90, 99)}
           for side, v in commits.items()}
    print(json.dumps({"bench": "audit", "metric": "append_commit_p50", "value": pct["ours"]["p50"],
                      "unit": "us", "baseline": "the raw insert's COMMIT, median",
                      "baseline_value": pct["plain"]["p50"],
                      "ratio": round(pct["ours"]["p50"] / pct["plain"]["p50"], 3),
                      "goal": "report", "n": n, "percentiles_us": pct}), flush=True)


if __name__ == "__main__":
    main()
