"""The vendor's and the hospital's path through the real CLI, with only documented commands
(bundles/FORMAT.md): keygen, init-repo, add-component, k-of-n sign, publish to a tar;
trust init, trust show, media scan, media import; refusals exit non-zero in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.bundle.trust import fingerprint
from appliance.clock import Clock
from tests.bundle.bundlekit import tiny_adapter, tiny_base
from tests.conftest import PASSWORD, cli_env

# The code under test, whichever checkout or worktree runs the tests (as tests/cli does).
APPLIANCE = [sys.executable, "-m", "appliance"]


@pytest.fixture
def clock() -> Clock:
    """The CLI subprocess reads the real clock; the appliance is made on it too."""
    return Clock()


def run(home: Path, *args: str, user: str | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    extra = ["--user", user, "--password-stdin"] if user else []
    return subprocess.run([*APPLIANCE, *args, *extra], input=(PASSWORD + "\n") if user else stdin,
                          capture_output=True, text=True, env=cli_env(home), timeout=120)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


def test_vendor_to_import_through_cli(tmp_path, appliance, make_user):
    home = appliance.layout.root
    make_user(["security"], "sam")
    make_user(["it"], "ivan")
    v = tmp_path / "vendor"
    for k in ("root-a", "root-b", "targets", "online"):
        ok(run(home, "bundle", "keygen", str(v / f"{k}.pem")))
    repo = v / "repo"
    ok(run(home, "bundle", "init-repo", str(repo), "--name", "clinical-notes",
           "--publisher", "Acme Medical AI", "--root-key", str(v / "root-a.pub.pem"),
           "--root-key", str(v / "root-b.pub.pem"), "--root-threshold", "2",
           "--targets-key", str(v / "targets.pub.pem"), "--online-key", str(v / "online.pub.pem")))
    base, adapter = tiny_base(tmp_path / "src" / "base"), tiny_adapter(tmp_path / "src" / "lora")
    ok(run(home, "bundle", "add-component", str(repo), "--kind", "base_model", "--path", str(base),
           "--name", "notes-base", "--key", str(v / "targets.pem"), "--tag", "cpu"))
    r = ok(run(home, "bundle", "add-component", str(repo), "--kind", "lora_adapter", "--path",
               str(adapter), "--name", "notes-lora", "--base-model", "notes-base",
               "--key", str(v / "targets.pem"), "--json"))
    assert json.loads(r.stdout)["custom"]["base_model"]["name"] == "notes-base"
    for k in ("root-a", "targets", "online"):
        ok(run(home, "bundle", "sign", str(repo), "--key", str(v / f"{k}.pem")))
    # One root key of two: publishing is refused until the second root key signs.
    r = run(home, "bundle", "publish", str(repo), "--to", str(tmp_path / "usb" / "b.tar"))
    assert r.returncode == 2 and "root has 1 of 2 signatures" in r.stderr
    ok(run(home, "bundle", "sign", str(repo), "--key", str(v / "root-b.pem")))
    status = json.loads(ok(run(home, "bundle", "status", str(repo), "--json")).stdout)
    assert all(s["complete"] for s in status)
    tar = tmp_path / "usb" / "b.tar"
    tar.parent.mkdir()
    ok(run(home, "bundle", "publish", str(repo), "--to", str(tar)))

    root = repo / "published" / "1.root.json"
    fp = fingerprint(root.read_bytes())
    r = run(home, "trust", "init", "--root", str(root), "--expect-fingerprint", "00" * 32,
            "--acknowledge-statement", user="sam")
    assert r.returncode == 8 and r.stderr.count("\n") == 1 and "fingerprint differs" in r.stderr
    r = ok(run(home, "trust", "init", "--root", str(root), "--expect-fingerprint", fp,
               "--acknowledge-statement", user="sam"))
    assert fp in r.stdout
    shown = json.loads(ok(run(home, "trust", "show", "--json", user="ivan")).stdout)
    assert {r["role"]: r["threshold"] for r in shown["roles"]}["root"] == 2
    assert shown["publishers"][0]["kinds"][0] == "base_model"

    scan = json.loads(ok(run(home, "media", "scan", "--path", str(tar), "--json",
                             user="ivan")).stdout)
    assert [(e["name"], e["version"], e["status"]) for e in scan] == [("clinical-notes", 1, "new")]
    assert sorted(c["kind"] for c in scan[0]["components"]) == ["base_model", "lora_adapter"]
    r = run(home, "media", "import", str(tar), "--json", user="sam")
    assert r.returncode == 5       # security may not import: role it only
    res = json.loads(ok(run(home, "media", "import", str(tar), "--json", user="ivan")).stdout)
    assert res["state"] == "IMPORTED" and res["files_copied"] == 5
    scan = json.loads(ok(run(home, "media", "scan", "--path", str(tar), "--json",
                             user="ivan")).stdout)
    assert scan[0]["status"] == "imported"
    listed = json.loads(ok(run(home, "media", "list", "--json", user="ivan")).stdout)
    assert [(b["name"], b["state"]) for b in listed] == [("clinical-notes", "IMPORTED")]


def test_import_refusal_is_one_line(tmp_path, appliance, make_user):
    home = appliance.layout.root
    make_user(["it"], "ivan")
    r = run(home, "media", "import", str(tmp_path / "nothing"), user="ivan")
    assert r.returncode == 8
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_scan_shows_media_text_escaped(tmp_path, appliance, make_user):
    """A media folder name (like any text from media) cannot forge a line of the listing."""
    make_user(["it"], "ivan")
    media = tmp_path / "usb\nFORGED: clinical-notes v9 [new]"
    (media / "metadata").mkdir(parents=True)
    r = ok(run(appliance.layout.root, "media", "scan", "--path", str(media), user="ivan"))
    assert "REFUSED" in r.stdout and "\\nFORGED" in r.stdout
    assert not any(line.startswith("FORGED") for line in r.stdout.splitlines())


def test_trust_init_reads_only_a_small_regular_file(tmp_path, appliance, make_user):
    """A FIFO would hang the command and a huge file exhaust memory: both are refused in
    one line before anything is read whole."""
    import os
    make_user(["security"], "sam")
    fifo, big = tmp_path / "root.fifo", tmp_path / "big.json"
    os.mkfifo(fifo)
    big.write_bytes(b" " * (64 * 1024 + 1))
    for path, expect in ((fifo, "is not a regular file"), (tmp_path, "is not a regular file"),
                         (big, "over the 65536-byte limit")):
        r = subprocess.run([*APPLIANCE, "trust", "init", "--root", str(path), "--user", "sam",
                            "--password-stdin", "--expect-fingerprint", "00" * 32],
                           input=PASSWORD + "\n", capture_output=True, text=True,
                           env=cli_env(appliance.layout.root), timeout=30)
        assert r.returncode == 2 and expect in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
