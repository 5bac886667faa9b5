"""Content store ingest: one-pass copy and verify, refusals, resume, dedupe, full disk, progress."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.bundle import store as store_module
from appliance.bundle.media import DirectoryMedia, open_media
from appliance.bundle.objectfile import ObjectFile, aligned_buffer
from appliance.bundle.progress import ImportProgress, ProgressMeter
from appliance.bundle.store import ContentStore, StoreBusy, WantedFile
from appliance.errors import BundleRefused
from tests.mounts import private_mounts

CHILD = Path(__file__).with_name("ingest_child.py")
MiB = 1 << 20


def write_bundle(root: Path, sizes: dict[str, int], seed: int = 7) -> list[WantedFile]:
    rng = random.Random(seed)
    wanted = []
    for rel, size in sizes.items():
        data = rng.randbytes(size)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        wanted.append(WantedFile(rel, hashlib.sha256(data).hexdigest(), size))
    return wanted


def objects(store: ContentStore) -> list[str]:
    return sorted(p.name for p in store.objects.glob("*/*")) if store.objects.exists() else []


def tmp_files(store: ContentStore) -> list[str]:
    return sorted(os.listdir(store.tmp)) if store.tmp.exists() else []


def assert_one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, list[WantedFile]]:
    root = tmp_path / "bundle"
    wanted = write_bundle(root, {
        "metadata/root.json": 300,
        "base_model/model.safetensors": 9 * MiB + 5,
        "base_model/tokenizer.json": 70_000,
        "lora_adapter/adapter.safetensors": 3 * MiB,
        "golden_set/cases.jsonl": 0,
    })
    return root, wanted


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "home" / "store", block_size=MiB)


def test_ingest_copies_every_file_under_its_digest(bundle, store) -> None:
    root, wanted = bundle
    result = store.ingest(open_media(root), wanted)
    assert result.files_copied == len(wanted) and result.files_skipped == 0
    assert result.copied_bytes == sum(w.size for w in wanted)
    for w in wanted:
        path = store.path_of(w.sha256)
        assert path == store.root / "sha256" / w.sha256[:2] / w.sha256
        assert store.has(w.sha256)
        assert path.read_bytes() == (root / w.relpath).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert tmp_files(store) == []


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "page_cache"])
@pytest.mark.parametrize("block", [4096, MiB, 4 * MiB])
def test_odd_sizes_copy_exactly_with_either_write_path(tmp_path, direct, block) -> None:
    root = tmp_path / "b"
    sizes = {f"f{n}.bin": n for n in (1, 4095, 4096, 4097, MiB - 1, MiB + 1, 3 * MiB + 7)}
    wanted = write_bundle(root, sizes)
    store = ContentStore(tmp_path / "store", block_size=block, direct=direct)
    assert store.ingest(open_media(root), wanted).files_copied == len(wanted)
    for w in wanted:
        assert store.path_of(w.sha256).read_bytes() == (root / w.relpath).read_bytes()


def test_object_file_falls_back_to_the_page_cache_when_o_direct_refuses(tmp_path) -> None:
    # Memory one byte off a page boundary: O_DIRECT refuses it with EINVAL.
    raw = aligned_buffer(3 * 4096)
    view = memoryview(raw)[1:1 + 2 * 4096]
    view[:] = bytes(range(256)) * 32
    f = ObjectFile(tmp_path / "obj", direct=True)
    try:
        f.write(view, 5000)
        f.finish()
        assert f.direct is False
    finally:
        f.close()
    assert (tmp_path / "obj").read_bytes() == bytes(view[:5000])
    view.release()


def test_block_size_must_be_aligned(tmp_path) -> None:
    with pytest.raises(ValueError):
        ContentStore(tmp_path, block_size=MiB + 1)


def test_ingest_from_a_tar_reads_members_in_place(bundle, store, tmp_path) -> None:
    root, wanted = bundle
    tar = tmp_path / "bundle.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(root), "."], check=True)
    result = store.ingest(open_media(tar), wanted)
    assert result.files_copied == len(wanted)
    assert all(store.path_of(w.sha256).read_bytes() == (root / w.relpath).read_bytes()
               for w in wanted)


def test_second_ingest_copies_nothing(bundle, store) -> None:
    root, wanted = bundle
    store.ingest(open_media(root), wanted)
    mtimes = {w.sha256: store.path_of(w.sha256).stat().st_mtime_ns for w in wanted}
    again = store.ingest(open_media(root), wanted)
    assert (again.files_copied, again.copied_bytes) == (0, 0)
    assert again.files_skipped == len(wanted)
    assert again.skipped_bytes == sum(w.size for w in wanted)
    assert {w.sha256: store.path_of(w.sha256).stat().st_mtime_ns for w in wanted} == mtimes


def test_adapter_update_copies_only_the_new_adapter(bundle, store, tmp_path) -> None:
    root, wanted = bundle
    store.ingest(open_media(root), wanted)
    update = tmp_path / "update"
    shutil.copytree(root, update)
    new = write_bundle(update, {"lora_adapter/adapter.safetensors": 3 * MiB}, seed=99)[0]
    wanted2 = [new if w.relpath == new.relpath else w for w in wanted]
    result = store.ingest(open_media(update), wanted2)
    assert (result.files_copied, result.copied_bytes) == (1, new.size)
    assert store.has(new.sha256)


def test_same_content_under_two_names_is_stored_once(store, tmp_path) -> None:
    root = tmp_path / "b"
    w = write_bundle(root, {"a/x.bin": 5000})[0]
    (root / "b").mkdir()
    shutil.copy(root / "a/x.bin", root / "b/y.bin")
    result = store.ingest(open_media(root), [w, WantedFile("b/y.bin", w.sha256, w.size)])
    assert result.files_copied == 1 and objects(store) == [w.sha256]


def test_tampered_byte_is_refused_and_nothing_of_it_kept(bundle, store) -> None:
    root, wanted = bundle
    big = next(w for w in wanted if w.relpath == "base_model/model.safetensors")
    path = root / big.relpath
    data = bytearray(path.read_bytes())
    data[5 * MiB + 17] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleRefused) as err:
        store.ingest(open_media(root), [big])
    text = assert_one_line(err)
    assert "base_model/model.safetensors" in text and "does not match its signed SHA-256" in text
    assert objects(store) == [] and tmp_files(store) == []


def test_file_truncated_after_listing_is_refused(bundle, store) -> None:
    root, wanted = bundle
    big = next(w for w in wanted if w.relpath == "base_model/model.safetensors")
    media = open_media(root)  # lists the full size, as a stick pulled mid-way would
    os.truncate(root / big.relpath, 4 * MiB)
    with pytest.raises(BundleRefused) as err:
        store.ingest(media, [big])
    assert f"is truncated: {4 * MiB} of {big.size} bytes" in assert_one_line(err)
    assert objects(store) == [] and tmp_files(store) == []


def test_file_grown_after_listing_is_refused(bundle, store) -> None:
    root, wanted = bundle
    small = next(w for w in wanted if w.relpath == "base_model/tokenizer.json")
    media = open_media(root)
    with open(root / small.relpath, "ab") as f:
        f.write(b"extra")
    with pytest.raises(BundleRefused) as err:
        store.ingest(media, [small])
    assert "longer than its signed size" in assert_one_line(err)
    assert objects(store) == [] and tmp_files(store) == []


def test_size_mismatch_is_refused_before_copying(bundle, store) -> None:
    root, wanted = bundle
    lied = [WantedFile(w.relpath, w.sha256, w.size + 1) if w.relpath.startswith("lora") else w
            for w in wanted]
    with pytest.raises(BundleRefused) as err:
        store.ingest(open_media(root), lied)
    assert "its signed size is" in assert_one_line(err)
    assert objects(store) == []


def test_missing_file_is_refused_before_copying(bundle, store) -> None:
    root, wanted = bundle
    ghost = WantedFile("base_model/extra.bin", "ab" * 32, 10)
    with pytest.raises(BundleRefused) as err:
        store.ingest(open_media(root), [*wanted, ghost])
    assert "'base_model/extra.bin' is missing from the media" in assert_one_line(err)
    assert objects(store) == []


@pytest.mark.parametrize("digest", ["../../../etc/passwd", "AB" * 32, "ab" * 31, ""])
def test_malformed_digest_is_refused(bundle, store, digest) -> None:
    root, wanted = bundle
    with pytest.raises(BundleRefused) as err:
        store.ingest(open_media(root), [WantedFile(wanted[0].relpath, digest, wanted[0].size)])
    assert "malformed SHA-256" in assert_one_line(err)
    with pytest.raises(BundleRefused):
        store.path_of(digest)
    assert not (store.root.parent / "etc").exists()


def test_one_bad_file_among_many_leaves_only_verified_objects(bundle, store) -> None:
    root, wanted = bundle
    (root / "lora_adapter/adapter.safetensors").write_bytes(b"\0" * (3 * MiB))
    with pytest.raises(BundleRefused):
        ContentStore(store.root, workers=3, block_size=MiB).ingest(open_media(root), wanted)
    assert tmp_files(store) == []
    for digest in objects(store):
        assert hashlib.sha256(store.path_of(digest).read_bytes()).hexdigest() == digest
    assert not store.has(next(w for w in wanted if w.relpath.startswith("lora")).sha256)


def test_stale_temp_files_are_cleaned_at_the_next_ingest(bundle, store) -> None:
    root, wanted = bundle
    store.tmp.mkdir(parents=True)
    (store.tmp / f"{wanted[1].sha256}.123.456.part").write_bytes(b"half")
    store.ingest(open_media(root), wanted)
    assert tmp_files(store) == []


def test_object_of_wrong_size_is_replaced(bundle, store) -> None:
    root, wanted = bundle
    store.ingest(open_media(root), wanted)
    w = wanted[1]
    path = store.path_of(w.sha256)
    path.chmod(0o644)
    path.write_bytes(b"damaged")
    result = store.ingest(open_media(root), wanted)
    assert result.files_copied == 1
    assert path.read_bytes() == (root / w.relpath).read_bytes()


def test_unusable_store_directory_is_refused_in_one_line(bundle, tmp_path) -> None:
    root, wanted = bundle
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store should be")
    with pytest.raises(BundleRefused) as err:
        ContentStore(blocker / "store").ingest(open_media(root), wanted)
    assert f"content store {blocker / 'store'}" in assert_one_line(err)
    assert "appliance home" in err.value.hint


def test_a_second_concurrent_ingest_is_refused(bundle, store) -> None:
    root, wanted = bundle
    store.root.mkdir(parents=True)
    fd = os.open(store.root / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreBusy) as err:
            store.ingest(open_media(root), wanted)
        assert "in use by an import or a reclaim" in assert_one_line(err)
    finally:
        os.close(fd)
    assert store.ingest(open_media(root), wanted).files_copied == len(wanted)


def test_sigkill_mid_ingest_leaves_no_partial_object_and_rerun_resumes(tmp_path) -> None:
    media = tmp_path / "media"
    wanted = write_bundle(media, {"a.bin": 8 * MiB, "b.bin": 4 * MiB, "c.bin": 2 * MiB + 3})
    spec = tmp_path / "wanted.json"
    spec.write_text(json.dumps([w.__dict__ for w in wanted]))
    store = ContentStore(tmp_path / "store")
    child = subprocess.Popen([sys.executable, str(CHILD), "pause", str(media), str(store.root),
                              str(spec)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "PAUSED"
        partial = tmp_files(store)
        assert len(partial) == 1 and partial[0].startswith(wanted[2].sha256)
        # The first block's write runs on a writer thread that the pause does not stop.
        deadline = time.monotonic() + 10
        while (store.tmp / partial[0]).stat().st_size < MiB and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (store.tmp / partial[0]).stat().st_size == MiB
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert objects(store) == sorted([wanted[0].sha256, wanted[1].sha256])  # c never appeared
    result = store.ingest(open_media(media), wanted)
    assert (result.files_copied, result.files_skipped) == (1, 2)
    assert tmp_files(store) == []
    assert store.path_of(wanted[2].sha256).read_bytes() == (media / "c.bin").read_bytes()


def test_ctrl_c_leaves_only_complete_objects(tmp_path, store) -> None:
    media = tmp_path / "media"
    wanted = write_bundle(media, {f"f{i}.bin": 6 * MiB for i in range(4)})
    copying, interrupted = threading.Event(), threading.Event()

    class Signalling(DirectoryMedia):
        def open(self, relpath):
            copying.set()
            interrupted.wait(5)  # workers hold their temp files open while Ctrl-C arrives
            return super().open(relpath)

    reports: list[ImportProgress] = []

    def interrupt(p: ImportProgress) -> None:
        reports.append(p)
        if len(reports) == 1:
            return  # the first report comes before any copy starts
        assert copying.wait(5)
        interrupted.set()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.ingest(Signalling(media), wanted, interrupt)
    assert tmp_files(store) == []
    assert len(objects(store)) < len(wanted)
    for digest in objects(store):
        assert hashlib.sha256(store.path_of(digest).read_bytes()).hexdigest() == digest
    kept = len(objects(store))
    again = store.ingest(open_media(media), wanted)
    assert (again.files_skipped, again.files_copied) == (kept, len(wanted) - kept)


def _unshare_tmpfs(script: str, tmp_path: Path) -> list[dict]:
    """Run `script` with a 2 MiB tmpfs at $MNT, in a private mount namespace so the mount
    vanishes with the process (root: plain `unshare -m`; others: a user namespace)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ns = private_mounts()
    cmd = ns + ["sh", "-ec", f'mount -t tmpfs -o size=2m tmpfs "$MNT"\n{script}']
    env = {**os.environ, "MNT": str(mnt), "PY": sys.executable, "CHILD": str(CHILD)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_bundle_larger_than_free_space_is_refused_before_writing(tmp_path) -> None:
    media = tmp_path / "media"
    wanted = write_bundle(media, {"w1.bin": MiB + 1, "w2.bin": MiB + 2})
    spec = tmp_path / "wanted.json"
    spec.write_text(json.dumps([w.__dict__ for w in wanted]))
    [outcome] = _unshare_tmpfs(
        f'"$PY" "$CHILD" plain {media} "$MNT/store" {spec}', tmp_path)
    assert outcome["ok"] is False and outcome["type"] == "BundleRefused"
    assert "not enough space in the content store" in outcome["error"]
    assert "\n" not in outcome["error"]
    assert outcome["objects"] == [] and outcome["tmp"] == []


def test_disk_full_mid_copy_is_refused_cleanly_and_rerun_completes(tmp_path) -> None:
    media = tmp_path / "media"
    wanted = write_bundle(media, {"weights.bin": MiB + MiB // 2})
    spec = tmp_path / "wanted.json"
    spec.write_text(json.dumps([w.__dict__ for w in wanted]))
    full, retry = _unshare_tmpfs(
        f'"$PY" "$CHILD" fill {media} "$MNT/store" {spec} "$MNT/filler"\n'
        f'rm "$MNT/filler"\n'
        f'"$PY" "$CHILD" plain {media} "$MNT/store" {spec}', tmp_path)
    assert full["ok"] is False and full["type"] == "BundleRefused"
    assert "'weights.bin': the content store's disk is full" in full["error"]
    assert "\n" not in full["error"]
    assert full["objects"] == [] and full["tmp"] == []
    assert retry == {"ok": True, "files_copied": 1, "objects": [wanted[0].sha256], "tmp": []}


class _SlowStream(io.RawIOBase):
    """A real file read in small blocks with a pause, so an ingest spans many progress ticks."""

    def __init__(self, inner, event: threading.Event) -> None:
        self.inner, self.event = inner, event

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.event.wait(0.01)  # never set: a 10 ms pause per block
        return self.inner.readinto(memoryview(buffer)[:64 * 1024])

    def close(self) -> None:
        self.inner.close()
        super().close()


def test_progress_reports_bytes_rate_eta_and_current_file(tmp_path, monkeypatch) -> None:
    media_dir = tmp_path / "media"
    wanted = write_bundle(media_dir, {"one.bin": 2 * MiB, "two.bin": MiB})
    never = threading.Event()

    class Slow(DirectoryMedia):
        def open(self, relpath):
            return _SlowStream(super().open(relpath), never)

    # Each report's time as the meter read it to decide whether to report: a clock read
    # here, in the callback, also counts however long this thread was held up in between
    # (a busy machine, a worker holding the GIL), which moves two reports closer together.
    meters: list[ProgressMeter] = []

    class Meter(ProgressMeter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            meters.append(self)

    monkeypatch.setattr(store_module, "ProgressMeter", Meter)
    reports: list[tuple[float, ImportProgress]] = []
    store = ContentStore(tmp_path / "store", workers=1)
    store.ingest(Slow(media_dir), wanted,
                 lambda p: reports.append((meters[0]._last_report, p)))
    total = 3 * MiB
    assert len(reports) >= 4
    assert all(p.total_bytes == total for _, p in reports)
    done = [p.done_bytes for _, p in reports]
    assert done == sorted(done) and done[-1] == total
    assert reports[0][1].eta_s is None  # no rate yet
    assert any(p.rate_bps > 0 and p.eta_s is not None and p.eta_s > 0 for _, p in reports[1:-1])
    # "" when a report falls between one file's end and the next one's start.
    assert {p.current for _, p in reports[1:-1]} <= {"one.bin", "two.bin", ""}
    assert "one.bin" in {p.current for _, p in reports}
    assert reports[-1][1].eta_s == 0.0 and reports[-1][1].current == ""
    # At most ~10 a second: apart from the forced first and last, reports are >= 0.1 s apart.
    times = [t for t, _ in reports[:-1]]
    assert all(b - a >= 0.09 for a, b in zip(times, times[1:], strict=False))


def test_progress_meter_rate_and_eta_from_a_fake_clock() -> None:
    now = [100.0]
    seen: list[ImportProgress] = []
    meter = ProgressMeter(total=1000, already=200, callback=seen.append, clock=lambda: now[0])
    meter.report(force=True)
    meter.started("x.bin")
    now[0] += 1.0
    meter.add(300)
    meter.report()
    now[0] += 0.05
    meter.add(10)
    meter.report()  # within 0.1 s of the last: dropped
    now[0] += 0.95
    meter.add(90)
    meter.report()
    assert [p.done_bytes for p in seen] == [200, 500, 600]
    assert seen[0].eta_s is None and seen[0].rate_bps == 0.0
    assert seen[1].rate_bps == pytest.approx(300.0) and seen[1].eta_s == pytest.approx(500 / 300)
    assert seen[2].rate_bps == pytest.approx(200.0) and seen[2].eta_s == pytest.approx(2.0)
    assert seen[2].current == "x.bin"
