"""The playbooks pass ansible-lint's production profile, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "NO_COLOR": "1", "ANSIBLE_HOME": str(tmp_path / "ansible"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([str(bin_dir / "ansible-lint"), "--offline", "--profile", "production",
                        "--nocolor", "."], cwd=PLAYBOOKS, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr
    # Nothing was written into the playbooks (caches, collections) by the linter.
    assert not (PLAYBOOKS / ".ansible").exists()
