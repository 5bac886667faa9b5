#!/usr/bin/env python3
"""Paired A/B of the audit append path: `python tests/perf/ab_append.py OTHER_TREE [N]`.

Runs this tree's `Trail.append`, `Event`, `Checkpointer`, Merkle `Frontier` and `Clock` (A)
against OTHER_TREE's (B, e.g. a `git worktree` of a candidate change) in one process, on two
appliances, alternating rounds of 250 durable appends (B first in every other round), with
a raw insert of the same rows as in `bench_audit.py`. Run-to-run noise on this VM (±3 µs
an append) hides changes of a microsecond or two; paired rounds in one process do not. Run
it with OTHER_TREE = this tree too, the same number of times, to see the noise of
identical code.
Prints one JSON object in the benchmarks' form: the mean of the per-round A − B as its
value, beside B's mean, with each side's mean per-append time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_audit as B  # noqa: E402


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    other = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    events_b = load("other_events", other / "appliance/audit/events.py")
    trail_b = load("other_trail", other / "appliance/audit/trail.py")
    checkpoint_b = load("other_checkpoint", other / "appliance/audit/checkpoint.py")
    checkpoint_b.Frontier = load("other_merkle", other / "appliance/audit/merkle.py").Frontier
    clock_b = load("other_clock", other / "appliance/clock.py")
    root = Path(tempfile.mkdtemp(prefix="ab-append-"))
    try:
        app_a, _ = B.new_appliance(root, "a")
        app_b, _ = B.new_appliance(root, "b")
        t = app_b.trail
        other_trail = trail_b.Trail(t.conn, clock_b.Clock(), checkpoint_b.Checkpointer(
            t.checkpointer.key, t.checkpointer.appliance_id), t.policy)
        actors: dict = {}

        def as_b(e):
            fields = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
            a = fields["actor"]
            fields["actor"] = actors.setdefault(a, events_b.Actor(a.username, a.name, a.role))
            return events_b.Event(**fields)

        raw = B._raw_db(root / "plain.db", B.PLAIN)
        raw.executemany(B.INSERT, app_a.conn.execute(
            "SELECT seq, prev_hash, hash, body FROM audit_events ORDER BY seq").fetchall())
        warm, per = 1500, 250
        rounds = n // per
        ev_a = [B.event(i) for i in range(warm + rounds * per)]
        ev_b = [as_b(e) for e in ev_a]
        times: dict[str, list[float]] = {"A": [], "B": [], "raw": []}
        for r in range(-1, rounds):
            span = range(0, warm) if r < 0 else range(warm + r * per, warm + (r + 1) * per)
            head = app_a.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
            for arm in (("A", "B") if r % 2 else ("B", "A")):
                app, trail, evs = ((app_a, app_a.trail, ev_a) if arm == "A"
                                   else (app_b, other_trail, ev_b))
                start = time.perf_counter()
                for i in span:
                    with app.transaction():
                        trail.append(evs[i])
                if r >= 0:
                    times[arm].append((time.perf_counter() - start) / per * 1e6)
            rows = app_a.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events "
                                      "WHERE seq > ? ORDER BY seq", (head,)).fetchall()
            took = B.raw_appends(raw, rows)
            if r >= 0:
                times["raw"].append(took / per * 1e6)
        a, b, w = (statistics.mean(times[k]) for k in ("A", "B", "raw"))
        diffs = [x - y for x, y in zip(times["A"], times["B"], strict=True)]
        print(json.dumps({"bench": "append_ab", "metric": "append_a_minus_b",
                          "value": round(statistics.mean(diffs), 2), "unit": "us",
                          "baseline": f"OTHER_TREE's append (B: {other}), rounds in turn",
                          "baseline_value": round(b, 2), "ratio": round(a / b, 4),
                          "goal": "report", "n": rounds * per, "a_us": round(a, 2),
                          "b_us": round(b, 2), "raw_us": round(w, 2),
                          "ratio_a": round(a / w, 3), "ratio_b": round(b / w, 3)}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
