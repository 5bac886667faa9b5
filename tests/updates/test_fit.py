"""Profiles from a bundle's signed components: the engine's memory as signed, not rounded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from appliance.hardware import RecordedSource, read_inventory
from appliance.hardware.profiles import check_profile
from appliance.updates.fit import bundle_profiles, serving_config
from appliance.updates.lifecycle import BundleRecord, ComponentRecord, State

FIXTURES = Path(__file__).parents[1] / "hardware" / "fixtures"
MIB = 1 << 20


def engine_bundle(min_mib: int) -> BundleRecord:
    engine = ComponentRecord(
        "llama-h100-tp1", "trtllm_engine", "engine", "0" * 64,
        {"engine": {"gpu_archs": ["sm_90"], "trtllm_version": "0.17.0", "tp": 1, "pp": 1,
                    "min_gpu_memory_mib": min_mib}}, ())
    return BundleRecord(1, "f" * 64, "clinical", 1, "pub", State.VERIFIED, "{}", 0, "usb",
                        "2026-01-01T00:00:00Z", "itops", None, (engine,))


def test_an_engine_needing_more_memory_than_the_gpu_has_does_not_fit():
    """The signed MiB used to be rounded to 2 decimals of GiB, sometimes down: an engine that
    needs 81556 MiB became 79.64 GiB and fitted a GPU of 81552 MiB (79.6406 GiB)."""
    h100 = read_inventory(RecordedSource(FIXTURES / "h100-80gb-hbm3-x1-recorded.json"))
    gpu = h100.gpus[0]
    short = replace(h100, gpus=(replace(gpu, memory_total_bytes=81552 * MIB,
                                        memory_free_bytes=81000 * MIB),))
    [needs_more] = bundle_profiles(engine_bundle(81556), [])
    assert not check_profile(needs_more, short).fits
    assert check_profile(needs_more, short).check == "memory"
    [exact] = bundle_profiles(engine_bundle(81552), [])
    assert check_profile(exact, short).fits


def component(name: str, kind: str, digest: str, **info) -> ComponentRecord:
    return ComponentRecord(name, kind, kind, digest, info, ())


def test_vllm_serves_only_the_adapters_of_the_base_it_loads():
    """With two base models (one for vLLM, one for the CPU), serving.json used to hand vLLM
    every adapter, including those trained on the other base, as its LoRA modules."""
    a, b = "a" * 64, "b" * 64
    parts = (component("base-a", "base_model", a, tags=["vllm"]),
             component("base-b", "base_model", b, tags=["cpu"]),
             component("lora-a", "lora_adapter", "c" * 64,
                       base_model={"name": "base-a", "digest": a}),
             component("lora-b", "lora_adapter", "d" * 64,
                       base_model={"name": "base-b", "digest": b}))
    bundle = replace(engine_bundle(1), components=parts)
    profiles = {p.kind: p for p in bundle_profiles(bundle, [])}
    vllm = serving_config(bundle, profiles["vllm"], list(parts))
    assert vllm["model_dir"] == "components/base-a"
    assert [x["name"] for x in vllm["adapters"]] == ["lora-a"]
    cpu = serving_config(bundle, profiles["cpu"], list(parts))
    assert cpu["model_dir"] == "components/base-b"
    assert [x["name"] for x in cpu["adapters"]] == ["lora-b"]


def test_a_vllm_profile_needs_the_memory_its_weights_take():
    """vLLM profiles declared no memory, so a base model bigger than the GPU fitted, was
    approved, and failed its health check after the switch. Now its signed file sizes (and
    its adapters') within vLLM's 90 % of the GPU are the floor."""
    gib = 1 << 30
    base = ComponentRecord("big-base", "base_model", "base_model", "a" * 64,
                           {"tags": ["vllm"]},
                           (("model-1.safetensors", "1" * 64, 10 * gib),
                            ("model-2.safetensors", "2" * 64, 10 * gib),
                            ("config.json", "3" * 64, 700)))
    lora = ComponentRecord("lora", "lora_adapter", "adapter", "c" * 64,
                           {"base_model": {"name": "big-base", "digest": "a" * 64}},
                           (("adapter.safetensors", "4" * 64, gib // 2),))
    other = ComponentRecord("other-lora", "lora_adapter", "adapter", "d" * 64,
                            {"base_model": {"name": "x", "digest": "e" * 64}},
                            (("adapter.safetensors", "5" * 64, 5 * gib),))
    bundle = replace(engine_bundle(1), components=(base, lora, other))
    [vllm] = [p for p in bundle_profiles(bundle, []) if p.kind == "vllm"]
    assert 22.77 < vllm.min_gpu_memory_gib < 22.78  # (20 + 0.5 GiB + 700 B) / 0.9
    h100 = read_inventory(RecordedSource(FIXTURES / "h100-80gb-hbm3-x1-recorded.json"))
    assert check_profile(vllm, h100).fits
    small = replace(h100, gpus=(replace(h100.gpus[0], memory_total_bytes=16 * gib,
                                        memory_free_bytes=15 * gib),))
    refused = check_profile(vllm, small)
    assert (refused.fits, refused.check) == (False, "memory")
    assert refused.reason.startswith("vllm any GPU tp1 needs 22.8 GiB per GPU on 1 GPU")
