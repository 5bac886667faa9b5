"""Readings replay exactly: fixtures written from NVIDIA's published figures, and one recorded
on a real H100 with `appliance hw record`, held to the nvidia-smi CSV taken beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.hardware import RecordedSource, read_inventory, write_reading
from appliance.hardware.catalog import read_engines_dir
from appliance.hardware.nvml import MAX_READING
from appliance.hardware.profiles import select_profile
from tests.hardware.host import assert_matches_smi

FIXTURES = Path(__file__).parent / "fixtures"
# Taken on real machines with `appliance hw record`, nvidia-smi's CSV from the same run beside.
RECORDED = {
    "h100-80gb-hbm3-x1-recorded": ("1 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB), driver 580.159.04",
                                   "1 H100 (sm_90)"),
    "h200-x1-recorded": ("1 x NVIDIA H200 (sm_90, 140 GiB), driver 580.159.04", "1 H200 (sm_90)"),
}

EXPECTED = {
    "h100-sxm-80gb-x8.json": (
        "8 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15", "8 H100 (sm_90)",
        "12.4"),
    "h200-141gb-x1.json": (
        "1 x NVIDIA H200 (sm_90, 140 GiB), driver 550.90.07", "1 H200 (sm_90)", "12.4"),
    "a100-sxm-80gb-x4.json": (
        "4 x NVIDIA A100-SXM4-80GB (sm_80, 80 GiB each), driver 535.161.08", "4 A100 (sm_80)",
        "12.2"),
    "a100-sxm-40gb-x1.json": (
        "1 x NVIDIA A100-SXM4-40GB (sm_80, 40 GiB), driver 535.161.08", "1 A100 (sm_80)",
        "12.2"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_replays(name: str):
    summary, host, cuda = EXPECTED[name]
    inventory = read_inventory(RecordedSource(FIXTURES / name))
    assert inventory.driver_found
    assert inventory.summary() == summary
    assert inventory.describe_gpus() == host
    assert inventory.cuda_driver_version == cuda
    assert [g.index for g in inventory.gpus] == list(range(inventory.gpu_count))
    assert len({g.uuid for g in inventory.gpus}) == inventory.gpu_count
    for gpu in inventory.gpus:
        assert gpu.memory_free_bytes < gpu.memory_total_bytes
        assert gpu.ecc_volatile_uncorrected == 0 and gpu.mig_enabled is False
    assert inventory.source == f"recorded:{name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_says_it_is_not_a_recording(name: str):
    data = json.loads((FIXTURES / name).read_text())
    assert data["note"].startswith("From NVIDIA's published figures, not a recorded reading.")
    assert data["summary"] == EXPECTED[name][0]  # the stored summary matches what we compute


def test_write_then_read_round_trips(tmp_path: Path):
    original = read_inventory(RecordedSource(FIXTURES / "a100-sxm-80gb-x4.json"))
    out = tmp_path / "reading.json"
    write_reading(original, out, note="copied")
    again = read_inventory(RecordedSource(out))
    assert again.gpus == original.gpus
    assert (again.driver_version, again.cuda_driver_version) == ("535.161.08", "12.2")
    assert again.note == "copied"


def test_this_hosts_reading_round_trips(tmp_path: Path):
    original = read_inventory()  # the real NVML path: no driver in CI, GPUs on a server
    out = tmp_path / "host.json"
    write_reading(original, out)
    again = read_inventory(RecordedSource(out))
    assert again.to_dict() | {"source": "nvml"} == original.to_dict()


@pytest.mark.parametrize("stem", sorted(RECORDED))
def test_recording_reads_what_nvidia_smi_read(stem: str):
    inventory = read_inventory(RecordedSource(FIXTURES / f"{stem}.json"))
    assert_matches_smi(inventory, (FIXTURES / f"{stem}.nvidia-smi.csv").read_text())
    assert inventory.summary() == RECORDED[stem][0]
    assert inventory.cuda_driver_version == "13.0"
    assert inventory.note.startswith("Recorded, not written by hand")


def test_published_figures_are_not_held_to_a_recording():
    """The witness can fail: the hand-written 8-GPU H100 differs from the real one."""
    with pytest.raises(AssertionError):
        assert_matches_smi(read_inventory(RecordedSource(FIXTURES / "h100-sxm-80gb-x8.json")),
                           (FIXTURES / "h100-80gb-hbm3-x1-recorded.nvidia-smi.csv").read_text())


@pytest.mark.parametrize("stem", sorted(RECORDED))
def test_recording_fits_the_single_gpu_engine(stem: str):
    """What `appliance hw fit` chose on each machine itself, replayed from its reading."""
    selection = select_profile(read_engines_dir(FIXTURES / "engines"),
                               read_inventory(RecordedSource(FIXTURES / f"{stem}.json")))
    assert selection.chosen.id == "llama-h100-bf16-tp1" and not selection.fallback_to_cpu
    host = RECORDED[stem][1]
    assert {c.profile_id: c.reason for c in selection.candidates if not c.fits} == {
        "llama-h100-fp8-tp2": f"engine sm_90 tp2 needs 2 GPUs, this host has {host}",
        "llama-a100-bf16-tp1": f"engine sm_80 tp1 needs 1 sm_80 GPU, this host has {host}"}


@pytest.mark.parametrize("content, message", [
    ("{not json", "unreadable"),
    ("[1, 2]", "not a JSON object"),
    ('{"format": "something-else"}', "not a GPU reading"),
    ('{"format": "appliance.gpu-reading/1", "driver_found": true, "gpus": [{"index": 0}]}',
     "malformed GPU reading"),
])
def test_bad_readings_are_refused_plainly(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        RecordedSource(path).read()


WRONG_TYPES = [
    (("gpus", 0, "memory_total_bytes"), "big",
     "gpus[0].memory_total_bytes is 'big', not a non-negative integer"),
    (("gpus", 0, "name"), ["x"], "gpus[0].name is ['x'], not a string"),
    (("gpus", 0, "index"), True, "gpus[0].index is True, not a non-negative integer"),
    (("gpus", 0, "memory_free_bytes"), -1, "gpus[0].memory_free_bytes is -1, not a"),
    (("gpus", 0, "temperature_c"), "hot", "gpus[0].temperature_c is 'hot', not a "
     "non-negative integer or null"),
    (("gpus", 0, "mig_enabled"), 1, "gpus[0].mig_enabled is 1, not true or false or null"),
    (("gpus", 0, "compute_capability"), [9, "0"], "gpus[0].compute_capability is [9, '0'], "
     "not two integers"),
    (("gpus", 0), "H100", "gpus[0] is 'H100', not an object"),
    (("gpus",), {"0": {}}, "gpus is {'0': {}}, not a list"),
    (("driver_found",), "yes", "driver_found is 'yes', not true or false"),
    (("driver_version",), 580, "driver_version is 580, not a string or null"),
]


@pytest.mark.parametrize("path, value, message", WRONG_TYPES,
                         ids=[".".join(map(str, p)) for p, _, _ in WRONG_TYPES])
def test_a_real_reading_with_a_wrongly_typed_field_is_refused_plainly(
        tmp_path: Path, path: tuple, value: object, message: str):
    """Edited from the H100 recording: a wrong type used to pass the parser and surface as a
    TypeError wherever the field was first used (the summary, the fit)."""
    err = _read_edited(tmp_path, path, value)
    assert err.message.startswith(f"malformed GPU reading ({message}")
    assert err.hint == "record it again with `appliance hw record`"


def _read_edited(tmp_path: Path, path: tuple, value: object) -> InvalidInput:
    """The H100 recording with the field at `path` set to `value`, read: the refusal."""
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    bad = tmp_path / "reading.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InvalidInput) as err:
        RecordedSource(bad).read()
    return err.value


IMPOSSIBLE = [
    (("gpus", 0, "memory_total_bytes"), 10 ** 400,
     "gpus[0].memory_total_bytes is 1" + "0" * 36 + "..., more than 1125899906842624"),
    (("gpus", 0, "memory_free_bytes"), 10 ** 12,
     "gpus[0].memory_free_bytes is more than its memory_total_bytes"),
    (("gpus", 0, "compute_capability"), [1, 10], "gpus[0].compute_capability is [1, 10], not a "
     "real one"),
    (("gpus", 0, "utilization_gpu_pct"), 250, "gpus[0].utilization_gpu_pct is 250, more than 100"),
    # An index past 2**53 was a traceback in `hw fit`: the audit trail's canonical JSON holds
    # integers only up to 2**53 - 1 (IntegerDomainError).
    (("gpus", 0, "index"), 2 ** 60, "gpus[0].index is 1152921504606846976, more than 65535"),
    (("gpus", 0, "temperature_c"), 10 ** 30, "gpus[0].temperature_c is 1" + "0" * 30 +
     ", more than 1000"),
    (("gpus", 0, "ecc_volatile_uncorrected"), 2 ** 53, "gpus[0].ecc_volatile_uncorrected is "
     "9007199254740992, more than 9007199254740991"),
]


@pytest.mark.parametrize("path, value, message", IMPOSSIBLE,
                         ids=[".".join(map(str, p)) for p, _, _ in IMPOSSIBLE])
def test_a_reading_with_an_impossible_value_is_refused_plainly(
        tmp_path: Path, path: tuple, value: object, message: str):
    """A memory of 10**400 bytes used to pass and raise OverflowError in the summary (a
    traceback from `hw show --reading`); compute capability 1.10 read as sm_110 (11.0)."""
    err = _read_edited(tmp_path, path, value)
    assert err.message.startswith(f"malformed GPU reading ({message}")


NOT_PLAIN = [
    (("gpus", 0, "name"), "NVIDIA H100\nno    fake: forged",
     "gpus[0].name contains a control character ('\\n')"),
    (("gpus", 0, "name"), "NVIDIA \x1b[31mH100", "gpus[0].name contains a control character "
     "('\\x1b')"),
    (("gpus", 0, "uuid"), "GPU-\u202e0001", "gpus[0].uuid contains a control character "
     "('\\u202e')"),
    (("gpus", 0, "name"), "NVIDIA H100 \ud800", "gpus[0].name is not UTF-8 text"),
    (("driver_version",), "580\x1b[2J", "driver_version contains a control character "
     "('\\x1b')"),
    (("note",), "\udcff", "note is not UTF-8 text"),
]


@pytest.mark.parametrize("path, value, message", NOT_PLAIN,
                         ids=["newline", "escape", "bidi", "surrogate", "driver", "note"])
def test_a_reading_whose_text_is_not_plain_is_refused_plainly(
        tmp_path: Path, path: tuple, value: str, message: str):
    """A newline in a GPU name forged a line of `hw show` and `hw fit`; a lone surrogate (the
    JSON escape "\\ud800") was a traceback in `hw show`, `hw fit`, `hw record` and `update
    show`, where the name was printed or hashed into the audit event."""
    err = _read_edited(tmp_path, path, value)
    assert err.message == f"malformed GPU reading ({message})"


def test_a_reading_without_a_driver_version_does_not_name_one(tmp_path: Path):
    """driver_version may be null: the summary read "driver None", a driver named None."""
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    reading = tmp_path / "reading.json"
    reading.write_text(json.dumps({**data, "driver_version": None}))
    assert read_inventory(RecordedSource(reading)).summary() == (
        "1 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB), driver version unknown")
    reading.write_text(json.dumps({**data, "driver_version": None, "gpus": []}))
    assert read_inventory(RecordedSource(reading)).summary() == (
        "no GPUs visible, driver version unknown")


def test_gpus_without_a_driver_are_refused(tmp_path: Path):
    """driver_found false beside a list of GPUs read as "no NVIDIA driver found" in `hw show`
    and the fit, while `hw show --json` listed the GPUs: one reading, two answers."""
    err = _read_edited(tmp_path, ("driver_found",), False)
    assert err.message == "malformed GPU reading (gpus are listed but driver_found is false)"
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    none = tmp_path / "none.json"
    none.write_text(json.dumps({**data, "driver_found": False, "gpus": []}))
    assert read_inventory(RecordedSource(none)).summary() == "no NVIDIA driver found"


@pytest.mark.parametrize("key", ["index", "uuid"])
def test_a_gpu_listed_twice_is_refused_not_counted_twice(tmp_path: Path, key: str):
    """One H100 listed twice used to read as "2 H100" and fit a tp2 engine."""
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    gpu = data["gpus"][0]
    other = {"index": 1, "uuid": "GPU-00000000-0000-0000-0000-000000000001"}
    other.pop(key)
    data["gpus"].append({**gpu, **other})
    bad = tmp_path / "reading.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InvalidInput) as err:
        RecordedSource(bad).read()
    assert err.value.message.startswith(f"malformed GPU reading (gpus list {key} ")
    assert "more than once" in err.value.message


def test_a_binary_file_is_refused_plainly(tmp_path: Path):
    path = tmp_path / "engine.bin"
    path.write_bytes(b"\x89\xb7\x00\xff" * 64)
    with pytest.raises(InvalidInput, match="is unreadable .*utf-8"):
        RecordedSource(path).read()


def test_a_reading_nested_too_deeply_or_too_large_is_refused_plainly(tmp_path: Path):
    """Used to raise RecursionError (a traceback from `hw fit --reading`, `update show
    --reading`), or to read a file of any size, /dev/zero included, into memory."""
    nested = tmp_path / "nested.json"
    nested.write_text('{"gpus": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InvalidInput, match="is unreadable .*recursion"):
        RecordedSource(nested).read()
    big = tmp_path / "big.json"
    big.write_text('{"note": "' + "x" * MAX_READING + '"}')
    with pytest.raises(InvalidInput, match=f"is larger than {MAX_READING} bytes"):
        RecordedSource(big).read()
    with pytest.raises(InvalidInput, match=f"is larger than {MAX_READING} bytes"):
        RecordedSource(Path("/dev/zero")).read()


def test_missing_reading_is_refused(tmp_path: Path):
    with pytest.raises(InvalidInput, match="not found"):
        RecordedSource(tmp_path / "absent.json").read()
