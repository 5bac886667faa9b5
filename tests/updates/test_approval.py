"""The approval view and the signed approval or rejection (11.50, 11.70, 11.10(f), (g))."""

from __future__ import annotations

import pytest

from appliance.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermissionDenied,
    UpdateRefused,
)
from appliance.hardware import RecordedSource
from appliance.identity.signatures import binds, signatures_for
from appliance.services import updates
from appliance.services.signing import SignatureRequest
from appliance.updates.approval import approval_record
from appliance.updates.install import Edges
from appliance.updates.lifecycle import State, find_bundle
from appliance.updates.view import view_text
from tests.conftest import ADMIN
from tests.updates.kit import a100, approve, h100, sign_req, trust_and_import
from tests.updates.test_lifecycle import events


@pytest.fixture
def pending(app, admin_session, security, itop, media):
    """v1 installed and active, v2 imported (IMPORTED)."""
    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    approve(app, admin_session, ref1)
    assert updates.install(app, admin_session, ref1, Edges(source=h100())).outcome == \
        "activated"
    return ref2


def test_approval_view_shows_what_the_approver_needs(app, admin_session, pending) -> None:
    view = updates.show(app, admin_session, pending, source=h100())
    assert view["publisher"] == "Demo Vendor"
    assert {s["method"] for s in view["signers"]} == {"key"}
    assert all(len(s["keyid"]) == 64 for s in view["signers"])
    assert view["version"]["relation"] == "upgrade from version 1"
    assert view["version"]["active"] == "demo-clinical@1"
    diff = {c["name"]: c for c in view["components"]}
    assert diff["tiny-adapter"]["change"] == "changed"
    assert diff["tiny-adapter"]["old_digest"] != diff["tiny-adapter"]["digest"]
    assert diff["tiny-adapter"]["base_model"]["name"] == "tiny-base"
    assert diff["tiny-adapter"]["base_model"]["where"] == "this bundle"
    assert diff["shard-golden"]["change"] == "added" and diff["shard-golden"]["files"] == 90
    assert diff["old-golden"]["change"] == "removed"
    assert diff["tiny-base"]["change"] == "unchanged" and diff["tiny-base"]["size"] > 0
    hw = view["hardware"]
    assert hw["chosen"] == "tiny-engine-h100"
    reasons = {c["profile_id"]: c["reason"] for c in hw["candidates"]}
    assert reasons["tiny-engine-h100"].startswith("engine sm_90 tp1 fits")
    assert reasons["tiny-base-cpu"] == "cpu profile runs without a GPU"
    assert view["evaluation"]["passed"] is True
    actions = [h["action"] for h in view["history"]]
    assert actions[:4] == ["media.import", "update.verified", "update.evaluated",
                           "update.submitted"]
    [viewed] = events(app, "update.viewed", pending)
    assert viewed["details"]["profile"] == "tiny-engine-h100"
    assert viewed["target"]["digest"] == view["bundle"]["digest"]
    # The hardware choice and every reason are in the trail too.
    fit = events(app, "hardware.fit", pending)[-1]
    assert fit["details"]["chosen"] == "tiny-engine-h100"


def test_a_fit_on_a_replayed_reading_says_so(app, admin_session, pending) -> None:
    """The view (and the approval's event) said "on 8 H100 (sm_90)" for a reading replayed
    from a file, on a host that may have no GPU: where the reading came from goes with it."""
    view = updates.show(app, admin_session, pending, source=h100())
    assert view["hardware"]["source"] == "recorded:h100-sxm-80gb-x8.json"
    assert "hardware: chose tiny-engine-h100: GPU-specific engine sm_90 tp1 on 8 H100 (sm_90); " \
        "1 other profile also fit (replayed reading: recorded:h100-sxm-80gb-x8.json)" in \
        view_text(view).splitlines()
    updates.approve(app, admin_session, pending, sign_req(ADMIN), source=h100())
    [approved] = events(app, "update.approved", pending)
    assert approved["details"]["hardware"]["source"] == "recorded:h100-sxm-80gb-x8.json"


def test_a_reading_that_cannot_be_read_moves_no_bundle_on(app, admin_session, security, itop,
                                                         media, tmp_path) -> None:
    """`update show --reading BAD` on an imported bundle verified, evaluated and submitted it
    (IMPORTED to PENDING_APPROVAL, three events) and only then refused the reading: an error
    line for a command that had changed the bundle. The reading is read first."""
    [ref] = trust_and_import(app, security, itop, media, 1)
    bad = tmp_path / "reading.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="is unreadable"):
        updates.show(app, admin_session, ref, source=RecordedSource(bad))
    assert find_bundle(app.conn, ref).state == State.IMPORTED
    assert [e["action"] for e in events(app, target=ref)] == ["media.import"]
    assert updates.show(app, admin_session, ref, source=h100())["bundle"]["state"] == \
        "PENDING_APPROVAL"


def test_the_approver_must_open_the_view_first(app, admin_session, pending) -> None:
    updates.check(app, admin_session, pending)
    with pytest.raises(UpdateRefused, match="has not opened the approval view") as refused:
        updates.approve(app, admin_session, pending, sign_req(ADMIN), source=h100())
    # The hint names the step on both faces: the CLI command and the console's key.
    assert f"appliance update show {pending}" in refused.value.hint
    assert "`o` in the console" in refused.value.hint
    assert events(app, "update.refused", pending)[-1]["details"]["step"] == "approve"
    updates.show(app, admin_session, pending, source=h100())
    result = updates.approve(app, admin_session, pending, sign_req(ADMIN), source=h100())
    assert result["state"] == "APPROVED"


def test_a_view_on_other_hardware_does_not_count(app, admin_session, pending) -> None:
    updates.show(app, admin_session, pending, source=a100())   # no sm_90 engine fits: cpu
    with pytest.raises(UpdateRefused, match="profile tiny-engine-h100"):
        updates.approve(app, admin_session, pending, sign_req(ADMIN), source=h100())


def test_an_engine_built_for_another_tensorrt_llm_is_not_chosen(app, admin_session,
                                                                pending) -> None:
    """An engine runs only on the TensorRT-LLM version that built it: with the appliance's
    runtime configured (updates.trtllm_runtime), the H100 engine built with 0.17.0 is not
    chosen on a host serving 0.18.1, and the view and the trail say why."""
    import dataclasses

    app.settings = dataclasses.replace(app.settings, updates=dataclasses.replace(
        app.settings.updates, trtllm_runtime="0.18.1"))
    assert updates.trtllm_runtime(app.settings.updates) == {"0.18.1"}
    hw = updates.show(app, admin_session, pending, source=h100())["hardware"]
    assert hw["chosen"] == "tiny-base-cpu"
    engine = next(c for c in hw["candidates"] if c["profile_id"] == "tiny-engine-h100")
    assert engine["check"] == "trtllm_version" and not engine["fits"]
    assert engine["reason"].endswith("was built with TensorRT-LLM 0.17.0, this appliance "
                                     "runs 0.18.1")
    fit = events(app, "hardware.fit", pending)[-1]["details"]
    assert fit["supported_trtllm"] == ["0.18.1"] and fit["chosen"] == "tiny-base-cpu"
    app.settings = dataclasses.replace(app.settings, updates=dataclasses.replace(
        app.settings.updates, trtllm_runtime="0.17.0"))
    assert updates.show(app, admin_session, pending, source=h100())["hardware"]["chosen"] == \
        "tiny-engine-h100"


def test_the_importer_may_not_approve(app, admin_session, security, make_user, media) -> None:
    both = make_user(["it", "admin"], "ozzie")
    [ref] = trust_and_import(app, security, both, media, 1)
    updates.show(app, both, ref, source=h100())
    with pytest.raises(UpdateRefused, match="ozzie imported demo-clinical@1 and may not"):
        updates.approve(app, both, ref, sign_req("ozzie"), source=h100())
    assert find_bundle(app.conn, ref).state == State.PENDING_APPROVAL
    assert signatures_for(app.conn, "bundle", ref) == []


def test_policy_of_two_admins(two_admins, admin_session, admin2, security, itop,
                              media) -> None:
    app = two_admins
    [ref] = trust_and_import(app, security, itop, media, 1)
    first = approve(app, admin_session, ref)
    assert first["state"] == "PENDING_APPROVAL" and first["signatures"] == 1
    with pytest.raises(UpdateRefused, match="alice already approved"):
        updates.approve(app, admin_session, ref, sign_req(ADMIN), source=h100())
    with pytest.raises(UpdateRefused, match="PENDING_APPROVAL: install is not allowed"):
        updates.install(app, admin_session, ref, Edges(source=h100()))
    second = approve(app, admin2, ref)
    assert second["state"] == "APPROVED" and second["signatures"] == 2
    sigs = signatures_for(app.conn, "bundle", ref)
    assert {s.username for s in sigs} == {"alice", "bea"}
    record = approval_record(find_bundle(app.conn, ref), "tiny-engine-h100", None,
                             updates.show(app, admin_session, ref,
                                          source=h100())["evaluation"])
    assert all(binds(s, "bundle", ref, record) for s in sigs)
    assert [e["action"] for e in events(app, target=ref) if e.get("signature")] == [
        "update.approval_signed", "update.approved"]


def test_wrong_password_signs_nothing(app, admin_session, pending) -> None:
    updates.show(app, admin_session, pending, source=h100())
    bad = SignatureRequest("approved", "ok", "not the password", ADMIN, True)
    with pytest.raises(AuthenticationFailed):
        updates.approve(app, admin_session, pending, bad, source=h100())
    assert find_bundle(app.conn, pending).state == State.PENDING_APPROVAL


def test_rejection_is_signed_and_needs_a_reason(app, admin_session, pending) -> None:
    updates.show(app, admin_session, pending, source=h100())
    with pytest.raises(UpdateRefused, match="a rejection needs a reason"):
        updates.reject(app, admin_session, pending, sign_req(ADMIN, "rejected", " "))
    out = updates.reject(app, admin_session, pending,
                         sign_req(ADMIN, "rejected", "adapter regresses on oncology notes"))
    assert out["state"] == "REJECTED"
    assert out["signature"]["meaning"] == "rejected" and out["signature"]["name"] == "Alice Adams"
    bundle = find_bundle(app.conn, pending)
    assert bundle.state_reason == "adapter regresses on oncology notes"
    with pytest.raises(UpdateRefused, match="REJECTED: approve is allowed only"):
        updates.approve(app, admin_session, pending, sign_req(ADMIN), source=h100())


def test_roles_without_approval_cannot_sign_and_viewers_change_nothing(
        app, admin_session, security, itop, make_user, media) -> None:
    [ref] = trust_and_import(app, security, itop, media, 1)
    auditor = make_user(["auditor"], "audrey")
    view = updates.show(app, auditor, ref, source=h100())
    assert view["bundle"]["state"] == "IMPORTED"      # an auditor's look runs no step
    with pytest.raises(PermissionDenied):
        updates.approve(app, itop, ref, sign_req("ivan"), source=h100())
    with pytest.raises(PermissionDenied):
        updates.approve(app, auditor, ref, sign_req("audrey"), source=h100())
    denied = [e["details"]["permission"] for e in events(app, "access.denied")]
    assert denied.count("update.approve") == 2


def test_a_denial_on_a_bundle_names_its_digest(app, admin_session, security, itop,
                                              make_user, media) -> None:
    """`access.denied` named the bundle only as typed (a name@version, a prefix), unlike
    every other update event: which bundle was meant was lost once the records moved on."""
    from appliance.services import signing

    [ref] = trust_and_import(app, security, itop, media, 1)
    digest = find_bundle(app.conn, ref).digest
    auditor = make_user(["auditor"], "audrey")
    with pytest.raises(PermissionDenied):
        updates.approve(app, itop, ref, sign_req("ivan"), source=h100())
    with pytest.raises(PermissionDenied):
        updates.install(app, auditor, digest[:12], Edges(source=h100()))
    with pytest.raises(PermissionDenied):
        updates.rollback(app, auditor, ref, sign_req("audrey"), Edges(source=h100()))
    with pytest.raises(PermissionDenied):   # the console asks before the dialog opens
        signing.prompt(app, auditor, "update.approve", target_type="bundle", target_id=ref)
    with pytest.raises(PermissionDenied):   # no such bundle: nothing to name
        updates.check(app, auditor, "demo-clinical@9")
    denied = [(e["target"]["id"], e["target"]["digest"], e["details"]["permission"])
              for e in events(app, "access.denied")]
    assert denied == [(ref, digest, "update.approve"), (digest[:12], digest, "update.install"),
                      (ref, digest, "update.rollback"), (ref, digest, "update.approve"),
                      ("demo-clinical@9", None, "update.install")]


def test_a_pinned_profile_that_does_not_fit_is_not_called_no_profile_fitting(
        app, admin_session, pending) -> None:
    """A pin that does not fit was refused as "no engine profile of ... fits this host" while
    the CPU profile fit: the refusal says the pin does not fit and names those that do."""
    updates.show(app, admin_session, pending, source=a100())
    with pytest.raises(UpdateRefused) as refused:
        updates.approve(app, admin_session, pending, sign_req(ADMIN), source=a100(),
                        pinned="tiny-engine-h100")
    assert refused.value.message == (
        f"{pending}: pinned profile tiny-engine-h100 does not fit: engine sm_90 tp1 needs 1 "
        "sm_90 GPU, this host has 1 A100 (sm_80)")
    assert refused.value.hint == "pin one that fits (tiny-base-cpu), or leave out --profile"
    assert events(app, "update.refused", pending)[-1]["reason"] == refused.value.message
    assert find_bundle(app.conn, pending).state == State.PENDING_APPROVAL


def test_install_refuses_when_the_approved_profile_no_longer_fits(app, admin_session,
                                                                  pending) -> None:
    approve(app, admin_session, pending)
    with pytest.raises(UpdateRefused, match="approved profile tiny-engine-h100 no longer"):
        updates.install(app, admin_session, pending, Edges(source=a100()))
    assert find_bundle(app.conn, pending).state == State.APPROVED


def test_an_approval_signed_while_another_admin_rejects_is_refused(
        two_admins, admin_session, admin2, security, itop, media, home, tmp_path) -> None:
    """Bea's `update approve` (its own process) has checked the state and is reading the GPUs
    (a FIFO holds its reading back) when Alice rejects the bundle. Bea's signature then used
    to be stored as `update.approval_signed` on the REJECTED bundle: the state was not read
    again in the signing transaction. Now her approval is refused and recorded, unsigned."""

    from appliance.settings import save_settings
    from tests.updates.test_lifecycle import events

    app = two_admins
    [ref] = trust_and_import(app, security, itop, media, 1)
    save_settings(app.layout.config, app.settings)
    updates.show(app, admin_session, ref, source=h100())
    updates.show(app, admin2, ref, source=h100())
    err = _bea_approves_while(home, tmp_path, ref, lambda: updates.reject(
        app, admin_session, ref,
        sign_req(ADMIN, "rejected", "adapter regresses on oncology notes")))
    assert err.startswith(f"error: {ref} is REJECTED: approve is allowed only while it is "
                          "PENDING_APPROVAL") and err.count("\n") == 1, err
    assert find_bundle(app.conn, ref).state == State.REJECTED
    assert [s.meaning for s in signatures_for(app.conn, "bundle", ref)] == ["rejected"]
    assert events(app, "update.approval_signed", ref) == []
    refused = events(app, "update.refused", ref)[-1]
    assert refused["actor"]["username"] == "bea" and refused["details"]["step"] == "approve"


def test_an_approval_signed_after_the_signers_role_was_revoked_is_denied(
        two_admins, admin_session, admin2, security, itop, media, home, tmp_path) -> None:
    """Bea's `update approve` (its own process) was authorized and is reading the GPUs (a
    FIFO holds its reading back) when her admin role is revoked. Her signature then used to
    count: the role was checked only at the start. Now it is denied, recorded, unsigned."""

    from appliance.services import users
    from appliance.settings import save_settings
    from tests.updates.test_lifecycle import events

    app = two_admins
    [ref] = trust_and_import(app, security, itop, media, 1)
    save_settings(app.layout.config, app.settings)
    updates.show(app, admin_session, ref, source=h100())
    updates.show(app, admin2, ref, source=h100())
    users.grant_role(app, admin_session, "bea", "auditor", "also reads the trail")
    err = _bea_approves_while(home, tmp_path, ref, lambda: users.revoke_role(
        app, admin_session, "bea", "admin", "left the review board"))
    assert err.startswith("error: bea may not update.approve (needs role: admin)") and \
        err.count("\n") == 1, err
    assert find_bundle(app.conn, ref).state == State.PENDING_APPROVAL
    assert signatures_for(app.conn, "bundle", ref) == []
    assert events(app, "update.approval_signed", ref) == []
    denied = events(app, "access.denied")[-1]
    assert denied["actor"]["username"] == "bea"
    assert denied["details"]["permission"] == "update.approve"


def _bea_approves_while(home, tmp_path, ref: str, meanwhile) -> str:
    """Run Bea's `update approve` in its own process, held at the GPU reading (a FIFO)
    while `meanwhile` runs; it must fail: returns its standard error."""
    import os
    import subprocess
    import sys

    from tests.conftest import PASSWORD, cli_env
    from tests.updates.kit import H100_READING

    fifo = tmp_path / "reading.fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        [sys.executable, "-m", "appliance", "update", "approve", ref, "--reason", "fine",
         "--reading", str(fifo), "--acknowledge-statement", "--user", "bea",
         "--password-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cli_env(home))
    child.stdin.write(PASSWORD + "\n")
    child.stdin.close()
    with open(fifo, "wb") as reading:          # opens once Bea's process reads the GPUs
        meanwhile()
        reading.write(H100_READING.read_bytes())
    err = child.stderr.read()
    assert child.wait(timeout=60) != 0
    return err
