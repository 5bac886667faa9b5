"""Benchmark: the console's audit screen on a 1,000,000-event trail (virtual scrolling).

Run on its own: `.venv/bin/python tests/perf/bench_console.py [--events N]`. Prints one JSON
object per figure; the baseline is the same screen on a 1,000-event trail in the same run,
so the ratio shows that opening does not grow with the trail. `audit_index_backlog` is
what a reader pays once when nobody has filtered since the trail was built: appends leave
the filter lookup to its readers (appliance/audit/lookup.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.audit import lookup  # noqa: E402
from appliance.context import Appliance  # noqa: E402
from tests.tui.test_big_trail import build_trail, open_and_measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        big = build_trail(Path(tmp) / "big", args.events, indexed=False)
        build_s = time.perf_counter() - t
        with Appliance.open(big) as app:
            backlog = lookup.unindexed(app.conn)
            t = time.perf_counter()
            lookup.refresh(app.conn)
            index_s = time.perf_counter() - t
        small = build_trail(Path(tmp) / "small", 1_000)
        fig_small = asyncio.run(open_and_measure(small))
        fig_big = asyncio.run(open_and_measure(big))
    for metric, key in (("audit_screen_open", "open_s"), ("audit_jump_to_oldest", "jump_to_end_s"),
                        ("audit_filter_actor", "filter_s")):
        print(json.dumps({
            "bench": "console", "metric": f"{metric}_{args.events // 1000}k", "value":
            round(fig_big[key], 4), "unit": "s", "baseline": "same action on 1,000 events",
            "baseline_value": round(fig_small[key], 4),
            "ratio": round(fig_big[key] / fig_small[key], 2) if fig_small[key] else None,
            "goal": "< 1 s" if metric != "audit_filter_actor" else "informative",
            "events": fig_big["events"], "build_s": round(build_s, 1)}))
    print(json.dumps({
        "bench": "console", "metric": f"audit_index_backlog_{args.events // 1000}k",
        "value": round(index_s, 3), "unit": "s", "baseline": "building the trail through "
        "the real append path", "baseline_value": round(build_s, 3),
        "ratio": round(index_s / build_s, 3), "goal": "informative", "events": backlog}))


if __name__ == "__main__":
    main()
