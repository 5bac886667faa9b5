"""Building blocks for provisioning tests: a local wheelhouse, release dirs, variables."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

PROBE = "appliance-probe"
PROBE_VERSION = "1.0"


def build_wheel(dest: Path, name: str = "appliance_probe", version: str = PROBE_VERSION
                ) -> Path:
    """A real, installable pure-Python wheel written by hand: no build backend, no index."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n',
        f"{dist}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        raw = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(raw)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), text)
    return out


def make_release(root: Path, version: str, name: str = "demo") -> Path:
    """What the lifecycle lays out: releases/<name>/<version>/ under the appliance home."""
    rel = root / "var/lib/appliance/releases" / name / version
    (rel / "model").mkdir(parents=True)
    (rel / "model" / "config.json").write_text(f'{{"version": "{version}"}}\n')
    return rel


def make_root(base: Path, name: str = "root") -> Path:
    """A scratch appliance_root holding release 1.0.0 and an audit DB with loose modes."""
    root = base / name
    make_release(root, "1.0.0")
    db = root / "var/lib/appliance/appliance.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    keys = root / "var/lib/appliance/keys"
    keys.mkdir()
    (keys / "signing.pem").write_text("not a real key\n")
    (keys / "signing.pem").chmod(0o644)
    return root


def site_vars(wheelhouse: Path, **more: Any) -> dict[str, Any]:
    """Variables for site.yml on a CI machine: CPU profile, small minimums, the test wheel."""
    return {
        "appliance_serving_profile": "vllm-cpu",
        "appliance_wheelhouse": str(wheelhouse),
        "appliance_runtime_packages": [f"{PROBE}=={PROBE_VERSION}"],
        "appliance_release": "demo/1.0.0",
        "appliance_min_cpus": 1,
        "appliance_min_memory_mb": 256,
        "appliance_min_disk_free_gb": 0.1,
        **more,
    }


def live_processes(needle: str) -> list[str]:
    """`ps` lines whose command contains needle, zombies excluded.

    A killed orphan stays a zombie until init reaps it; in sandboxes whose pid 1 never
    reaps, that can be forever. A zombie runs nothing and holds nothing but its exit code.
    """
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines()
            if needle in line and not line.split()[1].startswith("Z")
            and "ps -eo" not in line]
