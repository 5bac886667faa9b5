"""`appliance update ...` through the real entry point (subprocesses), on a real appliance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from appliance.settings import save_settings
from tests.conftest import ADMIN, PASSWORD, cli_env
from tests.updates.kit import H100_READING, trust_and_import


def run(home, *args, password=PASSWORD, user=ADMIN):
    env = {**cli_env(home), "APPLIANCE_GPU_READING": str(H100_READING)}
    return subprocess.run([sys.executable, "-m", "appliance", "update", *args, "--user", user,
                           "--password-stdin"], input=password + "\n", capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def imported(app, security, itop, media):
    refs = trust_and_import(app, security, itop, media, 1, 2)
    save_settings(app.layout.config, app.settings)    # the gates, for the CLI's processes
    app.close()      # the CLI opens the appliance itself
    return refs


def test_cli_review_approve_install_and_roll_back(home, imported) -> None:
    ref1, ref2 = imported
    listed = json.loads(run(home, "list", "--json").stdout)
    assert [r["ref"] for r in listed] == [ref2, ref1]
    assert {r["state"] for r in listed} == {"IMPORTED"}

    early = run(home, "approve", ref1, "--reason", "looks fine", "--acknowledge-statement")
    assert early.returncode == 10
    assert early.stderr.startswith("error: demo-clinical@1 is IMPORTED: approve is allowed "
                                   "only while it is PENDING_APPROVAL")
    assert early.stderr.count("\n") == 1

    shown = run(home, "show", ref1)
    assert shown.returncode == 0, shown.stderr
    for text in ("PENDING_APPROVAL", "publisher: Demo Vendor", "first install",
                 "fits tiny-engine-h100: engine sm_90 tp1 fits", "exact_match = 0.9",
                 "update.submitted", "approvals: 0 of 1"):
        assert text in shown.stdout, text
    approved = run(home, "approve", ref1, "--reason", "evidence meets the gates",
                   "--acknowledge-statement", "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["signature"]["name"] == "Alice Adams"
    installed = run(home, "install", ref1)
    assert installed.returncode == 0, installed.stderr
    assert "activated" in installed.stdout and "hard links" in installed.stdout
    assert "not restarted: no service manager is configured yet" in installed.stdout

    assert run(home, "show", ref2).returncode == 0
    assert run(home, "approve", ref2, "--reason", "ok").returncode == 0
    assert run(home, "install", ref2).returncode == 0
    assert os.readlink(home / "releases" / "current") == "demo-clinical/2"

    wrong = run(home, "rollback", ref1, "--reason", "regression", password="nope nope nope")
    assert wrong.returncode == 4 and wrong.stderr.startswith("error: ")
    back = run(home, "rollback", ref1, "--reason", "regression on ward notes", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["outcome"] == "activated"
    st = json.loads(run(home, "status", "--deep", "--json").stdout)
    assert st["consistent"] and st["current"] == "demo-clinical/1"
    assert st["active"]["ref"] == ref1
    text = run(home, "status").stdout
    assert "active: demo-clinical@1" in text and "consistent: yes" in text


def test_cli_a_check_that_rejects_the_bundle_exits_non_zero(home, app, security, itop,
                                                            media) -> None:
    """It printed REJECTED and exited 0, so `update check REF && ...` went on."""
    (ref,) = trust_and_import(app, security, itop, media, 3)  # evidence fails the gate
    save_settings(app.layout.config, app.settings)
    app.close()
    r = run(home, "check", ref)
    assert r.returncode == 10, r.stderr
    assert r.stdout.startswith(f"{ref}: REJECTED (")
    assert r.stderr.startswith(f"error: {ref} is rejected: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_cli_reject_needs_a_signature_and_reason(home, imported) -> None:
    ref1, _ = imported
    assert run(home, "show", ref1).returncode == 0
    missing = subprocess.run([sys.executable, "-m", "appliance", "update", "reject", ref1,
                              "--user", ADMIN, "--password-stdin"], input=PASSWORD + "\n",
                             capture_output=True, text=True, env=cli_env(home), timeout=60)
    assert missing.returncode == 2 and "Missing option '--reason'" in missing.stderr
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    out = run(home, "reject", ref1, "--reason", "wrong base model for this site",
              "--acknowledge-statement")
    assert out.returncode == 0, out.stderr
    assert "REJECTED; signed by Alice Adams" in out.stdout
    shown = json.loads(run(home, "show", ref1, "--json").stdout)
    assert shown["bundle"]["state"] == "REJECTED"
    assert shown["history"][-1]["signature"].startswith("rejected by Alice Adams")


def test_cli_a_reference_or_state_that_names_nothing_is_one_line(home, appliance) -> None:
    appliance.close()      # the CLI opens the appliance itself
    for args in (("install", "99999999999999999999999"),
                 ("check", "demo-clinical@99999999999999999999"),
                 ("show", "demo-clinical@99999999999999999999")):
        out = run(home, *args)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"error: no bundle {args[1]!r}")
        assert out.stderr.count("\n") == 1, out.stderr
    bogus = run(home, "list", "--state", "BOGUS")
    assert bogus.returncode == 2 and bogus.stdout == ""
    assert bogus.stderr == ("error: unknown state 'BOGUS' (choose from IMPORTED, VERIFIED, "
                            "EVALUATED, PENDING_APPROVAL, APPROVED, INSTALLING, ACTIVE, "
                            "REJECTED, ROLLED_BACK)\n")
    empty = run(home, "list", "--state", "active")
    assert empty.returncode == 0 and empty.stdout == "no bundles in state ACTIVE\n"
