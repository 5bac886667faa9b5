"""Benchmarks run on their own (`python tests/perf/bench_audit.py`), never under pytest."""

collect_ignore_glob = ["bench_*.py", "ab_*.py"]
