"""Media: tar and directory bundles read in place; every hostile entry refused in one line."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from appliance.bundle.media import DirectoryMedia, TarMedia, open_media
from appliance.bundle.removable import (
    find_bundles,
    parse_lsblk,
    parse_proc_mounts,
    removable_mounts,
    sysfs_removable,
)
from appliance.bundle.store import ContentStore, WantedFile
from appliance.errors import BundleRefused

GOOD = {"metadata/root.json": b'{"signed": {}}', "payload/weights.bin": bytes(range(256)) * 40}


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
          ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data)
    return info, data


def make_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]],
             fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


def good_entries() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [entry(name, data) for name, data in GOOD.items()]


def assert_refused(media_path: Path, store_root: Path, *needles: str) -> str:
    """The media is refused in one line naming the problem, and the store stays empty."""
    store = ContentStore(store_root)
    with pytest.raises(BundleRefused) as err:
        media = open_media(media_path)
        store.ingest(media, [WantedFile(f.relpath, "0" * 64, f.size)
                             for f in media.list_files()])
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text
    assert not (store_root / "sha256").exists() or not any((store_root / "sha256").iterdir())
    return text


@pytest.fixture
def refuse(tmp_path: Path):
    def run(entries, *needles: str, fmt: int = tarfile.PAX_FORMAT) -> str:
        tar = make_tar(tmp_path / "hostile.tar", [*good_entries(), *entries], fmt)
        return assert_refused(tar, tmp_path / "store", "hostile.tar", *needles)
    return run


# --- hostile tar entries: one test each -------------------------------------------------

def test_tar_parent_directory_entry_is_refused(refuse) -> None:
    refuse([entry("../evil.bin", b"x")], "'../evil.bin'", "escapes the bundle")


def test_tar_parent_directory_inside_path_is_refused(refuse) -> None:
    refuse([entry("payload/../../evil.bin", b"x")], "escapes the bundle")


def test_tar_absolute_path_is_refused(refuse) -> None:
    refuse([entry("/etc/cron.d/evil", b"x")], "'/etc/cron.d/evil'", "absolute path")


def test_tar_long_pax_path_with_parent_directory_is_refused(refuse) -> None:
    refuse([entry("payload/" + "d/" * 60 + "../" * 70 + "evil.bin", b"x")],
           "escapes the bundle")


def test_tar_symlink_is_refused(refuse) -> None:
    refuse([entry("payload/link.bin", kind=tarfile.SYMTYPE, link="/etc/shadow")],
           "'payload/link.bin'", "symbolic link")


def test_tar_hard_link_is_refused(refuse) -> None:
    refuse([entry("payload/hard.bin", kind=tarfile.LNKTYPE, link="payload/weights.bin")],
           "'payload/hard.bin'", "hard link")


def test_tar_character_device_is_refused(refuse) -> None:
    refuse([entry("payload/mem", kind=tarfile.CHRTYPE)], "'payload/mem'", "device")


def test_tar_block_device_is_refused(refuse) -> None:
    refuse([entry("payload/sda", kind=tarfile.BLKTYPE)], "'payload/sda'", "device")


def test_tar_fifo_is_refused(refuse) -> None:
    refuse([entry("payload/pipe", kind=tarfile.FIFOTYPE)], "'payload/pipe'", "FIFO")


def test_tar_duplicate_path_is_refused(refuse) -> None:
    refuse([entry("payload/weights.bin", b"second copy")], "duplicate path",
           "'payload/weights.bin'")


def test_tar_duplicate_path_with_dot_prefix_is_refused(refuse) -> None:
    refuse([entry("./payload/weights.bin", b"second copy")], "duplicate path")


def test_tar_case_colliding_files_are_refused(refuse) -> None:
    refuse([entry("a/B.bin", b"1"), entry("a/b.bin", b"2")], "'a/B.bin'", "'a/b.bin'",
           "differ only by case")


def test_tar_case_colliding_directories_are_refused(refuse) -> None:
    refuse([entry("Payload/x.bin", b"1")], "'payload'", "'Payload'", "differ only by case")


def test_tar_file_and_directory_at_one_path_are_refused(refuse) -> None:
    refuse([entry("payload/weights.bin/inner.bin", b"1")], "both a file and a directory")


def test_tar_unknown_member_type_is_refused(refuse) -> None:
    refuse([entry("payload/odd", b"zz", kind=b"Z")], "'payload/odd'", "not a regular file")


def test_tar_sparse_member_is_refused(refuse) -> None:
    refuse([entry("payload/sparse.bin", b"s" * 512, kind=tarfile.GNUTYPE_SPARSE)],
           "'payload/sparse.bin'", "not a regular file", fmt=tarfile.GNU_FORMAT)


def test_tar_control_character_in_name_is_refused(refuse) -> None:
    refuse([entry("payload/evil\nerror: all good.bin", b"x")], "control character")


def test_tar_backslash_in_name_is_refused(refuse) -> None:
    refuse([entry("..\\..\\evil.bin", b"x")], "backslash")


def test_tar_non_normalised_name_is_refused(refuse) -> None:
    refuse([entry("payload//double.bin", b"x")], "not a normalised path")


def test_tar_member_data_past_the_end_is_refused(tmp_path) -> None:
    tar = make_tar(tmp_path / "cut.tar", good_entries())
    data = tar.read_bytes()
    second_header = data.index(b"payload/weights.bin")
    tar.write_bytes(data[:second_header + 512 + 1024])  # header kept, most data gone
    assert_refused(tar, tmp_path / "store", "cut.tar", "truncated")


def test_compressed_tar_is_refused(tmp_path) -> None:
    plain = make_tar(tmp_path / "plain.tar", good_entries())
    gz = tmp_path / "bundle.tar"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert_refused(gz, tmp_path / "store", "bundle.tar", "not a readable uncompressed tar")


def test_random_bytes_are_not_a_bundle(tmp_path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    assert_refused(junk, tmp_path / "store", "not a readable uncompressed tar")


# --- hostile directories ----------------------------------------------------------------

def write_dir(root: Path, files: dict[str, bytes] = GOOD) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_directory_symlink_to_file_is_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    (root / "payload/link.bin").symlink_to("/etc/passwd")
    assert_refused(root, tmp_path / "store", "'payload/link.bin'", "symbolic link")


def test_directory_symlink_to_directory_is_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    (root / "payload/etc").symlink_to("/etc", target_is_directory=True)
    assert_refused(root, tmp_path / "store", "'payload/etc'", "symbolic link")


def test_directory_fifo_is_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    os.mkfifo(root / "payload/pipe")
    assert_refused(root, tmp_path / "store", "'payload/pipe'", "FIFO")


def test_directory_socket_is_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "payload/s"))
        assert_refused(root, tmp_path / "store", "'payload/s'", "socket")
    finally:
        sock.close()


def test_directory_case_colliding_files_are_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b", {**GOOD, "a/B.bin": b"1", "a/b.bin": b"2"})
    assert_refused(root, tmp_path / "store", "differ only by case")


def test_directory_file_swapped_for_symlink_after_listing_is_refused(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    media = open_media(root)
    (root / "payload").rename(root / "elsewhere")
    (root / "payload").symlink_to(root / "elsewhere", target_is_directory=True)
    with pytest.raises(BundleRefused) as err:
        media.open("payload/weights.bin")
    assert "cannot open 'payload/weights.bin'" in str(err.value)


# --- reading good media in place ---------------------------------------------------------

@pytest.fixture(params=["dir", "tar"])
def good_media(request, tmp_path: Path):
    root = write_dir(tmp_path / "b")
    if request.param == "dir":
        return open_media(root)
    tar = tmp_path / "b.tar"
    make_tar(tar, [entry(".", kind=tarfile.DIRTYPE), entry("./metadata", kind=tarfile.DIRTYPE),
                   *[entry("./" + n, d) for n, d in GOOD.items()]])
    return open_media(tar)


def test_listing_has_every_regular_file_with_its_size(good_media) -> None:
    assert [(f.relpath, f.size) for f in good_media.list_files()] == \
        sorted((n, len(d)) for n, d in GOOD.items())


def test_open_reads_exact_bytes(good_media) -> None:
    for name, data in GOOD.items():
        with good_media.open(name) as f:
            assert f.read() == data


def test_read_bytes_enforces_the_size_limit(good_media) -> None:
    assert good_media.read_bytes("metadata/root.json", 100) == GOOD["metadata/root.json"]
    with pytest.raises(BundleRefused) as err:
        good_media.read_bytes("payload/weights.bin", 1000)
    assert "'payload/weights.bin' is over the 1000-byte limit" in str(err.value)


def test_unlisted_path_is_refused(good_media) -> None:
    for bad in ("payload/none.bin", "../b.tar", "metadata"):
        with pytest.raises(BundleRefused) as err:
            good_media.open(bad)
        assert f"no file {bad!r} on the media" in str(err.value)


def test_tar_members_read_concurrently_by_offset(tmp_path) -> None:
    payload = {f"p/{i}.bin": os.urandom(300_000 + i) for i in range(6)}
    tar = make_tar(tmp_path / "b.tar", [entry(n, d) for n, d in payload.items()])
    media = TarMedia(tar)
    results: dict[str, bytes] = {}

    def read(name: str) -> None:
        with media.open(name) as f:
            buf = bytearray(len(payload[name]) + 10)
            view, got = memoryview(buf), 0
            while n := f.readinto(view[got:]):
                got += n
            results[name] = bytes(buf[:got])

    threads = [threading.Thread(target=read, args=(n,)) for n in payload]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == payload


def test_tar_replaced_after_listing_is_refused(tmp_path) -> None:
    tar = make_tar(tmp_path / "b.tar", good_entries())
    media = TarMedia(tar)
    make_tar(tmp_path / "other.tar", [entry("metadata/root.json", b"{}")])
    os.replace(tmp_path / "other.tar", tar)
    with pytest.raises(BundleRefused) as err:
        media.open("metadata/root.json")
    assert "the tar changed since it was listed" in str(err.value)


def test_directory_media_label_names_the_bundle(tmp_path) -> None:
    root = write_dir(tmp_path / "b")
    assert DirectoryMedia(root).label == str(root)


# --- finding bundles on removable media --------------------------------------------------

# util-linux 2.32 (RHEL 8): flags as strings, one MOUNTPOINT.
LSBLK_2_32 = """{
   "blockdevices": [
      {"name": "sda", "rm": "0", "hotplug": "0", "tran": "sata", "type": "disk",
       "mountpoint": null,
         "children": [
            {"name": "sda1", "rm": "0", "hotplug": "0", "tran": null, "type": "part",
             "mountpoint": "/boot"},
            {"name": "sda2", "rm": "0", "hotplug": "0", "tran": null, "type": "part",
             "mountpoint": "/"}
         ]
      },
      {"name": "sdb", "rm": "1", "hotplug": "1", "tran": "usb", "type": "disk",
       "mountpoint": null,
         "children": [
            {"name": "sdb1", "rm": "1", "hotplug": "1", "tran": null, "type": "part",
             "mountpoint": "/run/media/it/VENDOR USB"}
         ]
      },
      {"name": "sr0", "rm": "1", "hotplug": "1", "tran": "sata", "type": "rom",
       "mountpoint": null}
   ]
}"""

# util-linux 2.38 (Debian 12): booleans; a USB SSD reports rm false but tran usb.
LSBLK_2_38 = """{
   "blockdevices": [
      {"name": "nvme0n1", "rm": false, "hotplug": false, "tran": "nvme", "type": "disk",
       "mountpoint": null,
         "children": [
            {"name": "nvme0n1p1", "rm": false, "hotplug": false, "tran": "nvme",
             "type": "part", "mountpoint": "/"}
         ]
      },
      {"name": "sdc", "rm": false, "hotplug": true, "tran": "usb", "type": "disk",
       "mountpoint": "/media/usb-ssd"}
   ]
}"""

# Recorded on the development container: a virtual disk and zram, nothing removable.
LSBLK_CONTAINER = """{
   "blockdevices": [
      {"name": "zram0", "rm": false, "hotplug": false, "tran": null, "mountpoint": null,
       "fstype": null, "label": null, "size": "0B", "type": "disk"},
      {"name": "vda", "rm": false, "hotplug": false, "tran": null, "mountpoint": "/",
       "fstype": null, "label": null, "size": "256G", "type": "disk"}
   ]
}"""


def test_parse_lsblk_string_flags_and_partitions() -> None:
    assert parse_lsblk(LSBLK_2_32) == [Path("/run/media/it/VENDOR USB")]


def test_parse_lsblk_boolean_flags_and_usb_transport() -> None:
    assert parse_lsblk(LSBLK_2_38) == [Path("/media/usb-ssd")]


def test_parse_lsblk_recorded_container_has_no_removable_media() -> None:
    assert parse_lsblk(LSBLK_CONTAINER) == []


def test_parse_lsblk_mountpoints_list_and_bad_text() -> None:
    newer = {"blockdevices": [{"name": "sdd", "rm": True, "mountpoints": ["/mnt/a", None]}]}
    assert parse_lsblk(json.dumps(newer)) == [Path("/mnt/a")]
    assert parse_lsblk("lsblk: not found") == []
    assert parse_lsblk('{"blockdevices": "nonsense"}') == []


def test_parse_proc_mounts_unescapes_and_filters() -> None:
    text = ("/dev/vda / ext4 rw,relatime 0 0\n"
            "proc /proc proc rw 0 0\n"
            "/dev/sdb1 /media/it/VENDOR\\040USB vfat rw,nosuid 0 0\n")
    assert parse_proc_mounts(text, lambda dev: dev == "/dev/sdb1") == \
        [Path("/media/it/VENDOR USB")]


def test_sysfs_removable_reads_the_flag_and_the_usb_path(tmp_path) -> None:
    sys_root = tmp_path / "sys"
    usb = sys_root / "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/block/sdb"
    (usb / "sdb1").mkdir(parents=True)
    (usb / "removable").write_text("0\n")
    sata = sys_root / "devices/pci0000:00/0000:00:17.0/ata1/host0/block/sda"
    (sata / "sda1").mkdir(parents=True)
    (sata / "removable").write_text("0\n")
    card = sys_root / "devices/platform/mmc0/block/mmcblk0"
    card.mkdir(parents=True)
    (card / "removable").write_text("1\n")
    links = sys_root / "class/block"
    links.mkdir(parents=True)
    for name, target in (("sdb1", usb / "sdb1"), ("sda1", sata / "sda1"), ("mmcblk0", card)):
        (links / name).symlink_to(target)
    assert sysfs_removable("/dev/sdb1", sys_root)
    assert sysfs_removable("/dev/mmcblk0", sys_root)
    assert not sysfs_removable("/dev/sda1", sys_root)
    assert not sysfs_removable("/dev/missing", sys_root)


def test_real_removable_scan_does_not_fail() -> None:
    mounts = removable_mounts()
    assert all(isinstance(m, Path) for m in mounts)
    assert all(isinstance(b, Path) for b in find_bundles())


def test_find_bundles_in_extra_paths(tmp_path) -> None:
    stick = tmp_path / "stick"
    write_dir(stick / "release-2")
    make_tar(stick / "release-3.tar", good_entries())
    make_tar(stick / "notes.tar", [entry("readme.txt", b"hello")])
    write_dir(stick / "photos", {"cat.jpg": b"\xff\xd8"})
    write_dir(stick / "deep/er/still-deeper", GOOD)  # beyond the search depth
    (stick / "linked").symlink_to(stick / "release-2", target_is_directory=True)
    gz = stick / "release-4.tar"
    gz.write_bytes(gzip.compress((stick / "release-3.tar").read_bytes()))
    assert find_bundles([stick]) == [stick / "release-2", stick / "release-3.tar"]
    assert find_bundles([stick / "release-3.tar"]) == [stick / "release-3.tar"]
