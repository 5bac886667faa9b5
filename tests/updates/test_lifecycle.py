"""The lifecycle table and the automatic steps: verification, evaluation gates, submission,
and refusals of anything out of order (11.10(f)), each recorded with the bundle digest."""

from __future__ import annotations

import json

import pytest

from appliance.errors import InvalidInput, UpdateRefused
from appliance.services import updates
from appliance.updates.lifecycle import TRANSITIONS, State, find_bundle, move
from tests.updates.kit import h100


def events(app, action=None, target=None):
    rows = app.conn.execute("SELECT body FROM audit_events ORDER BY seq").fetchall()
    out = [json.loads(r[0]) for r in rows]
    return [e for e in out if (action is None or e["action"] == action)
            and (target is None or e["target"]["id"] == target)]


def test_table_lists_every_state_and_nothing_leaves_a_final_state() -> None:
    reachable = {to for _, to in TRANSITIONS} | {frm for frm, _ in TRANSITIONS}
    assert reachable == set(State)
    assert not [t for t in TRANSITIONS if t[0] in (State.REJECTED, State.ROLLED_BACK)]
    # Approval can only come from review, installing only from approval.
    assert [f for f, t in TRANSITIONS if t == State.APPROVED] == [State.PENDING_APPROVAL,
                                                                   State.INSTALLING,
                                                                   State.ACTIVE]
    assert [f for f, t in TRANSITIONS if t == State.INSTALLING] == [State.APPROVED]


def test_every_move_not_in_the_table_is_refused(app, security, itop, media) -> None:
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    bundle = find_bundle(app.conn, ref)
    for to in State:
        if (State.IMPORTED, to) in TRANSITIONS:
            continue
        with pytest.raises(UpdateRefused, match="not a lifecycle step"):
            move(app.conn, bundle, to)
    assert find_bundle(app.conn, ref).state == State.IMPORTED


def test_opening_runs_verification_evaluation_and_submission(app, admin_session, security,
                                                             itop, media) -> None:
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    view = updates.show(app, admin_session, ref, source=h100())
    assert view["bundle"]["state"] == "PENDING_APPROVAL"
    digest = view["bundle"]["digest"]
    steps = [(e["action"], e["old"], e["new"]) for e in events(app, target=ref)
             if e["action"] in ("update.verified", "update.evaluated", "update.submitted")]
    assert steps == [
        ("update.verified", {"state": "IMPORTED"}, {"state": "VERIFIED"}),
        ("update.evaluated", {"state": "VERIFIED"}, {"state": "EVALUATED"}),
        ("update.submitted", {"state": "EVALUATED"}, {"state": "PENDING_APPROVAL"})]
    for e in events(app, target=ref):
        if e["action"].startswith("update."):
            assert e["details"]["bundle_digest"] == digest
    assert view["verification"]["ok"] and view["verification"]["files_checked"] >= 10
    assert view["verification"]["engines_checked"] == ["tiny-engine-h100"]
    ev = view["evaluation"]
    assert ev["passed"] and ev["evidence"][0]["metrics"]["exact_match"] == 0.9
    assert {(c["metric"], c["ok"]) for c in ev["checks"]} == {("exact_match", True),
                                                              ("hallucination_rate", True)}


def test_evidence_below_the_gate_rejects_with_the_reason(app, admin_session, security, itop,
                                                         media) -> None:
    from tests.updates.kit import trust_and_import
    _, ref = trust_and_import(app, security, itop, media, 1, 3)
    view = updates.show(app, admin_session, ref, source=h100())
    assert view["bundle"]["state"] == "REJECTED"
    assert view["bundle"]["state_reason"] == "exact_match 0.5 is below the gate 0.85"
    [failed] = events(app, "update.evaluation_failed", ref)
    assert failed["outcome"] == "failure" and failed["details"]["gates"]["min_metrics"] == {
        "exact_match": 0.85}


def test_engine_contradicting_its_signed_profile_is_rejected_at_verification(
        app, admin_session, security, itop, media) -> None:
    from tests.updates.kit import trust_and_import
    _, ref = trust_and_import(app, security, itop, media, 1, 4)
    bundle = updates.check(app, admin_session, ref)
    assert bundle.state == State.REJECTED
    assert "tiny-engine-h100 does not match declared profile" in bundle.state_reason
    assert "tp_size 2, declared 1" in bundle.state_reason
    assert not list(app.layout.releases.glob(".engine-check-*"))


def test_missing_evidence_fails_when_required(app, admin_session, security, itop,
                                              media) -> None:
    from appliance.updates.evidence import CarriedEvidenceGate
    from appliance.updates.lifecycle import BundleRecord
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    full = find_bundle(app.conn, ref)
    stripped = BundleRecord(**{**full.__dict__, "components": tuple(
        c for c in full.components if c.kind != "evaluation_evidence")})
    result = CarriedEvidenceGate(app.settings.evaluation).evaluate(stripped,
                                                                   lambda s, n: b"")
    assert not result.passed
    assert result.reasons == ["the bundle carries no evaluation evidence, and the gates "
                              "require it"]


def test_a_number_too_large_for_sqlite_names_no_bundle(app, security, itop, media) -> None:
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    assert find_bundle(app.conn, "1").ref == ref
    for typed in ("99999999999999999999999", "demo-clinical@99999999999999999999",
                  "demo-clinical@9223372036854775808", "demo-clinical@\u00b2"):
        with pytest.raises(InvalidInput, match="no bundle"):
            find_bundle(app.conn, typed)


@pytest.mark.parametrize("metric", ["1" + "0" * 400, "1" + "0" * 5000, "1e400"])
def test_a_metric_no_float_can_hold_rejects_the_bundle(app, admin_session, security, itop,
                                                       media, metric) -> None:
    """A huge integer is invalid evidence like inf: recorded, rejected, never an
    OverflowError that leaves the bundle in VERIFIED."""
    from appliance.updates.evidence import EVIDENCE_FILE, CarriedEvidenceGate
    from appliance.updates.lifecycle import State
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    evidence = next(c for c in find_bundle(app.conn, ref).components
                    if c.kind == "evaluation_evidence")
    sha = next(f[1] for f in evidence.files if f[0] == EVIDENCE_FILE)

    class Restated:
        """The real gate, reading the evidence as if the publisher had signed `metric`."""

        name = "carried-evidence"

        def evaluate(self, bundle, read):
            def restate(digest: str, size: int) -> bytes:
                raw = read(digest, size)
                if digest != sha:
                    return raw
                assert b'"exact_match": 0.9' in raw
                return raw.replace(b'"exact_match": 0.9', f'"exact_match": {metric}'.encode())
            return CarriedEvidenceGate(app.settings.evaluation).evaluate(bundle, restate)

    bundle = updates.check(app, admin_session, ref, gate=Restated())
    assert bundle.state == State.REJECTED
    assert bundle.state_reason.startswith("evidence tiny-evidence: ")
    [failed] = events(app, "update.evaluation_failed", ref)
    assert failed["outcome"] == "failure" and failed["reason"] == bundle.state_reason


def test_evidence_nested_too_deeply_rejects_the_bundle(app, admin_session, security, itop,
                                                      media) -> None:
    """Evidence nested past the parser's depth used to raise RecursionError out of `update
    show`/`check`, leaving the bundle VERIFIED and every later look a traceback."""
    from appliance.updates.evidence import EVIDENCE_FILE, CarriedEvidenceGate
    from appliance.updates.lifecycle import State
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    evidence = next(c for c in find_bundle(app.conn, ref).components
                    if c.kind == "evaluation_evidence")
    sha = next(f[1] for f in evidence.files if f[0] == EVIDENCE_FILE)
    deep = b'{"schema_version": 1, "metrics": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"

    class Restated:
        """The real gate, reading the evidence as if the publisher had signed `deep`."""

        name = "carried-evidence"

        def evaluate(self, bundle, read):
            def restate(digest: str, size: int) -> bytes:
                return deep if digest == sha else read(digest, size)
            return CarriedEvidenceGate(app.settings.evaluation).evaluate(bundle, restate)

    bundle = updates.check(app, admin_session, ref, gate=Restated())
    assert bundle.state == State.REJECTED
    assert bundle.state_reason.startswith("evidence tiny-evidence: evidence.json is not JSON")
    [failed] = events(app, "update.evaluation_failed", ref)
    assert failed["reason"] == bundle.state_reason


def test_out_of_order_steps_are_refused_and_recorded(app, admin_session, security, itop,
                                                     media) -> None:
    from tests.updates.kit import trust_and_import
    [ref] = trust_and_import(app, security, itop, media, 1)
    with pytest.raises(UpdateRefused, match="IMPORTED: install is not allowed now"):
        updates.install(app, admin_session, ref)
    updates.show(app, admin_session, ref, source=h100())
    with pytest.raises(UpdateRefused, match="PENDING_APPROVAL: install is not allowed"):
        updates.install(app, admin_session, ref)
    refused = events(app, "update.refused", ref)
    assert [e["details"]["state"] for e in refused] == ["IMPORTED", "PENDING_APPROVAL"]
    assert all(e["outcome"] == "failure" and e["target"]["digest"] for e in refused)
    assert find_bundle(app.conn, ref).state == State.PENDING_APPROVAL
