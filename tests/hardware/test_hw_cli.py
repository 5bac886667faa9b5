"""`appliance hw ...` as typed: the real entry point in a subprocess, against a test appliance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.clock import Clock
from appliance.hardware import GpuInventory, read_inventory
from tests.conftest import ADMIN, PASSWORD, cli_env
from tests.hardware.host import assert_matches_smi, smi_csv, smi_rows

APPLIANCE = str(Path(sys.executable).parent / "appliance")
FIXTURES = Path(__file__).parent / "fixtures"
ENGINES = FIXTURES / "engines"


def hw(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [APPLIANCE, "hw", *args, "--user", ADMIN, "--password-stdin"], input=PASSWORD + "\n",
        capture_output=True, text=True, env={**cli_env(home), **(env or {})}, timeout=120)


@pytest.fixture
def clock() -> Clock:
    """The CLI subprocess reads the real clock, so the appliance is made on it too: a password
    set at the stepping clock's fixed date would look months old (expired) to the CLI."""
    return Clock()


@pytest.fixture
def home(appliance) -> Path:
    """The appliance fixture's home (FAST password settings), for the CLI to open."""
    return appliance.layout.root


def test_show_json_this_host(home: Path):
    r = hw(home, "show", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["source"] == "nvml"
    if smi_csv() is not None:
        assert_matches_smi(GpuInventory.from_dict(data), smi_csv())
        return
    assert data["summary"] == "no NVIDIA driver found" and data["driver_found"] is False
    assert data["gpus"] == []


def test_show_text_this_host(home: Path):
    r = hw(home, "show")
    assert r.returncode == 0, r.stderr
    if smi_csv() is not None:
        rows = smi_rows(smi_csv())
        assert r.stdout.startswith(f"{len(rows)} x ") and "still works" not in r.stdout
        assert all(row["uuid"] in r.stdout for row in rows)
        return
    assert r.stdout.splitlines()[0] == "no NVIDIA driver found"
    assert "still works" in r.stdout


@pytest.mark.parametrize("name, count, arch", [
    ("h100-sxm-80gb-x8.json", 8, "sm_90"), ("h200-141gb-x1.json", 1, "sm_90"),
    ("a100-sxm-80gb-x4.json", 4, "sm_80"), ("a100-sxm-40gb-x1.json", 1, "sm_80")])
def test_show_json_recorded(home: Path, name: str, count: int, arch: str):
    r = hw(home, "show", "--json", "--reading", str(FIXTURES / name))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data["gpus"]) == count and data["source"] == f"recorded:{name}"
    assert {tuple(g["compute_capability"]) for g in data["gpus"]} == {
        (int(arch[3]), int(arch[4]))}


def test_reading_from_environment(home: Path):
    r = hw(home, "show", "--json",
           env={"APPLIANCE_GPU_READING": str(FIXTURES / "h200-141gb-x1.json")})
    assert json.loads(r.stdout)["summary"] == "1 x NVIDIA H200 (sm_90, 140 GiB), driver 550.90.07"


def test_fit_json_h100(home: Path):
    r = hw(home, "fit", str(ENGINES), "--json", "--trtllm", "0.17.0",
           "--reading", str(FIXTURES / "h100-sxm-80gb-x8.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["chosen"] == "llama-h100-fp8-tp2"
    assert data["chosen_profile"]["tp_size"] == 2
    assert [c["profile_id"] for c in data["candidates"]] == [
        "llama-h100-fp8-tp2", "llama-a100-bf16-tp1", "llama-h100-bf16-tp1", "llama-cpu"]


def test_fit_on_a_replayed_reading_says_so(home: Path):
    """"host: 8 x NVIDIA H100 ..." on a host without a GPU, with nothing in the text or the
    JSON to say the reading was replayed from a file (`hw show` said so)."""
    args = ["fit", str(ENGINES), "--reading", str(FIXTURES / "h100-sxm-80gb-x8.json")]
    r = hw(home, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (
        "host: 8 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15 "
        "(replayed reading: recorded:h100-sxm-80gb-x8.json)")
    data = json.loads(hw(home, *args, "--json").stdout)
    assert data["source"] == "recorded:h100-sxm-80gb-x8.json"
    assert json.loads(hw(home, "fit", str(ENGINES), "--json").stdout)["source"] == "nvml"


def test_fit_this_host(home: Path):
    r = hw(home, "fit", str(ENGINES), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    if smi_csv() is not None:  # a server: its reading, and an engine chosen for it
        assert data["host"] == read_inventory().summary() and data["chosen"]
        return
    assert data["chosen"] == "llama-cpu" and data["fallback_to_cpu"] is True
    assert data["note"] == "no NVIDIA driver found: falling back to CPU profile llama-cpu"


def test_fit_pinned_misfit_exits_with_one_line_error(home: Path):
    r = hw(home, "fit", str(ENGINES), "--json", "--pin", "llama-a100-bf16-tp1",
           "--reading", str(FIXTURES / "h100-sxm-80gb-x8.json"))
    assert r.returncode == 9
    assert json.loads(r.stdout)["chosen"] is None  # the reasons are still printed
    # Not "no engine profile fits this host" (three do), nor "run `appliance hw fit`", the
    # command just run: the pin does not fit, and which ones do.
    assert r.stderr == (
        "error: pinned profile llama-a100-bf16-tp1 does not fit: engine sm_80 tp1 needs 1 "
        "sm_80 GPU, this host has 8 H100 (sm_90) (pin one that fits (llama-h100-fp8-tp2, "
        "llama-h100-bf16-tp1, llama-cpu), or leave out --pin; nothing was changed)\n")


def test_fit_with_nothing_fitting_points_at_the_reasons_it_printed(home: Path, tmp_path: Path):
    engines = tmp_path / "engines"
    shutil.copytree(ENGINES / "llama-h100-fp8-tp2", engines / "llama-h100-fp8-tp2")
    r = hw(home, "fit", str(engines), "--reading", str(FIXTURES / "a100-sxm-40gb-x1.json"))
    assert r.returncode == 9
    assert "no    llama-h100-fp8-tp2: engine sm_90 tp2 needs 2 GPUs" in r.stdout
    assert r.stderr == (
        "error: no engine profile fits this host: no profile fits this host (1 A100 (sm_80)) "
        "(each profile's reason is listed above; nothing was changed)\n")


def test_fit_text_lists_reasons(home: Path):
    r = hw(home, "fit", str(ENGINES), "--reading", str(FIXTURES / "a100-sxm-40gb-x1.json"))
    assert r.returncode == 0, r.stderr
    assert ("no    llama-h100-fp8-tp2: engine sm_90 tp2 needs 2 GPUs, this host has "
            "1 A100 (sm_80)") in r.stdout
    assert "chosen: llama-cpu" in r.stdout


def test_fit_on_a_profile_id_that_is_not_utf8_is_one_line(home: Path, tmp_path: Path):
    """A lone surrogate in profile.json's id was a traceback (CanonicalizationError) when
    hardware.fit was recorded; the refusal is recorded instead."""
    (tmp_path / "engines" / "x").mkdir(parents=True)
    (tmp_path / "engines" / "x" / "profile.json").write_text(
        '{"id": "cpu-\\ud800", "kind": "cpu", "gpu_archs": ["cpu"]}')
    r = hw(home, "fit", str(tmp_path / "engines"))
    assert r.returncode == 2 and r.stderr == (
        "error: engine profile 'cpu-\\ud800': id is not UTF-8 text (correct the profile)\n")


def test_fit_on_a_profile_the_trail_cannot_hold_is_one_line(home: Path, tmp_path: Path):
    """profile.json's extra with an integer past 2**53 was a traceback (IntegerDomainError)
    when the chosen profile was recorded in hardware.fit."""
    (tmp_path / "engines" / "x").mkdir(parents=True)
    (tmp_path / "engines" / "x" / "profile.json").write_text(
        '{"id": "c", "kind": "cpu", "gpu_archs": ["cpu"], "extra": {"n": 1152921504606846976}}')
    r = hw(home, "fit", str(tmp_path / "engines"))
    assert r.returncode == 2 and r.stderr.startswith(
        "error: engine profile 'c' is malformed (1152921504606846976 exceeds safe integer ")
    assert r.stderr.count("\n") == 1


def test_fit_bad_path_is_one_line(home: Path, tmp_path: Path):
    r = hw(home, "fit", str(tmp_path / "nowhere"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["show", "fit"])
def test_a_wrongly_typed_reading_is_one_line(home: Path, tmp_path: Path, command: str):
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    data["gpus"][0]["memory_total_bytes"] = "big"
    reading = tmp_path / "reading.json"
    reading.write_text(json.dumps(data))
    args = ["show", "--reading", str(reading)] if command == "show" else [
        "fit", str(ENGINES), "--reading", str(reading)]
    r = hw(home, *args)
    assert r.returncode == 2 and r.stderr == (
        "error: malformed GPU reading (gpus[0].memory_total_bytes is 'big', not a "
        "non-negative integer) (record it again with `appliance hw record`)\n")


@pytest.mark.parametrize("command", ["show", "fit", "record"])
def test_a_gpu_name_that_is_not_utf8_is_one_line(home: Path, tmp_path: Path, command: str):
    """A lone surrogate in a name (JSON "\\ud800") was a traceback: UnicodeEncodeError
    printing `hw show`, CanonicalizationError recording `hw fit` and `hw record`."""
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    data["gpus"][0]["name"] = "NVIDIA H100 \ud800"
    reading = tmp_path / "reading.json"
    reading.write_text(json.dumps(data))
    args = {"show": ["show"], "fit": ["fit", str(ENGINES)],
            "record": ["record", "--out", str(tmp_path / "copy.json")]}[command]
    r = hw(home, *args, "--reading", str(reading))
    assert r.returncode == 2 and r.stderr == (
        "error: malformed GPU reading (gpus[0].name is not UTF-8 text) (record it again with "
        "`appliance hw record`)\n")
    assert not (tmp_path / "copy.json").exists()


def test_a_replayed_reading_without_a_driver_says_it_is_replayed(home: Path, tmp_path: Path):
    """It read exactly like this host's own "no NVIDIA driver found": on a GPU server, a
    reading taken elsewhere passed for this host losing its driver."""
    reading = tmp_path / "nodriver.json"
    reading.write_text(json.dumps({"format": "appliance.gpu-reading/1", "driver_found": False,
                                   "error": "NVML Shared Library Not Found", "gpus": []}))
    r = hw(home, "show", "--reading", str(reading))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "no NVIDIA driver found", "  (replayed reading: recorded:nodriver.json)",
        "  (NVML Shared Library Not Found)",
        "  The appliance still works; only CPU-capable profiles can be served."]


def test_fit_on_a_gpu_index_beyond_json_numbers_is_one_line(home: Path, tmp_path: Path):
    """Index 2**60 passed the reading's checks and was a traceback (IntegerDomainError) when
    `hw fit` recorded the inventory."""
    data = json.loads((FIXTURES / "h100-80gb-hbm3-x1-recorded.json").read_text())
    data["gpus"][0]["index"] = 2 ** 60
    reading = tmp_path / "reading.json"
    reading.write_text(json.dumps(data))
    r = hw(home, "fit", str(ENGINES), "--reading", str(reading))
    assert r.returncode == 2 and r.stderr == (
        "error: malformed GPU reading (gpus[0].index is 1152921504606846976, more than 65535) "
        "(record it again with `appliance hw record`)\n")


def test_record_then_replay(home: Path, tmp_path: Path):
    out = tmp_path / "reading.json"
    r = hw(home, "record", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"out": str(out), "summary": read_inventory().summary(),
                                    "source": "nvml"}
    assert smi_csv() is not None or read_inventory().summary() == "no NVIDIA driver found"
    r = hw(home, "show", "--json", "--reading", str(out))
    assert json.loads(r.stdout)["source"] == "recorded:reading.json"


def test_record_of_a_replayed_reading_says_so(home: Path, tmp_path: Path):
    """`hw record --reading` copies that reading: "Reading written to ...: 8 x NVIDIA H100"
    on a host without a GPU read as if this host had been recorded."""
    out = tmp_path / "copy.json"
    r = hw(home, "record", "--out", str(out), "--reading", str(FIXTURES / "h200-141gb-x1.json"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"Reading written to {out}: 1 x NVIDIA H200 (sm_90, 140 GiB), driver "
                        "550.90.07 (replayed reading: recorded:h200-141gb-x1.json)\n")
    r = hw(home, "record", "--out", str(tmp_path / "again.json"), "--json",
           "--reading", str(out))
    assert json.loads(r.stdout)["source"] == "recorded:copy.json"


def test_fit_needs_a_user(home: Path):
    r = subprocess.run([APPLIANCE, "hw", "fit", str(ENGINES)], capture_output=True, text=True,
                       env=cli_env(home), timeout=120)
    assert r.returncode == 2 and "pass --user NAME" in r.stderr


@pytest.mark.parametrize("command", ["show", "fit", "record"])
def test_an_empty_reading_is_refused_as_empty(home: Path, tmp_path: Path, command: str):
    """`--reading ""` (an unset shell variable) read as the path ".": "GPU reading . is
    unreadable (Is a directory)", naming neither the option nor the mistake."""
    out = tmp_path / "reading.json"
    args = {"show": ["show"], "fit": ["fit", str(ENGINES)],
            "record": ["record", "--out", str(out)]}[command]
    r = hw(home, *args, "--reading", "")
    assert r.returncode == 2 and r.stderr == (
        "error: --reading is empty (pass a file written by `appliance hw record`, or leave "
        "--reading out to ask NVML)\n")
    assert not out.exists()
