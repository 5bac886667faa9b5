"""Find bundles on mounted removable media (lsblk, /proc/mounts and sysfs), before any copy.

Detection only lists candidates; whether one is safe to read is decided by `open_media`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

LSBLK_COLUMNS = "NAME,RM,HOTPLUG,TRAN,TYPE,MOUNTPOINT"
SEARCH_DEPTH = 2  # a stick may hold several bundles, one folder down
MAX_TAR_HEADERS = 64  # `metadata/` comes first in a published tar; don't walk a huge one


def _truthy(value: object) -> bool:
    # lsblk before util-linux 2.33 prints "1"/"0" strings; later versions print booleans.
    return value is True or value in ("1", "true", 1)


def parse_lsblk(text: str) -> list[Path]:
    """Mount points of removable, hot-plugged or USB block devices (and their partitions)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    found: list[Path] = []

    def visit(devices: object, inherited: bool) -> None:
        if not isinstance(devices, list):
            return
        for dev in devices:
            if not isinstance(dev, dict):
                continue
            removable = inherited or _truthy(dev.get("rm")) or _truthy(dev.get("hotplug")) \
                or dev.get("tran") == "usb"
            if removable:
                points = dev.get("mountpoints") or [dev.get("mountpoint")]
                found.extend(Path(p) for p in points if isinstance(p, str) and p)
            visit(dev.get("children"), removable)

    visit(data.get("blockdevices") if isinstance(data, dict) else None, False)
    return found


def _unescape_mount(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def sysfs_removable(device: str, sys_root: Path = Path("/sys")) -> bool:
    """True when /dev/<device> is a removable disk or sits on a USB bus, according to sysfs."""
    name = Path(device).name
    block = sys_root / "class" / "block" / name
    try:
        real = block.resolve(strict=True)
    except OSError:
        return False
    disk = real if (real / "removable").exists() else real.parent
    try:
        if (disk / "removable").read_text().strip() == "1":
            return True
    except OSError:
        pass
    return "/usb" in str(real)


def parse_proc_mounts(text: str, is_removable: Callable[[str], bool]) -> list[Path]:
    """Mount points in /proc/mounts whose /dev device `is_removable` accepts."""
    found: list[Path] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/dev/") and is_removable(fields[0]):
            found.append(Path(_unescape_mount(fields[1])))
    return found


def removable_mounts() -> list[Path]:
    """Mount points of removable media on this machine; never fails, may be empty."""
    mounts: list[Path] = []
    lsblk = shutil.which("lsblk")
    if lsblk:
        try:
            out = subprocess.run([lsblk, "--json", "-o", LSBLK_COLUMNS], capture_output=True,
                                 text=True, timeout=10, check=False)
            mounts += parse_lsblk(out.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        mounts += parse_proc_mounts(Path("/proc/mounts").read_text(), sysfs_removable)
    except OSError:
        pass
    return list(dict.fromkeys(mounts))


def tar_has_metadata(path: Path) -> bool:
    """Whether an uncompressed tar holds a `metadata/` folder, looking at a few headers."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            for _ in range(MAX_TAR_HEADERS):
                member = tar.next()
                if member is None:
                    return False
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name == "metadata" or name.startswith("metadata/"):
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def is_bundle(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.is_dir():
        meta = path / "metadata"
        return meta.is_dir() and not meta.is_symlink()
    return path.is_file() and path.suffix == ".tar" and tar_has_metadata(path)


def _search(root: Path, depth: int, out: list[Path]) -> None:
    if is_bundle(root):
        out.append(root)
        return
    if depth <= 0 or root.is_symlink() or not root.is_dir():
        return
    try:
        children = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in children:
        if entry.name.startswith("."):
            continue
        _search(Path(entry.path), depth - 1, out)


def search(roots: list[Path]) -> list[Path]:
    """Bundles (directories or tars holding `metadata/`) at or a few levels under `roots`."""
    found: list[Path] = []
    for root in roots:
        _search(Path(root), SEARCH_DEPTH, found)
    return list(dict.fromkeys(found))


def find_bundles(extra_paths: list[Path] | None = None) -> list[Path]:
    """Bundles on removable mounts and extra paths."""
    return search([*removable_mounts(), *(Path(p) for p in extra_paths or [])])
