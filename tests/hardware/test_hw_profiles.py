"""Profile selection against recorded hosts: every reason kind, tie-breaks, pins, CPU fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.hardware import RecordedSource, read_inventory
from appliance.hardware.nvml import GpuInventory
from appliance.hardware.profiles import EngineProfile, select_profile

FIXTURES = Path(__file__).parent / "fixtures"


def host(name: str) -> GpuInventory:
    return read_inventory(RecordedSource(FIXTURES / name))


H100x8 = host("h100-sxm-80gb-x8.json")
H200x1 = host("h200-141gb-x1.json")
A100x4 = host("a100-sxm-80gb-x4.json")
A100_40x1 = host("a100-sxm-40gb-x1.json")
NO_DRIVER = GpuInventory(driver_found=False, error="NVML Shared Library Not Found")


def trt(pid: str, arch: str = "sm_90", tp: int = 1, pp: int = 1, mem: float = 20.0,
        version: str = "0.17.0") -> EngineProfile:
    return EngineProfile(id=pid, kind="trtllm_engine", gpu_archs=(arch,), trtllm_version=version,
                         tp_size=tp, pp_size=pp, min_gpu_memory_gib=mem)


VLLM = EngineProfile(id="vllm-any", kind="vllm", gpu_archs=("generic",), min_gpu_memory_gib=30)
CPU = EngineProfile(id="cpu", kind="cpu", gpu_archs=("cpu",))


def reasons(selection) -> dict[str, tuple[bool, str, str]]:
    return {c.profile_id: (c.fits, c.check, c.reason) for c in selection.candidates}


def test_parallelism_reason_matches_the_issue_wording():
    sel = select_profile([trt("h100-tp2", tp=2)], A100_40x1)
    assert sel.chosen is None
    assert reasons(sel)["h100-tp2"] == (
        False, "parallelism", "engine sm_90 tp2 needs 2 GPUs, this host has 1 A100 (sm_80)")
    assert sel.note == "no profile fits this host (1 A100 (sm_80))"


def test_architecture_reason():
    sel = select_profile([trt("h100-tp1")], A100x4)
    assert reasons(sel)["h100-tp1"] == (
        False, "arch", "engine sm_90 tp1 needs 1 sm_90 GPU, this host has 4 A100 (sm_80)")


def test_a_gpu_in_mig_mode_is_not_offered_whole():
    """A MIG-enabled H200 used to fit an engine or vLLM that needs the whole card: in MIG mode
    CUDA sees only the instances, so the install would fail at serving time."""
    mig = replace(H200x1, gpus=(replace(H200x1.gpus[0], mig_enabled=True),))
    sel = select_profile([trt("h200-tp1"), VLLM, CPU], mig)
    assert reasons(sel)["h200-tp1"] == (
        False, "mig", "engine sm_90 tp1 needs 1 whole GPU without MIG, this host has "
        "1 H200 (sm_90) with MIG enabled on GPU 0")
    assert reasons(sel)["vllm-any"][:2] == (False, "mig")
    assert sel.chosen == CPU and sel.fallback_to_cpu
    mixed = replace(H100x8, gpus=tuple(replace(g, mig_enabled=g.index < 7)
                                       for g in H100x8.gpus))
    sel = select_profile([trt("tp1"), trt("tp2", tp=2)], mixed)
    assert sel.chosen is not None and sel.chosen.id == "tp1"
    assert reasons(sel)["tp2"][:2] == (False, "mig")
    unknown = replace(H200x1, gpus=(replace(H200x1.gpus[0], mig_enabled=None),))
    assert select_profile([trt("h200-tp1")], unknown).chosen is not None


@pytest.mark.parametrize("name, short", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("Tesla V100-SXM2-32GB", "V100"), ("Tesla T4", "T4"),
])
def test_reasons_name_the_gpu_family(name: str, short: str):
    """A V100 or T4 (NVML names them "Tesla ...") used to read "1 Tesla (sm_70)"."""
    gpu = replace(A100_40x1.gpus[0], name=name)
    assert replace(A100_40x1, gpus=(gpu,)).describe_gpus() == f"1 {short} (sm_80)"


def test_an_arch_specific_target_fits_its_own_sm():
    """The bundle format takes "sm_90a" (CUDA's arch-specific Hopper target, which runs on
    compute capability 9.0 only): such an engine never fit an H100 or H200, "needs 1 sm_90a
    GPU, this host has 8 H100 (sm_90)", though they are the GPUs it was built for."""
    sel = select_profile([trt("hopper", arch="sm_90a"), CPU], H100x8)
    assert sel.chosen.id == "hopper" and reasons(sel)["hopper"][0]
    assert select_profile([trt("hopper", arch="sm_90a")], H200x1).chosen.id == "hopper"
    assert reasons(select_profile([trt("hopper", arch="sm_90a")], A100x4))["hopper"] == (
        False, "arch", "engine sm_90a tp1 needs 1 sm_90a GPU, this host has 4 A100 (sm_80)")
    assert select_profile([trt("x", arch="sm_9a")], H100x8).chosen is None


def test_generic_means_a_gpu_vllm_runs_on():
    """vLLM needs compute capability 7.0 or newer: a Pascal P100 (sm_60) used to fit the
    generic profile and win over the CPU fallback, to fail at serving time."""
    p100 = replace(A100_40x1, gpus=(replace(A100_40x1.gpus[0], name="Tesla P100-PCIE-16GB",
                                            compute_capability=(6, 0)),))
    vllm = replace(VLLM, min_gpu_memory_gib=0)
    sel = select_profile([vllm, CPU], p100)
    assert reasons(sel)["vllm-any"] == (
        False, "arch", "vllm any GPU tp1 needs 1 sm_70 or newer GPU, this host has "
        "1 P100 (sm_60)")
    assert sel.chosen == CPU and sel.fallback_to_cpu
    v100 = replace(p100, gpus=(replace(p100.gpus[0], compute_capability=(7, 0)),))
    assert select_profile([vllm, CPU], v100).chosen == vllm


def test_trtllm_version_reason():
    sel = select_profile([trt("old", version="0.12.0")], H100x8, supported_trtllm={"0.17.0"})
    assert reasons(sel)["old"] == (
        False, "trtllm_version",
        "engine sm_90 tp1 was built with TensorRT-LLM 0.12.0, this appliance runs 0.17.0")


def test_version_not_checked_when_runtime_unknown():
    assert select_profile([trt("old", version="0.12.0")], H100x8).chosen.id == "old"


def test_memory_reason():
    sel = select_profile([trt("big", arch="sm_80", tp=1, mem=60)], A100_40x1)
    assert reasons(sel)["big"] == (
        False, "memory", "engine sm_80 tp1 needs 60 GiB per GPU on 1 GPU, "
        "this host has 1 A100 (sm_80) with at most 40 GiB each")


def test_memory_reason_never_reads_as_enough():
    """An engine needing 40980 MiB on a 40 GiB A100 read "needs 40 GiB per GPU ... with at
    most 40 GiB each": both rounded to whole GiB. Said in MiB when GiB cannot tell them apart,
    the need rounded up and the memory down."""
    sel = select_profile([trt("big", arch="sm_80", mem=40980 / 1024)], A100_40x1)
    assert reasons(sel)["big"][2] == (
        "engine sm_80 tp1 needs 40980 MiB per GPU on 1 GPU, this host has 1 A100 (sm_80) "
        "with at most 40960 MiB each")
    sel = select_profile([trt("big", arch="sm_80", mem=40 + 1e-9)], A100_40x1)
    assert reasons(sel)["big"][2].endswith("needs 40961 MiB per GPU on 1 GPU, this host has "
                                           "1 A100 (sm_80) with at most 40960 MiB each")


def test_memory_reason_when_only_some_gpus_are_big_enough():
    """2 H100 and 2 H200 for an engine that needs 100 GiB on 4 GPUs read "with at most 140
    GiB each", as if the 100 GiB were there: it says how many GPUs have that much."""
    mixed = replace(H100x8, gpus=H100x8.gpus[:2] + tuple(
        replace(H200x1.gpus[0], index=i, uuid=f"GPU-h200-{i}") for i in (2, 3)))
    sel = select_profile([trt("big", tp=4, mem=100), trt("one", mem=100)], mixed)
    assert reasons(sel)["big"] == (
        False, "memory", "engine sm_90 tp4 needs 100 GiB per GPU on 4 GPUs, this host has "
        "2 H100 (sm_90) + 2 H200 (sm_90) and only 2 of the GPUs it could use have that much")
    assert sel.chosen.id == "one"
    mig = replace(mixed, gpus=mixed.gpus[:3] + (replace(mixed.gpus[3], mig_enabled=True),))
    assert reasons(select_profile([trt("big", tp=2, mem=100)], mig))["big"][2].endswith(
        "and only 1 of the GPUs it could use has that much")


def test_pipeline_parallelism_counts_gpus():
    sel = select_profile([trt("tp4pp2", tp=4, pp=2), trt("tp4pp4", tp=4, pp=4)], H100x8)
    assert sel.chosen.id == "tp4pp2"
    assert reasons(sel)["tp4pp4"][2] == (
        "engine sm_90 tp4 pp4 needs 16 GPUs, this host has 8 H100 (sm_90)")


def test_prefers_specific_over_generic_even_with_fewer_gpus():
    profiles = [replace(VLLM, tp_size=8), trt("h100-tp1"), CPU]
    sel = select_profile(profiles, H100x8)
    assert sel.chosen.id == "h100-tp1"
    assert sel.note == ("chose h100-tp1: GPU-specific engine sm_90 tp1 on 8 H100 (sm_90); "
                        "2 other profiles also fit")
    assert all(fits for fits, _, _ in reasons(sel).values())


def test_generic_when_no_specific_fits():
    sel = select_profile([trt("h100-tp1"), VLLM, CPU], A100x4)
    assert sel.chosen.id == "vllm-any"
    assert not sel.fallback_to_cpu
    assert reasons(sel)["vllm-any"] == (True, "fits", "vllm any GPU tp1 fits 4 A100 (sm_80)")


def test_larger_fitting_parallelism_then_tp_then_id():
    profiles = [trt("b-tp2", tp=2), trt("a-tp2", tp=2), trt("tp1pp4", pp=4), trt("tp4", tp=4),
                trt("tp8", tp=8)]
    assert select_profile(profiles, H100x8).chosen.id == "tp8"
    assert select_profile(profiles[:4], H100x8).chosen.id == "tp4"  # tp4 beats tp1 pp4
    assert select_profile(profiles[:2], H100x8).chosen.id == "a-tp2"
    assert select_profile(list(reversed(profiles[:2])), H100x8).chosen.id == "a-tp2"


def test_h200_single_gpu_picks_the_tp1_engine():
    sel = select_profile([trt("tp1", mem=100), trt("tp2", tp=2)], H200x1)
    assert sel.chosen.id == "tp1"
    assert reasons(sel)["tp2"][1] == "parallelism"


def test_gpus_nvml_could_not_read_are_not_called_no_gpu():
    """A driver that answers but fails a query (a GPU fallen off the bus) read "this host has
    no GPU" in every reason, on a host full of GPUs."""
    lost = GpuInventory(driver_found=True, driver_version="550.54.15", error="GPU is lost")
    sel = select_profile([trt("tp1"), CPU], lost)
    assert reasons(sel)["tp1"][2] == "engine sm_90 tp1 needs 1 GPU, this host has no GPU NVML " \
        "could read"
    assert sel.host == "NVIDIA driver found but NVML could not read the GPUs: GPU is lost"
    empty = GpuInventory(driver_found=True, driver_version="550.54.15")
    assert reasons(select_profile([trt("tp1")], empty))["tp1"][2].endswith("has no GPU")


def test_no_driver_falls_back_to_cpu():
    sel = select_profile([trt("h100-tp1"), VLLM, CPU], NO_DRIVER)
    assert sel.chosen.id == "cpu" and sel.fallback_to_cpu
    assert sel.note == "no NVIDIA driver found: falling back to CPU profile cpu"
    assert reasons(sel)["h100-tp1"] == (
        False, "driver", "engine sm_90 tp1 needs an NVIDIA GPU, no NVIDIA driver found")
    assert reasons(sel)["vllm-any"][1] == "driver"
    assert reasons(sel)["cpu"] == (True, "fits",
                                   "cpu profile runs without a GPU; no NVIDIA driver found")


def test_no_driver_without_cpu_profile_says_so():
    sel = select_profile([trt("h100-tp1")], NO_DRIVER)
    assert sel.chosen is None
    assert sel.note == ("no NVIDIA driver found, and there is no CPU-capable profile "
                        "to fall back to")


def test_gpu_host_uses_cpu_only_when_no_gpu_profile_fits():
    sel = select_profile([trt("h100-tp2", tp=2), CPU], A100_40x1)
    assert sel.chosen.id == "cpu" and sel.fallback_to_cpu
    assert sel.note == "no GPU profile fits this host: falling back to CPU profile cpu"


def test_pin_overrides_preference_but_not_checks():
    profiles = [trt("tp8", tp=8), trt("tp2", tp=2), trt("huge", mem=500)]
    pinned = select_profile(profiles, H100x8, pinned="tp2")
    assert pinned.chosen.id == "tp2" and pinned.pinned == "tp2"
    assert pinned.note == "pinned by admin: engine sm_90 tp2 fits 8 H100 (sm_90)"
    refused = select_profile(profiles, H100x8, pinned="huge")
    assert refused.chosen is None and refused.pinned == "huge"
    assert refused.note == ("pinned profile huge does not fit: engine sm_90 tp1 needs 500 GiB "
                            "per GPU on 1 GPU, this host has 8 H100 (sm_90) "
                            "with at most 79.6 GiB each")


def test_pin_to_unknown_profile_is_refused():
    with pytest.raises(InvalidInput, match="no profile 'nope' to pin"):
        select_profile([trt("tp1")], H100x8, pinned="nope")


def test_selection_is_json_serialisable():
    sel = select_profile([trt("h100-tp2", tp=2), CPU], A100_40x1)
    data = json.loads(json.dumps(sel.to_dict()))
    assert data["chosen"] == "cpu" and data["fallback_to_cpu"] is True
    assert data["host"] == "1 x NVIDIA A100-SXM4-40GB (sm_80, 40 GiB), driver 535.161.08"
    assert data["candidates"][0] == {
        "profile_id": "h100-tp2", "fits": False, "check": "parallelism",
        "reason": "engine sm_90 tp2 needs 2 GPUs, this host has 1 A100 (sm_80)"}


def test_no_profiles_at_all():
    sel = select_profile([], H100x8)
    assert sel.chosen is None and sel.note == "no engine profiles to choose from"


def test_duplicate_ids_refused():
    with pytest.raises(InvalidInput, match="duplicate profile ids: x"):
        select_profile([trt("x"), trt("x", tp=2)], H100x8)


@pytest.mark.parametrize("data, message", [
    ({"id": "a", "kind": "tensorflow", "gpu_archs": ["sm_90"]}, "unknown kind"),
    ({"id": "a", "kind": "trtllm_engine", "gpu_archs": ["sm_90"]}, "needs its version"),
    ({"id": "a", "kind": "trtllm_engine", "gpu_archs": ["generic"], "trtllm_version": "1"},
     "specific GPU architecture"),
    ({"id": "a", "kind": "cpu", "gpu_archs": ["cpu"], "tp_size": 2}, "takes no GPU"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["cpu"]}, "only kind cpu"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "tp_size": 0}, "at least 1"),
    ({"id": "a", "kind": "vllm", "gpu_archs": []}, "no GPU architecture"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "min_gpu_memory_gib": "nan"}, "finite"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "min_gpu_memory_gib": -1}, "finite"),
    ({"id": "a", "kind": "vllm"}, "malformed"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "tpsize": 2}, "unknown keys tpsize"),
    # int() used to make tp 2.5 into 2 and true into 1, and raise OverflowError on Infinity
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "tp_size": 2.5},
     r"malformed \(tp_size is 2.5, not a whole number\)"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "pp_size": True},
     r"malformed \(pp_size is True, not a whole number\)"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "tp_size": float("inf")},
     r"malformed \(tp_size is inf, not a whole number\)"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["sm_90"], "tp_size": "2"},
     r"malformed \(tp_size is '2', not a whole number\)"),
    # Kept in the hardware.fit event, whose canonical JSON holds neither: a traceback there
    ({"id": "a", "kind": "cpu", "gpu_archs": ["cpu"], "extra": {"x": 2 ** 60}},
     r"malformed \(1152921504606846976 exceeds safe integer domain"),
    ({"id": "a", "kind": "cpu", "gpu_archs": ["cpu"], "extra": {"x": float("nan")}},
     r"malformed \(nan is not representable"),
    ({"id": "a", "kind": "cpu", "gpu_archs": ["cpu"], "trtllm_version": {"v": 1}},
     r"malformed \(trtllm_version is \{'v': 1\}, not a string\)"),
])
def test_bad_profiles_refused(data: dict, message: str):
    with pytest.raises(InvalidInput, match=message):
        EngineProfile.from_dict(data)


@pytest.mark.parametrize("data, message", [
    ({"id": "a\nno    b: forged", "kind": "cpu", "gpu_archs": ["cpu"]},
     "engine profile 'a\\nno    b: forged': id contains a control character ('\\n')"),
    ({"id": "a\ud800", "kind": "cpu", "gpu_archs": ["cpu"]},
     "engine profile 'a\\ud800': id is not UTF-8 text"),
    ({"id": "a", "kind": "vllm", "gpu_archs": ["generic\x1b[2J"]},
     "engine profile 'a': gpu_archs contains a control character ('\\x1b')"),
    ({"id": "a", "kind": "trtllm_engine", "gpu_archs": ["sm_90"], "trtllm_version": "0.17\r"},
     "engine profile 'a': trtllm_version contains a control character ('\\r')"),
])
def test_profiles_whose_text_is_not_plain_are_refused(data: dict, message: str):
    """Ids, architectures and versions are printed in every reason and kept in the
    hardware.fit event: a newline in an id forged a line of `hw fit`, a lone surrogate was a
    traceback when the event was hashed."""
    with pytest.raises(InvalidInput) as info:
        EngineProfile.from_dict(data)
    assert info.value.message == message


def test_profile_round_trips():
    p = trt("x", arch="sm_80", tp=2, pp=2, mem=35.5)
    assert EngineProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p
