"""Reclaiming the content store's disk: the objects of rejected bundles (and of imports never
resumed) go; everything a live bundle needs stays; the audit trail says who, why and what."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.bundle.store import ContentStore, StoreBusy
from appliance.errors import InvalidInput, PermissionDenied
from appliance.services import media as media_service
from appliance.services import store as store_service
from appliance.services import updates
from appliance.services.store import ReclaimFailed
from appliance.updates.lifecycle import State, find_bundle
from tests.conftest import PASSWORD
from tests.immutable import immutable
from tests.updates.kit import h100, trust_and_import


def digests(app, ref: str) -> set[str]:
    bundle = find_bundle(app.conn, ref)
    rows = app.conn.execute("SELECT files FROM bundle_components WHERE bundle_id = ?",
                            (bundle.id,)).fetchall()
    return {digest for (files,) in rows for _rel, digest, _size in json.loads(files)}


@pytest.fixture
def rejected(app, admin_session, security, itop, media):
    """v1 imported (live), v3 imported and rejected at its evaluation gate."""
    ref1, ref3 = trust_and_import(app, security, itop, media, 1, 3)
    updates.show(app, admin_session, ref3, source=h100())
    assert find_bundle(app.conn, ref3).state == State.REJECTED
    return ref1, ref3


def reclaim_events(app) -> list[dict]:
    rows = app.conn.execute("SELECT body FROM audit_view WHERE action = 'store.reclaim' "
                            "ORDER BY seq").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_reclaim_removes_only_what_no_live_bundle_needs(app, itop, rejected) -> None:
    ref1, ref3 = rejected
    store = ContentStore(app.layout.store)
    live, dead = digests(app, ref1), digests(app, ref3)
    only_dead = dead - live
    assert only_dead and dead & live  # v3 shares the base model and golden set with v1
    sizes = dict(store.objects_on_disk())

    preview = store_service.reclaim(app, itop, "", dry_run=True)
    assert preview.dry_run and preview.objects == len(only_dead)
    assert preview.bytes == sum(sizes[d] for d in only_dead)
    assert preview.bundles == [ref3] and preview.unrecorded == 0
    assert all(store.has(d) for d in dead) and not reclaim_events(app)

    done = store_service.reclaim(app, itop, "disk at 91 % after the v3 rejection")
    assert (done.objects, done.bytes, done.bundles) == (preview.objects, preview.bytes, [ref3])
    assert not any(store.has(d) for d in only_dead)
    assert all(store.has(d) for d in live)
    assert done.kept_objects == len(live) and done.kept_bytes == sum(sizes[d] for d in live)
    [event] = reclaim_events(app)
    assert event["actor"]["username"] == itop.username and event["outcome"] == "success"
    assert event["reason"] == "disk at 91 % after the v3 rejection"
    assert event["details"]["objects"] == len(only_dead)
    assert event["details"]["bundles"] == [ref3]
    # The records stay: the bundle is still rejected, and nothing is left to reclaim.
    assert find_bundle(app.conn, ref3).state == State.REJECTED
    again = store_service.reclaim(app, itop, "again")
    assert again.objects == 0 and len(reclaim_events(app)) == 1


def test_objects_no_bundle_records_are_reclaimed(app, itop, rejected) -> None:
    """An import interrupted and never resumed leaves verified objects no bundle records."""
    store = ContentStore(app.layout.store)
    stray = "ab" * 32
    (store.objects / stray[:2]).mkdir(parents=True, exist_ok=True)
    (store.objects / stray[:2] / stray).write_bytes(b"left by an interrupted import")
    (store.tmp / "partial").write_bytes(b"not an object")
    out = store_service.reclaim(app, itop, "tidy the store")
    assert out.unrecorded == 1 and not store.has(stray)
    assert (store.tmp / "partial").exists()  # temp files are the next import's to clean


@contextlib.contextmanager
def undeletable(path: Path):
    """Make `path` impossible to unlink for real: a read-only directory stops an ordinary
    user, the immutable attribute stops root (as in CI), until the block ends."""
    if os.geteuid() != 0:
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
        return
    with immutable(path):
        yield


def test_a_removal_that_fails_half_way_is_recorded_and_the_next_reclaim_finishes(
        app, itop, rejected) -> None:
    ref1, ref3 = rejected
    store = ContentStore(app.layout.store)
    live, only_dead = digests(app, ref1), digests(app, ref3) - digests(app, ref1)
    stuck = max(only_dead)
    with undeletable(store.path_of(stuck)), pytest.raises(ReclaimFailed) as failed:
        store_service.reclaim(app, itop, "disk at 91 %")
    left = sum(store.has(d) for d in only_dead)
    assert store.has(stuck) and 1 <= left <= len(only_dead)
    assert str(failed.value).startswith(
        f"reclaim stopped with {left} of {len(only_dead)} objects left: ")
    assert failed.value.exit_code == 1
    intent, failure = reclaim_events(app)  # the intent committed before the first removal
    assert (intent["outcome"], failure["outcome"]) == ("success", "failure")
    assert failure["details"]["not_removed"] == left
    assert failure["details"]["error"]
    assert all(store.has(d) for d in live)
    # Once the cause is gone, the next reclaim removes exactly what was left.
    again = store_service.reclaim(app, itop, "finish the reclaim that stopped")
    assert again.objects == left and again.bundles == [ref3]
    assert not any(store.has(d) for d in only_dead) and all(store.has(d) for d in live)


def test_reclaim_needs_the_it_role_and_a_reason(app, make_user, itop, rejected) -> None:
    auditor = make_user(["auditor"], "ada")
    with pytest.raises(PermissionDenied):
        store_service.reclaim(app, auditor, "I am curious")
    [denied] = app.conn.execute("SELECT body FROM audit_view WHERE action = 'access.denied' "
                                "ORDER BY seq DESC LIMIT 1").fetchone()
    assert json.loads(denied)["details"]["permission"] == "store.reclaim"
    with pytest.raises(InvalidInput, match="needs a reason"):
        store_service.reclaim(app, itop, "  ")
    store = ContentStore(app.layout.store)
    assert all(store.has(d) for d in digests(app, rejected[1]))


def test_reclaim_is_refused_while_an_import_holds_the_store(
        app, security, itop, media) -> None:
    trust_and_import(app, security, itop, media, 1)
    store = ContentStore(app.layout.store)
    stray = "cd" * 32
    (store.objects / stray[:2]).mkdir(parents=True, exist_ok=True)
    (store.objects / stray[:2] / stray).write_bytes(b"left by an interrupted import")
    refused = []

    def progress(_p) -> None:
        if not refused:
            with pytest.raises(StoreBusy) as err:
                store_service.reclaim(app, itop, "during an import")
            refused.append(err.value)

    media_service.import_bundle(app, itop, media.v2, progress)
    assert refused and "in use by an import or a reclaim" in refused[0].message
    assert store.has(stray) and not reclaim_events(app)
    assert store_service.reclaim(app, itop, "after the import").unrecorded == 1


def test_reclaim_from_the_command_line(app, itop, rejected) -> None:
    """The real entry point, as hospital IT types it."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "appliance", "--home", str(app.layout.root), "media",
             "reclaim", *args, "--user", itop.username, "--password-stdin"],
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)

    dry = run("--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["dry_run"] and preview["objects"] > 0
    no_reason = run()
    assert no_reason.returncode != 0
    assert no_reason.stderr.strip() == ("error: reclaiming disk space needs a reason "
                                        "(pass --reason)")
    done = run("--reason", "free space")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"removed {preview['objects']} object")
    assert rejected[1] in done.stdout
    store = ContentStore(app.layout.store)
    assert not any(store.has(d) for d in digests(app, rejected[1]) - digests(app, rejected[0]))


def test_a_rolled_back_update_is_reclaimed_and_the_running_release_is_untouched(
        app, admin_session, security, itop, media) -> None:
    from appliance.services import updates as update_service
    from appliance.updates.health import default_checks
    from appliance.updates.recovery import consistency
    from tests.updates.kit import approve
    from tests.updates.test_install import FailingCheck, edges, install

    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    install(app, admin_session, ref1)
    approve(app, admin_session, ref2)
    result = update_service.install(app, admin_session, ref2,
                                    edges(checks=[*default_checks(), FailingCheck()]))
    assert result.outcome == "rolled_back"
    only_v2 = digests(app, ref2) - digests(app, ref1)
    out = store_service.reclaim(app, itop, "v2 failed its health check")
    assert out.bundles == [ref2] and out.objects == len(only_v2)
    store = ContentStore(app.layout.store)
    assert not any(store.has(d) for d in only_v2)
    assert all(store.has(d) for d in digests(app, ref1))
    assert consistency(app) == []  # the running release's files all still match
