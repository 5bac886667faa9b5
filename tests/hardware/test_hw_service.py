"""Hardware services: permission, audit events for fits (chosen, none, refused), recording."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.audit.query import EventFilter
from appliance.errors import HardwareRefused, InvalidInput
from appliance.hardware import RecordedSource, read_inventory
from appliance.hardware.catalog import read_engines_dir
from appliance.hardware.profiles import EngineProfile, select_profile
from appliance.services import audit, hardware
from tests.hardware.host import assert_matches_smi, smi_csv

FIXTURES = Path(__file__).parent / "fixtures"
ENGINES = FIXTURES / "engines"


def fits(appliance, session) -> list[dict]:
    return [e.data for e in audit.events(appliance, session, EventFilter(action="hardware.fit"))]


def test_show_reads_this_host(appliance, admin_session):
    inv = hardware.show(appliance, admin_session)
    if smi_csv() is not None:
        assert_matches_smi(inv, smi_csv())
    else:
        assert inv.summary() == "no NVIDIA driver found"


def test_every_role_may_view(appliance, make_user):
    for role in ("it", "admin", "security", "ml", "auditor"):
        session = make_user([role])
        inv = hardware.show(appliance, session, RecordedSource(FIXTURES / "h200-141gb-x1.json"))
        assert inv.gpu_count == 1


def test_fit_records_choice_and_every_reason(appliance, admin_session):
    sel = hardware.fit(appliance, admin_session, ENGINES, supported_trtllm={"0.17.0"},
                       source=RecordedSource(FIXTURES / "h100-sxm-80gb-x8.json"))
    assert sel.chosen.id == "llama-h100-fp8-tp2"
    [event] = fits(appliance, admin_session)
    assert event["outcome"] == "success" and event["actor"]["username"] == "alice"
    assert event["target"] == {"type": "engines", "id": str(ENGINES), "digest": None}
    details = event["details"]
    assert details["chosen"] == "llama-h100-fp8-tp2"
    assert details["supported_trtllm"] == ["0.17.0"]
    assert details["inventory"]["source"] == "recorded:h100-sxm-80gb-x8.json"
    assert len(details["inventory"]["gpus"]) == 8
    assert {c["profile_id"]: c["fits"] for c in details["candidates"]} == {
        "llama-h100-fp8-tp2": True, "llama-h100-bf16-tp1": True, "llama-cpu": True,
        "llama-a100-bf16-tp1": False}


def test_fit_with_nothing_fitting_is_recorded_as_failure(appliance, admin_session):
    gpu_only = [EngineProfile(id="h100-tp2", kind="trtllm_engine", gpu_archs=("sm_90",),
                              trtllm_version="0.17.0", tp_size=2)]
    sel = hardware.fit(appliance, admin_session, gpu_only, target_id="bundle-x",
                       source=RecordedSource(FIXTURES / "a100-sxm-40gb-x1.json"))
    assert sel.chosen is None
    [event] = fits(appliance, admin_session)
    assert event["outcome"] == "failure"
    assert event["reason"] == "no profile fits this host (1 A100 (sm_80))"
    assert event["target"]["id"] == "bundle-x"
    assert event["details"]["candidates"][0]["reason"] == (
        "engine sm_90 tp2 needs 2 GPUs, this host has 1 A100 (sm_80)")


def test_real_fit_records_this_host(appliance, admin_session):
    sel = hardware.fit(appliance, admin_session, ENGINES)
    [event] = fits(appliance, admin_session)
    assert event["details"]["inventory"]["source"] == "nvml"
    if smi_csv() is None:
        assert sel.chosen.id == "llama-cpu" and sel.fallback_to_cpu
        assert event["details"]["inventory"]["summary"] == "no NVIDIA driver found"
        return
    host = read_inventory()  # a server: the engine the same host's reading selects
    assert event["details"]["inventory"]["summary"] == host.summary()
    assert sel.chosen.id == select_profile(read_engines_dir(ENGINES), host).chosen.id


def test_engine_mismatch_refusal_is_recorded(appliance, admin_session, tmp_path):
    engines = Path(shutil.copytree(ENGINES, tmp_path / "engines"))
    cfg = engines / "llama-h100-bf16-tp1" / "config.json"
    data = json.loads(cfg.read_text())
    data["pretrained_config"]["mapping"]["pp_size"] = 2
    cfg.write_text(json.dumps(data))
    with pytest.raises(HardwareRefused, match="pp_size 2, declared 1"):
        hardware.fit(appliance, admin_session, engines)
    [event] = fits(appliance, admin_session)
    assert event["outcome"] == "failure"
    assert "does not match declared profile llama-h100-bf16-tp1" in event["reason"]


def test_unknown_pin_is_refused_and_recorded(appliance, admin_session):
    with pytest.raises(InvalidInput, match="no profile 'nope' to pin"):
        hardware.fit(appliance, admin_session, ENGINES, pinned="nope")
    [event] = fits(appliance, admin_session)
    assert event["outcome"] == "failure" and event["details"]["pinned"] == "nope"


def test_record_writes_a_replayable_reading_and_audits(appliance, admin_session, tmp_path):
    out = tmp_path / "host.json"
    hardware.record(appliance, admin_session, out,
                    RecordedSource(FIXTURES / "a100-sxm-80gb-x4.json"), note="lab A")
    again = RecordedSource(out).read()
    assert again.summary() == "4 x NVIDIA A100-SXM4-80GB (sm_80, 80 GiB each), driver 535.161.08"
    assert again.note == "lab A"
    [event] = audit.events(appliance, admin_session, EventFilter(action="hardware.record"))
    assert event.data["details"]["out"] == str(out)


def test_failed_record_writes_no_event(appliance, admin_session, tmp_path):
    with pytest.raises(InvalidInput, match=r"^could not write the reading to .*x\.json: No such"):
        hardware.record(appliance, admin_session, tmp_path / "no-such-dir" / "x.json")
    with pytest.raises(InvalidInput, match="Is a directory"):
        hardware.record(appliance, admin_session, tmp_path)
    assert audit.events(appliance, admin_session, EventFilter(action="hardware.record")) == []


def test_a_note_that_is_not_one_line_is_refused_before_anything_is_written(
        appliance, admin_session, tmp_path):
    """A newline in --note was written into the reading, which then could not be read back
    (a reading's text must be plain): refused where it is typed, nothing written or recorded."""
    (tmp_path / "readings").mkdir()
    out = tmp_path / "readings" / "host.json"
    with pytest.raises(InvalidInput, match=r"^the note contains a control character \('\\n'\)"):
        hardware.record(appliance, admin_session, out, note="lab A\nlab B")
    assert list(out.parent.iterdir()) == []
    assert audit.events(appliance, admin_session, EventFilter(action="hardware.record")) == []
    hardware.record(appliance, admin_session, out, note="  lab A  ")
    assert RecordedSource(out).read().note == "lab A"
