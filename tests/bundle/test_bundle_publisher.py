"""The publisher's tools refuse, in words the vendor can act on, what the appliance would
refuse later, and a refusal leaves nothing in the working repository to be shipped."""

from __future__ import annotations

import json
import os

import pytest

from appliance.bundle import publish
from appliance.bundle.demo_bundle import tiny_golden
from appliance.bundle.model import EngineSpec
from appliance.bundle.trust import fingerprint
from appliance.errors import InvalidInput
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import ENGINE, full_release, new_publisher, session_keys, tiny_engine
from tests.bundle.test_bundle_cli import ok, run
from tests.conftest import PASSWORD


@pytest.fixture
def keys(tmp_path_factory):
    return session_keys(tmp_path_factory.getbasetemp())


@pytest.fixture
def vendor(tmp_path, keys):
    return new_publisher(tmp_path, keys)


def components(vendor) -> set[str]:
    return {p.name for p in (vendor.repo / "release" / "targets" / "components").iterdir()}


def test_engine_that_contradicts_its_declared_profile_is_refused_when_added(vendor, keys,
                                                                            tmp_path):
    """`update check` rejects such an engine after import; the vendor hears it first."""
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "rank0.engine").write_bytes(b"\0" * 64)
    cases = [(no_config, ENGINE, "no config.json in the engine directory"),
             (tiny_engine(tmp_path / "tp2", tp=2), ENGINE, "tp_size 2, declared 1"),
             (tiny_engine(tmp_path / "v16"), EngineSpec(("sm_90",), "0.16.0", 1, 1, 40_000),
              "built with TensorRT-LLM 0.17.0, declared 0.16.0")]
    lost_rank = tiny_engine(tmp_path / "lost-rank", tp=2)
    os.remove(lost_rank / "rank1.engine")
    cases.append((lost_rank, EngineSpec(("sm_90",), "0.17.0", 2, 1, 40_000),
                  "missing rank1.engine"))
    for src, declared, expect in cases:
        with pytest.raises(InvalidInput, match=expect) as err:
            publish.add_component(vendor.repo, "trtllm_engine", src, keys.private("targets"),
                                  name="eng", engine=declared)
        assert "config.json and rank<N>.engine" in err.value.hint
        assert not (vendor.repo / "release" / "targets" / "components" / "eng").exists()
    publish.add_component(vendor.repo, "trtllm_engine", tiny_engine(tmp_path / "good"),
                          keys.private("targets"), name="eng", engine=ENGINE)
    assert components(vendor) == {"eng", "eng.sig"}


def test_evidence_not_computed_on_a_golden_set_of_the_release_is_refused_when_added(
        vendor, keys, tmp_path):
    """`update check` rejects such evidence after import; the vendor hears it first."""
    golden = publish.add_component(vendor.repo, "golden_set", tiny_golden(tmp_path / "g"),
                                   keys.private("targets"), name="golden").custom["digest"]

    def evidence(name: str, **fields) -> object:
        d = tmp_path / name
        d.mkdir()
        body = {"schema_version": 1, "golden_set": "golden", "golden_set_digest": golden,
                "samples": 5, "metrics": {"exact_match": 0.9}, **fields}
        (d / "evidence.json").write_text(json.dumps(body))
        return d

    empty = tmp_path / "empty-evidence"
    empty.mkdir()
    (empty / "notes.txt").write_text("no evidence.json here")
    cases = [(evidence("other-version", golden_set_digest="0" * 64),
              "computed on another version of golden set golden"),
             (evidence("elsewhere", golden_set="not-shipped"),
              "names golden set 'not-shipped', which this bundle does not carry"),
             (evidence("no-metrics", metrics={}), "metrics must map names to finite numbers"),
             (empty, "has no evidence.json")]
    for src, expect in cases:
        with pytest.raises(InvalidInput, match=expect) as err:
            publish.add_component(vendor.repo, "evaluation_evidence", src,
                                  keys.private("targets"), name="evidence")
        assert "golden set this release carries" in err.value.hint
        assert not (vendor.repo / "release" / "targets" / "components" / "evidence").exists()
    publish.add_component(vendor.repo, "evaluation_evidence", evidence("good"),
                          keys.private("targets"), name="evidence")
    assert components(vendor) == {"golden", "golden.sig", "evidence", "evidence.sig"}


def test_refused_component_files_are_never_published(tmp_path, appliance, make_user, vendor,
                                                     keys):
    """A component refused half-way through its copy (a link after a regular file), or for a
    file name the importer refuses, leaves no file behind: the release publishes and
    imports. The vendor is told to rename the file, not to change options."""
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a.bin").write_bytes(b"a")
    os.symlink("/etc/hostname", linked / "z.bin")
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        publish.add_component(vendor.repo, "golden_set", linked, keys.private("targets"))
    for i, (names, expect) in enumerate(((["ok", "new\nline"], "control character"),
                                         (["ok", "back\\slash"], "unsafe path"),
                                         (["Case", "case"], "differs from another file only "
                                                            "by case"))):
        d = tmp_path / f"names-{i}"
        d.mkdir()
        for n in names:
            (d / n).write_bytes(b"x")
        with pytest.raises(InvalidInput, match=expect) as err:
            publish.add_component(vendor.repo, "golden_set", d, keys.private("targets"),
                                  name="names")
        assert err.value.hint.startswith("rename")
    assert not (vendor.repo / "release" / "targets").exists() or not components(vendor)

    media = full_release(vendor, tmp_path / "usb")
    security, itop = make_user(["security"], "sam"), make_user(["it"], "ivan")
    trust_service.init_trust(appliance, security,
                             (media / "metadata" / "1.root.json").read_bytes(),
                             SignatureRequest("approved", "initial trust", PASSWORD, "sam",
                                              acknowledge_statement=True))
    assert media_service.import_bundle(appliance, itop, media).state == "IMPORTED"


def test_publishing_a_release_again_says_to_copy_the_media(vendor, tmp_path):
    full_release(vendor, tmp_path / "usb1")
    with pytest.raises(InvalidInput, match="release 1 was published already") as err:
        publish.publish(vendor.repo, tmp_path / "usb2")
    assert "copy the published directory or tar" in err.value.hint
    assert not (tmp_path / "usb2").exists()


def test_publish_names_the_root_and_fingerprint_for_trust_init(tmp_path, appliance, keys):
    """`trust init` needs the root file and its fingerprint on paper: publish says both."""
    vendor = new_publisher(tmp_path, keys, lora=False)
    vendor.add("golden_set", "golden")
    home = appliance.layout.root
    for k in ("root1", "targets", "online"):
        ok(run(home, "bundle", "sign", str(vendor.repo), "--key", str(keys.private(k))))
    r = ok(run(home, "bundle", "publish", str(vendor.repo), "--to", str(tmp_path / "b.tar"),
               "--json"))
    out = json.loads(r.stdout)
    root = vendor.repo / "published" / "1.root.json"
    assert out["root"] == str(root) and out["root_version"] == 1
    assert out["root_fingerprint"] == fingerprint(root.read_bytes())


@pytest.mark.parametrize("to", ["b.tar", "b"])
def test_a_file_changed_after_it_was_signed_is_not_published(vendor, keys, tmp_path, to):
    """An edit in the working repository after `add-component` would make the appliance
    refuse the whole bundle: publish hashes each file as it writes it and stops there."""
    vendor.add("golden_set", "golden")
    payload = vendor.repo / "release" / "targets" / "components" / "golden"
    victim = sorted(payload.iterdir())[0]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))   # same size
    with pytest.raises(InvalidInput, match=f"components/golden/{victim.name} changed since "
                       "it was signed") as err:
        vendor.release(tmp_path / to)
    assert "remove the working repository's release/ directory" in err.value.hint
    victim.write_bytes(original)
    (payload / "stray.txt").write_bytes(b"not signed")
    with pytest.raises(InvalidInput, match="stray.txt is in the release but no signature"):
        publish.publish(vendor.repo, tmp_path / to)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo-demo-clinical",
                                                          "src-demo-clinical"]
    (payload / "stray.txt").unlink()
    assert publish.publish(vendor.repo, tmp_path / to).exists()


def test_publishing_a_directory_leaves_a_partial_named_like_it_alone(vendor, tmp_path):
    """`<to>.partial` may be the vendor's own: publish builds under a name of its own."""
    theirs = tmp_path / "usb.partial"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    media = full_release(vendor, tmp_path / "usb")
    assert (theirs / "notes.txt").read_text() == "mine"
    assert (media / "metadata" / "root.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
