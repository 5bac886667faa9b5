"""Import benchmark: copy-and-verify into the content store against hashing and cp + openssl.

Run on its own (pytest does not collect it):
    .venv/bin/python tests/perf/bench_import.py [--size-gb 2.2] [--dir DIR] [--sweep]

Builds a bundle of random bytes (a few large files and some small ones) in a temporary
directory on the same disk, then prints one JSON object per line. The import runs in a child
process so its peak RSS is its own; its time is measured inside the child (open_media +
ContentStore.ingest, excluding interpreter start-up), with its CPU seconds per GB, which a
busy shared machine disturbs far less than wall time. The page cache is dropped before each
cold measurement when this process may write /proc/sys/vm/drop_caches (root); every line says
whether it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MiB = 1 << 20
BLOCK = 4 * MiB
BENCH = "import[ContentStore.ingest via open_media]"
SCOPE = "open_media + ContentStore.ingest (appliance media import not yet available)"


def emit(metric: str, value: float, unit: str, baseline: str, baseline_value: float,
         goal: str, **extra: object) -> None:
    line = {"bench": BENCH, "metric": metric, "value": round(value, 4), "unit": unit,
            "baseline": baseline, "baseline_value": round(baseline_value, 4),
            "ratio": round(value / baseline_value, 4) if baseline_value else None,
            "goal": goal, **extra}
    print(json.dumps(line), flush=True)


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def build_bundle(root: Path, total: int, seed: int = 2026) -> list[tuple[str, int]]:
    """Random-looking bytes from AES-CTR (fast and seeded), 85% in four large files."""
    large = [int(total * share) for share in (0.35, 0.25, 0.15, 0.10)]
    small_total = total - sum(large)
    small = [small_total // 48] * 47 + [small_total - 47 * (small_total // 48)]
    layout = [(f"base_model/model-{i:05d}-of-00004.safetensors", s) for i, s in enumerate(large)]
    layout += [(f"golden_set/shard-{i:03d}.jsonl", s) for i, s in enumerate(small)]
    layout.append(("metadata/root.json", 2_000))
    zeros = bytes(BLOCK)
    out = bytearray(BLOCK)
    for n, (rel, size) in enumerate(layout):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{seed}:{n}".encode()).digest()
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        with open(path, "wb", buffering=0) as f:
            left = size
            while left:
                k = min(left, BLOCK)
                enc.update_into(zeros[:k], out)
                f.write(memoryview(out)[:k])
                left -= k
    subprocess.run(["sync"], check=True)
    return layout


def hash_in_memory(root: Path, layout: list[tuple[str, int]]) -> tuple[float, list[dict]]:
    """SHA-256 of every file, timing only the hashing of blocks already in memory."""
    spent = 0.0
    wanted = []
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    for rel, size in layout:
        h = hashlib.sha256()
        with open(root / rel, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                t = time.perf_counter()
                h.update(view[:n])
                spent += time.perf_counter() - t
        wanted.append({"relpath": rel, "sha256": h.hexdigest(), "size": size})
    return spent, wanted


def run_import(media: Path, store: Path, manifest: Path, workers: int | None = None,
               block: int | None = None) -> tuple[dict, float]:
    """Import in a child process; returns its own timing and its peak RSS in MiB."""
    cmd = [sys.executable, __file__, "--child", str(media), str(store), str(manifest)]
    if workers:
        cmd += ["--workers", str(workers)]
    if block:
        cmd += ["--block-mib", str(block)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    result = json.loads(out)
    return result, result["peak_rss_kib"] / 1024


def child(args: argparse.Namespace) -> None:
    from appliance.bundle.media import open_media
    from appliance.bundle.store import BLOCK as STORE_BLOCK
    from appliance.bundle.store import DEFAULT_WORKERS, ContentStore, WantedFile

    wanted = [WantedFile(**w) for w in json.loads(Path(args.child[2]).read_text())]
    store = ContentStore(Path(args.child[1]), workers=args.workers or DEFAULT_WORKERS,
                         block_size=(args.block_mib * MiB) if args.block_mib else STORE_BLOCK)
    t = time.perf_counter()
    result = store.ingest(open_media(Path(args.child[0])), wanted)
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "copied": result.copied_bytes,
                      "skipped": result.skipped_bytes, "workers": store.workers,
                      "block_mib": store.block_size // MiB, "peak_rss_kib": peak}))


def cp_openssl(media: Path, dest: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["cp", "-r", str(media), str(dest)], check=True)
    files = sorted(str(p) for p in dest.rglob("*") if p.is_file())
    subprocess.run(["openssl", "dgst", "-sha256", *files], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.2)
    parser.add_argument("--dir", type=Path, default=None, help="scratch dir (same disk)")
    parser.add_argument("--sweep", action="store_true", help="also try workers and blocks")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--block-mib", type=int, default=None)
    parser.add_argument("--child", nargs=3, metavar=("MEDIA", "STORE", "MANIFEST"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    total = int(args.size_gb * 1e9)
    scratch = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.dir))
    try:
        bench(scratch, total, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def bench(scratch: Path, total: int, args: argparse.Namespace) -> None:
    media, manifest = scratch / "bundle", scratch / "wanted.json"
    layout = build_bundle(media, total)
    hash_s, wanted = hash_in_memory(media, layout)
    manifest.write_text(json.dumps(wanted))
    total = sum(size for _, size in layout)
    gb = total / 1e9
    hash_gbps = gb / hash_s
    common = {"bytes": total, "files": len(layout), "scope": SCOPE, "cpus": os.cpu_count()}

    if args.sweep:
        for workers in (1, 2, 3, 4):
            for block in (2, 4):
                cold = drop_caches()
                res, rss = run_import(media, scratch / f"sweep-{workers}-{block}", manifest,
                                      workers, block)
                shutil.rmtree(scratch / f"sweep-{workers}-{block}")
                emit("import_throughput_sweep", gb / res["seconds"], "GB/s",
                     "hashlib sha256 in memory, 1 thread", hash_gbps, "pick the best",
                     workers=workers, block_mib=block, cold_cache=cold,
                     cpu_s_per_gb=round(res["cpu_s"] / gb, 3),
                     peak_rss_mib=round(rss, 1), load1=os.getloadavg()[0])

    cold = drop_caches()
    first, rss = run_import(media, scratch / "store", manifest, args.workers, args.block_mib)
    assert first["copied"] == total, first
    again, rss2 = run_import(media, scratch / "store", manifest, args.workers, args.block_mib)
    assert again["copied"] == 0, again
    cold_cp = drop_caches()
    cp_s = cp_openssl(media, scratch / "copy")
    # On a shared machine the wall time depends on other load; CPU seconds per GB do not.
    run = {**common, "workers": first["workers"], "block_mib": first["block_mib"],
           "import_cpu_s_per_gb": round(first["cpu_s"] / gb, 3),
           "hash_cpu_s_per_gb": round(hash_s / gb, 3), "load1": os.getloadavg()[0]}

    emit("import_throughput", gb / first["seconds"], "GB/s",
         "hashlib sha256 of the same bytes in memory, 1 thread", hash_gbps, ">= 0.85",
         cold_cache=cold, **run)
    emit("import_vs_cp_openssl", first["seconds"], "s",
         "cp -r then openssl dgst -sha256 of the copies (no fsync)", cp_s, "<= 0.7",
         cold_cache=cold and cold_cp, **run)
    emit("import_peak_rss", max(rss, rss2), "MiB", "goal", 256.0, "< 256", **run)
    emit("reimport_unchanged", again["seconds"], "s", "first import", first["seconds"],
         "< 0.05", **run)


if __name__ == "__main__":
    main()
