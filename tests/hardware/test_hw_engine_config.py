"""TensorRT-LLM engine config.json: parsed without tensorrt_llm, cross-checked, refused on mismatch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import HardwareRefused, InvalidInput
from appliance.hardware.catalog import read_engines_dir
from appliance.hardware.engine_config import cross_check, read_engine_config, verify_engine
from appliance.hardware.profiles import EngineProfile

ENGINES = Path(__file__).parent / "fixtures" / "engines"


@pytest.fixture
def engines(tmp_path: Path) -> Path:
    """A private copy of the engine fixtures that a test may corrupt."""
    return Path(shutil.copytree(ENGINES, tmp_path / "engines"))


def declared(name: str, root: Path = ENGINES) -> EngineProfile:
    return EngineProfile.from_dict(json.loads((root / name / "profile.json").read_text()))


def edit_config(engine_dir: Path, change) -> None:
    path = engine_dir / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_reads_the_engine_config():
    cfg = read_engine_config(ENGINES / "llama-h100-fp8-tp2")
    assert (cfg.version, cfg.architecture, cfg.dtype) == ("0.17.0", "LlamaForCausalLM", "bfloat16")
    assert (cfg.tp_size, cfg.pp_size, cfg.cp_size, cfg.world_size) == (2, 1, 1, 2)
    assert (cfg.quant_algo, cfg.kv_cache_quant_algo) == ("FP8", "FP8")
    assert (cfg.max_batch_size, cfg.max_input_len, cfg.max_seq_len) == (128, 4096, 8192)
    assert cfg.plugin_config["paged_kv_cache"] is True
    assert cfg.rank_files == ["rank0.engine", "rank1.engine"]


def test_reading_does_not_import_tensorrt_llm():
    code = ("import sys; from appliance.hardware.catalog import read_engines_dir; "
            f"read_engines_dir({str(ENGINES)!r}); "
            "assert not [m for m in sys.modules if m.startswith(('tensorrt', 'torch'))]")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["llama-h100-fp8-tp2", "llama-h100-bf16-tp1",
                                  "llama-a100-bf16-tp1"])
def test_fixtures_agree_with_their_profiles(name: str):
    assert cross_check(read_engine_config(ENGINES / name), declared(name)) == []


def test_every_mismatch_is_listed(engines: Path):
    d = engines / "llama-h100-fp8-tp2"

    def change(data):
        data["version"] = "0.16.0"
        data["pretrained_config"]["mapping"].update(tp_size=4, pp_size=2, world_size=4)

    edit_config(d, change)
    problems = cross_check(read_engine_config(d), declared("llama-h100-fp8-tp2"))
    assert problems == [
        "built with TensorRT-LLM 0.16.0, declared 0.17.0",
        "tp_size 4, declared 2",
        "pp_size 2, declared 1",
        "world_size 4 is not tp x pp x cp = 8",
        "world_size 4, declared tp x pp = 2",
        "missing rank2.engine, rank3.engine",
    ]


def test_an_engine_built_for_several_nodes_is_refused(engines: Path):
    """tp2 built with gpus_per_node 1 runs one rank on each of two nodes: on one node the
    ranks would share GPU 0. The profile's GPU count alone let it fit a two-GPU host."""
    d = engines / "llama-h100-fp8-tp2"
    edit_config(d, lambda data: data["pretrained_config"]["mapping"].update(gpus_per_node=1))
    with pytest.raises(HardwareRefused) as info:
        verify_engine(d, declared("llama-h100-fp8-tp2"))
    assert info.value.message.endswith("gpus_per_node 1 is less than world_size 2: built for "
                                       "several nodes, served on one")
    edit_config(d, lambda data: data["pretrained_config"]["mapping"].update(gpus_per_node=8))
    assert cross_check(read_engine_config(d), declared("llama-h100-fp8-tp2")) == []


def test_mismatch_is_a_one_line_refusal(engines: Path):
    d = engines / "llama-h100-fp8-tp2"
    edit_config(d, lambda data: data.update(version="0.16.0"))
    with pytest.raises(HardwareRefused) as info:
        verify_engine(d, declared("llama-h100-fp8-tp2"))
    assert info.value.message == ("engine llama-h100-fp8-tp2 does not match declared profile "
                                  "llama-h100-fp8-tp2: built with TensorRT-LLM 0.16.0, "
                                  "declared 0.17.0")
    assert "\n" not in str(info.value)
    with pytest.raises(HardwareRefused, match="does not match declared profile"):
        read_engines_dir(engines)  # one lying engine refuses the whole set


@pytest.mark.parametrize("version, problem", [
    ("0.16\n\x1b[31mfake", "contains a control character ('\\n')"),
    ("0.17.0\udc80", "is not UTF-8 text"),
])
def test_an_engine_version_that_is_not_plain_is_refused(engines: Path, version: str,
                                                        problem: str):
    """The version is quoted in the refusal of a mismatch: a newline and an escape sequence
    reached the terminal raw in the CLI's error line (two lines, recoloured), and a lone
    surrogate was a traceback when the refusal was recorded."""
    d = engines / "llama-h100-fp8-tp2"
    edit_config(d, lambda data: data.update(version=version))
    with pytest.raises(HardwareRefused) as info:
        verify_engine(d, declared("llama-h100-fp8-tp2"))
    assert info.value.message == f"engine llama-h100-fp8-tp2: config.json version {problem}"


def test_missing_rank_file_refused(engines: Path):
    d = engines / "llama-h100-fp8-tp2"
    (d / "rank1.engine").unlink()
    with pytest.raises(HardwareRefused, match="missing rank1.engine"):
        verify_engine(d, declared("llama-h100-fp8-tp2"))


def test_a_huge_world_size_is_refused_without_a_name_for_every_rank(engines: Path):
    """config.json may claim any world size (an imported bundle's too, at `update check`):
    one of 10**10 made a name and a stat for every rank before the refusal, a MemoryError
    (a traceback) or an hour. Run under a 1 GiB address space so that it cannot take the
    machine's memory."""
    d = engines / "llama-h100-fp8-tp2"
    edit_config(d, lambda data: data["pretrained_config"]["mapping"].update(world_size=10**10))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from appliance.hardware.engine_config import cross_check, read_engine_config; "
            "from tests.hardware.test_hw_engine_config import declared; "
            f"print(cross_check(read_engine_config({str(d)!r}), "
            "declared('llama-h100-fp8-tp2'))[-1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr[-300:]
    assert r.stdout == ("missing " + ", ".join(f"rank{n}.engine" for n in range(2, 10))
                        + " (and 9999999990 more)\n")


def test_rank_files_are_named_exactly(engines: Path):
    """rank01.engine, or a directory named rank1.engine, is not rank 1's engine file."""
    d = engines / "llama-h100-fp8-tp2"
    (d / "rank1.engine").unlink()
    (d / "rank01.engine").write_text("x")
    (d / "rank٣.engine").write_text("x")
    assert cross_check(read_engine_config(d), declared("llama-h100-fp8-tp2")) == [
        "missing rank1.engine"]
    (d / "rank1.engine").mkdir()
    assert cross_check(read_engine_config(d), declared("llama-h100-fp8-tp2")) == [
        "missing rank1.engine"]


def test_declared_profile_of_another_kind_mismatches():
    vllm = EngineProfile(id="v", kind="vllm", gpu_archs=("sm_90",), tp_size=2)
    problems = cross_check(read_engine_config(ENGINES / "llama-h100-fp8-tp2"), vllm)
    assert problems == ["declared kind vllm is not trtllm_engine",
                        "built with TensorRT-LLM 0.17.0, declared None"]


@pytest.mark.parametrize("content, message", [
    (None, "no config.json"),
    ("{oops", "config.json is unreadable"),
    ("[]", "not a JSON object"),
    ('{"builder_config": {"tensor_parallel": 1}, "plugin_config": {}}', "pre-0.8 layout"),
    ('{"version": "0.17.0", "build_config": {}}', "lacks pretrained_config"),
    ('{"version": "0.17.0", "pretrained_config": {}, "build_config": {}}', "has no mapping"),
    ('{"version": "0.17.0", "pretrained_config": {"mapping": {"tp_size": "2"}}, '
     '"build_config": {}}', "tp_size is not an integer"),
    pytest.param('{"version": ' + "[" * 5000 + "]" * 5000 + "}",
                 "config.json is unreadable", id="nested-too-deeply"),
    pytest.param('{"version": ' + "1" * 5000 + "}", "config.json is unreadable",
                 id="integer-of-5000-digits"),
])
def test_bad_config_refused(tmp_path: Path, content: str | None, message: str):
    d = tmp_path / "engine"
    d.mkdir()
    if content is not None:
        (d / "config.json").write_text(content)
    with pytest.raises(HardwareRefused, match=message):
        read_engine_config(d)


def test_catalog_reads_all_engines_in_order():
    ids = [p.id for p in read_engines_dir(ENGINES)]
    assert ids == ["llama-a100-bf16-tp1", "llama-cpu", "llama-h100-bf16-tp1",
                   "llama-h100-fp8-tp2"]
    assert [p.id for p in read_engines_dir(ENGINES / "llama-cpu")] == ["llama-cpu"]


def test_catalog_refuses_non_directories_and_empty_dirs(tmp_path: Path):
    with pytest.raises(InvalidInput, match="is not a directory"):
        read_engines_dir(tmp_path / "absent")
    with pytest.raises(InvalidInput, match="no engine profiles"):
        read_engines_dir(tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "profile.json").write_text("{bad")
    with pytest.raises(InvalidInput, match="profile.json is unreadable"):
        read_engines_dir(tmp_path)
