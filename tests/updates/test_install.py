"""Install: layout by hard links, serving config, atomic switch, restart, health checks,
automatic rollback, kept releases and the signed manual rollback."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from appliance.bundle.store import ContentStore
from appliance.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermissionDenied,
    UpdateRefused,
)
from appliance.hardware import GpuInventory, RecordedSource
from appliance.services import updates
from appliance.settings import UpdatePolicy
from appliance.updates.health import CheckResult, HealthContext, ReleaseDigests, default_checks
from appliance.updates.install import Edges
from appliance.updates.lifecycle import State, find_bundle
from appliance.updates.recovery import consistency
from appliance.updates.restart import RecordingRestarter
from tests.conftest import ADMIN, PASSWORD
from tests.updates.kit import (
    H100_READING,
    a100,
    approve,
    h100,
    no_driver,
    sign_req,
    trust_and_import,
)
from tests.updates.test_lifecycle import events


class FailingCheck:
    """A health check that fails, as a serving smoke test would on a broken model."""

    name = "smoke_prompt"

    def check(self, ctx: HealthContext) -> CheckResult:
        return CheckResult(self.name, False, "golden prompt 3 answered nothing")


class GpuLostAfter:
    """The hardware edge: the GPUs read fine at first, then one reading later they are gone
    (a GPU fallen off the bus between approval and the health check)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self) -> GpuInventory:
        self.left -= 1
        return h100().read() if self.left >= 0 else a100().read()


def edges(**kw) -> Edges:
    kw.setdefault("source", h100())
    kw.setdefault("restarter", RecordingRestarter())
    return Edges(**kw)


@pytest.fixture
def v1_v2(app, admin_session, security, itop, media):
    return trust_and_import(app, security, itop, media, 1, 2)


def install(app, session, ref, **kw):
    approve(app, session, ref, kw.get("source") or h100())
    return updates.install(app, session, ref, edges(**kw))


def test_install_hard_links_writes_serving_config_and_activates(app, admin_session,
                                                                 v1_v2) -> None:
    ref1, _ = v1_v2
    e = edges()
    approve(app, admin_session, ref1)
    result = updates.install(app, admin_session, ref1, e)
    assert result.outcome == "activated" and result.release == "demo-clinical/1"
    n_files = sum(len(c.files) for c in find_bundle(app.conn, ref1).components)
    assert n_files == 12
    assert result.placement == {"hardlink": 12, "reflink": 0, "copy": 0, "copied_bytes": 0,
                                "cross_filesystem": False}
    releases = app.layout.releases
    assert os.readlink(releases / "current") == "demo-clinical/1"
    store = ContentStore(app.layout.store)
    bundle = find_bundle(app.conn, ref1)
    for c in bundle.components:
        for rel, sha, _ in c.files:
            placed = releases / "demo-clinical/1/components" / c.name / rel
            assert os.stat(placed).st_ino == os.stat(store.path_of(sha)).st_ino  # no copy
    serving = json.loads((releases / "current" / "serving.json").read_text())
    assert serving["runtime"] == "tensorrt_llm"
    assert serving["engine_dir"] == "components/tiny-engine-h100"
    assert serving["adapters"][0]["base_model"]["name"] == "tiny-base"
    assert bundle.state == State.ACTIVE
    assert e.restarter.calls == [(str(releases / "demo-clinical/1"),
                                  "switched to demo-clinical@1")]
    assert [r["name"] for r in result.health] == ["release_digests", "serving_config",
                                                  "hardware_profile"]
    steps = [x["action"] for x in events(app, target=ref1)
             if x["action"].startswith("update.")]
    assert steps[steps.index("update.approved"):] == [
        "update.approved", "update.install_started", "update.laid_out", "update.switched",
        "update.services_restarted", "update.restart_step", "update.health_check",
        "update.activated"]
    assert consistency(app) == []
    restarted = events(app, "update.services_restarted")[-1]
    assert restarted["details"]["performed"] is False     # the default restarts nothing
    assert "would be restarted" in restarted["details"]["detail"]


def test_upgrade_keeps_the_previous_release_and_rolls_back_with_a_signature(
        app, admin_session, make_user, v1_v2) -> None:
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    result = install(app, admin_session, ref2)
    assert result.outcome == "activated" and result.previous == "demo-clinical/1"
    assert find_bundle(app.conn, ref1).state == State.APPROVED     # superseded, kept
    assert (app.layout.releases / "demo-clinical/1/serving.json").exists()
    with pytest.raises(UpdateRefused, match="not newer than the active"):
        updates.install(app, admin_session, ref1, edges())
    itop2 = make_user(["it"], "ira")
    with pytest.raises(PermissionDenied):
        updates.rollback(app, itop2, ref1, sign_req("ira"), edges())
    bad = dataclasses.replace(sign_req(ADMIN), password="wrong password")
    with pytest.raises(AuthenticationFailed):
        updates.rollback(app, admin_session, ref1, bad, edges())
    assert os.readlink(app.layout.releases / "current") == "demo-clinical/2"
    back = updates.rollback(app, admin_session, ref1,
                            sign_req(ADMIN, reason="v2 slower on ward terminals"), edges())
    assert back.outcome == "activated" and back.op == "rollback"
    assert os.readlink(app.layout.releases / "current") == "demo-clinical/1"
    assert find_bundle(app.conn, ref1).state == State.ACTIVE
    assert find_bundle(app.conn, ref2).state == State.ROLLED_BACK
    assert not (app.layout.releases / "demo-clinical/2").exists()
    # The directory removed is recorded like a prune's, with the rollback's journal entry.
    [removed] = events(app, "update.release_removed")
    assert (removed["target"]["id"], removed["details"]["release"]) == (ref2,
                                                                       "demo-clinical/2")
    [rolled] = events(app, "update.rolled_back", ref2)
    assert removed["details"]["journal"] == rolled["details"]["journal"]
    assert removed["seq"] == rolled["seq"] + 1  # recorded in the rollback's transaction
    [signed] = [x for x in events(app, target=ref1) if x.get("signature")
                and x["details"].get("op") == "rollback"]
    assert signed["signature"]["meaning"] == "approved"
    assert signed["reason"] == "v2 slower on ward terminals"
    assert consistency(app) == []


def test_a_rollback_with_a_reading_that_cannot_be_read_changes_nothing(
        app, admin_session, v1_v2, tmp_path) -> None:
    """`update rollback --reading BAD` signed, switched to the kept release, restarted
    serving, found the reading unreadable in the health check and switched back, restarting
    serving again: two restarts for a mistyped file. Refused before anything."""
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    install(app, admin_session, ref2)
    bad = tmp_path / "reading.json"
    bad.write_text("{not json")
    before = len(events(app))
    restarter = RecordingRestarter()
    with pytest.raises(InvalidInput, match="is unreadable"):
        updates.rollback(app, admin_session, ref1, sign_req(ADMIN, reason="v2 slower"),
                         edges(source=RecordedSource(bad), restarter=restarter))
    assert restarter.calls == [] and events(app)[before:] == []
    assert os.readlink(app.layout.releases / "current") == "demo-clinical/2"
    assert find_bundle(app.conn, ref2).state == State.ACTIVE


def test_keep_last_n_releases(app, admin_session, v1_v2) -> None:
    app.settings = dataclasses.replace(app.settings, updates=UpdatePolicy(keep_releases=1))
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    result = install(app, admin_session, ref2)
    assert result.removed == ["demo-clinical/1"]
    assert not (app.layout.releases / "demo-clinical/1").exists()
    [removed] = events(app, "update.release_removed")
    assert removed["details"]["keep_releases"] == 1
    with pytest.raises(UpdateRefused, match="no kept release"):
        updates.rollback(app, admin_session, ref1, sign_req(ADMIN), edges())
    assert consistency(app) == []


def test_failing_health_check_switches_back_and_marks_rolled_back(app, admin_session,
                                                                  v1_v2) -> None:
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    e = edges(checks=[*default_checks(), FailingCheck()])
    approve(app, admin_session, ref2)
    result = updates.install(app, admin_session, ref2, e)
    assert result.outcome == "rolled_back"
    assert result.reason == "smoke_prompt: golden prompt 3 answered nothing"
    assert os.readlink(app.layout.releases / "current") == "demo-clinical/1"
    assert [c[1] for c in e.restarter.calls] == [
        "switched to demo-clinical@2",
        "switched back from demo-clinical@2 after a failed health check"]
    assert find_bundle(app.conn, ref1).state == State.ACTIVE
    b2 = find_bundle(app.conn, ref2)
    assert b2.state == State.ROLLED_BACK and "golden prompt 3" in b2.state_reason
    assert not (app.layout.releases / "demo-clinical/2").exists()
    [rolled] = events(app, "update.rolled_back", ref2)
    assert rolled["outcome"] == "failure" and rolled["new"] == {"state": "ROLLED_BACK"}
    assert rolled["details"]["restored"] == "demo-clinical/1"
    assert consistency(app) == []


def test_first_install_failing_leaves_nothing_current(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    approve(app, admin_session, ref1)
    result = updates.install(app, admin_session, ref1, edges(checks=[FailingCheck()]))
    assert result.outcome == "rolled_back" and result.previous is None
    assert not os.path.lexists(app.layout.releases / "current")
    assert consistency(app) == []


def test_profile_check_fails_when_the_gpu_is_lost_after_the_switch(app, admin_session,
                                                                   v1_v2) -> None:
    ref1, _ = v1_v2
    approve(app, admin_session, ref1)
    # One good reading for the pre-install fit, then the GPUs are gone.
    result = updates.install(app, admin_session, ref1, edges(source=GpuLostAfter(1)))
    assert result.outcome == "rolled_back"
    assert "hardware_profile: engine sm_90 tp1 needs 1 sm_90 GPU" in result.reason


def test_the_hardware_check_says_when_it_read_a_replayed_reading(app, admin_session,
                                                                  v1_v2) -> None:
    """`update install --reading` on a host without a GPU printed "ok hardware_profile:
    engine sm_90 tp1 fits 8 H100 (sm_90)", as if this host had them."""
    ref1, _ = v1_v2
    result = install(app, admin_session, ref1)
    [check] = [r for r in result.health if r["name"] == "hardware_profile"]
    assert check["ok"] and check["detail"] == (
        "engine sm_90 tp1 fits 8 H100 (sm_90) (replayed reading: recorded:h100-sxm-80gb-x8.json)")


class GpuHangsAfter:
    """The hardware edge: one good reading, then the driver stops answering (the reading
    is a FIFO nobody writes yet, as NVML hangs when a GPU wedges) until `answer()`."""

    def __init__(self, fifo) -> None:
        os.mkfifo(fifo)
        self.fifo, self.reads, self.late = fifo, 0, []

    def read(self) -> GpuInventory:
        self.reads += 1
        if self.reads == 1:
            return h100().read()
        inventory = RecordedSource(self.fifo).read()
        self.late.append(inventory)
        return inventory

    def answer(self) -> None:
        with open(self.fifo, "wb") as f:
            f.write(H100_READING.read_bytes())


def test_a_health_check_that_hangs_fails_at_its_timeout_and_a_late_answer_is_ignored(
        app, admin_session, v1_v2, tmp_path) -> None:
    """The checks had no time limit: a hanging one held the install (and its lock) for
    ever. Now it has failed at `updates.health_check_timeout_s`, the install rolls back,
    and the success it reports later changes nothing."""
    ref1, _ = v1_v2
    app.settings = dataclasses.replace(app.settings,
                                       updates=UpdatePolicy(health_check_timeout_s=1))
    approve(app, admin_session, ref1)
    gpu = GpuHangsAfter(tmp_path / "reading.fifo")
    started = time.monotonic()
    result = updates.install(app, admin_session, ref1, edges(source=gpu))
    assert time.monotonic() - started < 30
    assert result.outcome == "rolled_back"
    assert result.reason == "hardware_profile: no answer within 1 s (timed out)"
    assert [h["ok"] for h in result.health] == [True, True, False]
    gpu.answer()                                   # the check succeeds, too late
    for _ in range(100):
        if gpu.late:
            break
        time.sleep(0.05)
    assert gpu.late and gpu.late[0].gpu_count == 8
    assert find_bundle(app.conn, ref1).state == State.ROLLED_BACK
    assert not os.path.lexists(app.layout.releases / "current")
    [health] = events(app, "update.health_check", ref1)
    assert health["outcome"] == "failure" and "timed out" in health["reason"]
    assert consistency(app) == []


def test_the_health_check_timeout_is_checked_when_settings_load() -> None:
    for bad in (0, -1, True, "300", 86401):
        with pytest.raises(InvalidInput, match="updates.health_check_timeout_s is"):
            UpdatePolicy(health_check_timeout_s=bad)


def test_cpu_fallback_without_a_driver(app, admin_session, v1_v2, tmp_path) -> None:
    ref1, _ = v1_v2
    src = no_driver(tmp_path)
    view = updates.show(app, admin_session, ref1, source=src)
    assert view["hardware"]["chosen"] == "tiny-base-cpu"
    assert view["hardware"]["fallback_to_cpu"] is True
    updates.approve(app, admin_session, ref1, sign_req(ADMIN), source=src)
    result = updates.install(app, admin_session, ref1, edges(source=src))
    assert result.outcome == "activated"
    serving = json.loads((app.layout.releases / "current/serving.json").read_text())
    assert serving["runtime"] == "transformers"
    assert serving["model_dir"] == "components/tiny-base"


def test_release_check_catches_a_replaced_file(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    install(app, admin_session, ref1)
    target = app.layout.releases / "demo-clinical/1/components/tiny-adapter/adapter_config.json"
    target.unlink()           # replace the link, never write through it into the store
    target.write_text('{"r": 64}')
    bundle = find_bundle(app.conn, ref1)
    from appliance.updates.install import generated, release_dirs
    from appliance.updates.recovery import planned
    [profile] = app.conn.execute("SELECT profile FROM releases WHERE path = ?",
                                 ("demo-clinical/1",)).fetchone()
    plan = planned(app, bundle, profile)
    ctx = HealthContext(release_dirs(app), "demo-clinical/1", plan.files,
                        None, bundle.digest, generated(plan))  # type: ignore[arg-type]
    res = ReleaseDigests().check(ctx)
    assert not res.ok and "adapter_config.json: wrong size" in res.detail
    assert any("tiny-adapter/adapter_config.json" in p for p in consistency(app))
    assert updates.status(app, admin_session)["consistent"]      # quick: names and links
    deep = updates.status(app, admin_session, deep=True)
    assert not deep["consistent"] and "adapter_config.json" in deep["problems"][0]
    assert ContentStore(app.layout.store).has(plan.files[0][1])


def test_status_reports_the_active_release(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    install(app, admin_session, ref1)
    st = updates.status(app, admin_session)
    assert st["consistent"] and st["current"] == "demo-clinical/1"
    assert st["active"]["ref"] == ref1 and st["open_journal"] is None
    assert st["recent_journal"][0]["outcome"] == "activated"
    assert PASSWORD not in json.dumps(st)


def test_an_admin_pin_is_signed_and_installed(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    view = updates.show(app, admin_session, ref1, source=h100(), pinned="tiny-base-cpu")
    assert view["hardware"]["chosen"] == "tiny-base-cpu"
    assert view["hardware"]["note"].startswith("pinned by admin")
    out = updates.approve(app, admin_session, ref1, sign_req(ADMIN), source=h100(),
                          pinned="tiny-base-cpu")
    assert out["record"]["profile"] == "tiny-base-cpu" and out["record"]["pinned"]
    result = updates.install(app, admin_session, ref1, edges())
    assert result.outcome == "activated"
    serving = json.loads((app.layout.releases / "current/serving.json").read_text())
    assert serving["profile"]["id"] == "tiny-base-cpu" and serving["runtime"] == "transformers"
