"""End-to-end import of real signed bundles: trust init, scan, import, re-import, updates."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from appliance.bundle import publish
from appliance.bundle.keys import load_private, tuf_signer
from appliance.bundle.store import ContentStore
from appliance.bundle.trust import fingerprint
from appliance.errors import ApplianceError, BundleRefused, InvalidInput, PermissionDenied
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import (
    full_release,
    new_publisher,
    session_keys,
    tiny_adapter,
    tiny_base,
)
from tests.conftest import PASSWORD


@pytest.fixture
def keys(tmp_path_factory):
    return session_keys(tmp_path_factory.getbasetemp())


@pytest.fixture
def vendor(tmp_path, keys):
    return new_publisher(tmp_path, keys)


@pytest.fixture
def first_media(tmp_path, vendor):
    return full_release(vendor, tmp_path / "usb1")


@pytest.fixture
def security(make_user):
    return make_user(["security"], "sam")


@pytest.fixture
def itop(make_user):
    return make_user(["it"], "ivan")


def sign_req(user: str) -> SignatureRequest:
    return SignatureRequest("approved", "initial trust from installer media", PASSWORD, user,
                            acknowledge_statement=True)


@pytest.fixture
def trusted(appliance, security, first_media):
    root = (first_media / "metadata" / "1.root.json").read_bytes()
    trust_service.init_trust(appliance, security, root, sign_req("sam"), "installer")
    return appliance


@pytest.mark.parametrize("wrong", ["targets.json", "not json", "{}", "[]", "utf-16"])
def test_trust_init_refuses_what_is_not_a_root_and_records_it(appliance, security,
                                                              first_media, wrong):
    """A wrong or malformed --root file is one recorded refusal, never a traceback."""
    metadata = first_media / "metadata"
    data = {"targets.json": (metadata / "targets.json").read_bytes(),
            "utf-16": (metadata / "1.root.json").read_text().encode("utf-16")
            }.get(wrong, wrong.encode())
    with pytest.raises(BundleRefused) as err:
        trust_service.init_trust(appliance, security, data, sign_req("sam"), "usb")
    exc = err.value
    assert "not TUF root metadata" in exc.message and exc.exit_code == 8
    assert "\n" not in f"error: {exc.message} ({exc.hint})"
    rows = appliance.conn.execute("SELECT body FROM audit_view WHERE action = 'trust.init'"
                                  ).fetchall()
    body = json.loads(rows[-1][0])
    assert body["outcome"] == "failure" and body["reason"] == exc.message
    assert appliance.conn.execute("SELECT COUNT(*) FROM trust_metadata").fetchone()[0] == 0


def test_import_complete_bundle(trusted, itop, first_media):
    app = trusted
    result = media_service.import_bundle(app, itop, first_media)
    assert result.state == "IMPORTED" and not result.already_imported
    assert result.name == "demo-clinical" and result.version == 1
    assert result.files_copied == 9 and result.copied_bytes > 0
    store = ContentStore(app.layout.store)
    rows = app.conn.execute("SELECT kind, files FROM bundle_components ORDER BY name").fetchall()
    assert sorted(k for k, _ in rows) == ["base_model", "golden_set", "lora_adapter",
                                          "trtllm_engine"]
    for _, files in rows:
        for _rel, digest, _size in json.loads(files):
            assert store.has(digest)
    event = app.conn.execute("SELECT body FROM audit_view WHERE action = 'media.import'"
                             ).fetchone()
    assert json.loads(event[0])["outcome"] == "success"
    again = media_service.import_bundle(app, itop, first_media)
    assert again.already_imported and again.copied_bytes == 0


def v1_digest(media, name: str) -> str:
    targets = json.loads((media / "metadata" / "targets.json").read_bytes())["signed"]["targets"]
    return targets[f"components/{name}.sig"]["custom"]["digest"]


def test_adapter_update_copies_only_the_adapter(trusted, itop, vendor, first_media, tmp_path):
    media_service.import_bundle(trusted, itop, first_media)
    tiny_adapter(vendor.src / "tiny-adapter-2", seed=11)
    vendor.add("lora_adapter", "tiny-adapter-2", base_model="tiny-base",
               base_digest=v1_digest(first_media, "tiny-base"))
    v2 = vendor.release(tmp_path / "usb2")
    scan = media_service.scan(trusted, itop, [v2, first_media], search_removable=False)
    assert [(e.version, e.status) for e in scan] == [(2, "update"), (1, "imported")]
    result = media_service.import_bundle(trusted, itop, v2)
    # Two adapter files; its config is byte-identical to the first adapter's, so only the
    # new weights are copied, and nothing of the base model is touched.
    assert (result.version, result.files_copied, result.files_skipped) == (2, 1, 1)
    versions = dict(trusted.conn.execute(
        "SELECT role, MAX(version) FROM trust_metadata GROUP BY role"))
    assert versions == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 2}
    scan = media_service.scan(trusted, itop, [first_media], search_removable=False)
    assert (scan[0].status, scan[0].name, scan[0].version) == ("older", "demo-clinical", 1)
    assert "rollback" in scan[0].reason and scan[0].installed_version == 2
    # Never verified now, so its free text (the publisher) is not shown as if it were.
    assert scan[0].publisher == "" and "unverified" in scan[0].reason


def test_progress_reaches_the_caller(trusted, itop, first_media):
    seen = []
    media_service.import_bundle(trusted, itop, first_media, seen.append)
    assert seen and seen[-1].done_bytes == seen[-1].total_bytes > 0


def test_expiry_is_judged_by_the_appliance_clock(trusted, itop, first_media, clock):
    # Built 2026-01-10; the timestamp role expires after 90 days. The real date does not
    # matter: the appliance clock decides.
    clock.advance(days=100)
    from appliance.services import auth
    session = auth.login(trusted, "ivan", PASSWORD)
    with pytest.raises(BundleRefused, match="timestamp.json is expired"):
        media_service.import_bundle(trusted, session, first_media)


def test_import_needs_the_it_role(trusted, make_user, first_media):
    admin = make_user(["admin"], "ada")
    with pytest.raises(PermissionDenied):
        media_service.import_bundle(trusted, admin, first_media)
    denied = trusted.conn.execute("SELECT body FROM audit_view WHERE action = 'access.denied'"
                                  ).fetchall()
    assert json.loads(denied[-1][0])["details"]["permission"] == "media.import"
    assert trusted.conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 0


def test_root_rotation_by_threshold_of_old_and_new_keys(trusted, itop, vendor, keys,
                                                          first_media, tmp_path):
    media_service.import_bundle(trusted, itop, first_media)
    publish.set_role_keys(vendor.repo, "root", [keys.public("root2"), keys.public("root3")], 2)
    vendor.add("golden_set", "golden-2")
    # The old root (root1, threshold 1) and the new one (root2 + root3, threshold 2) sign.
    v2 = vendor.release(tmp_path / "usb2", signers=("root1", "root2", "root3", "targets",
                                                    "online"))
    assert sorted(p.name for p in (v2 / "metadata").glob("*.root.json")) == [
        "1.root.json", "2.root.json"]
    media_service.import_bundle(trusted, itop, v2)
    shown = trust_service.show_trust(trusted, itop)
    assert shown["root_version"] == 2 and [r["version"] for r in shown["root_history"]] == [1, 2]
    root_role = next(r for r in shown["roles"] if r["role"] == "root")
    assert root_role["threshold"] == 2 and len(root_role["keyids"]) == 2
    # After rotation the old root key alone can no longer move trust.
    publish.set_role_keys(vendor.repo, "root", [keys.public("attacker")], 1)
    vendor.add("golden_set", "golden-3")
    from tests.bundle.hostile import force_publish
    v3 = force_publish(vendor, tmp_path / "usb3", ("root1", "attacker", "targets", "online"))
    with pytest.raises(BundleRefused, match="root was signed by 0/2 keys"):
        media_service.import_bundle(trusted, itop, v3)


def test_roots_older_than_the_first_trusted_one_must_chain_to_it(
        appliance, security, itop, vendor, keys, tmp_path):
    """An appliance whose first trusted root is v2 never held v1: the v1 on the media is
    accepted as a link of the rotation chain (signed by its keys, which signed v2), and
    anything else in its place is refused, naming the file."""
    full_release(vendor, tmp_path / "usb1")
    publish.set_role_keys(vendor.repo, "root", [keys.public("root2"), keys.public("root3")], 2)
    vendor.add("golden_set", "golden-2")
    media = vendor.release(tmp_path / "usb", signers=("root1", "root2", "root3", "targets",
                                                      "online"))
    trust_service.init_trust(appliance, security,
                             (media / "metadata" / "2.root.json").read_bytes(), sign_req("sam"))
    forged = Metadata.from_bytes((media / "metadata" / "1.root.json").read_bytes())
    forged.signatures.clear()
    forged.sign(tuf_signer(load_private(keys.private("attacker"))))
    for bad in (b"[]", forged.to_bytes(publish.SERIALIZER)):
        copy = shutil.copytree(media, tmp_path / f"bad-{len(bad)}")
        (copy / "metadata" / "1.root.json").write_bytes(bad)
        with pytest.raises(BundleRefused, match="metadata/1.root.json is not"):
            media_service.import_bundle(appliance, itop, copy)
    assert media_service.import_bundle(appliance, itop, media).state == "IMPORTED"


def test_k_of_n_targets_signatures(appliance, security, itop, keys, tmp_path):
    pub = new_publisher(tmp_path, keys, "two-of-three")
    cfg_keys = [keys.public(k) for k in ("targets", "p384", "root3")]
    publish.set_role_keys(pub.repo, "targets", cfg_keys, 2)
    pub.add("base_model", "tiny-base", key="p384")     # a P-384 key signs the manifest
    with pytest.raises(InvalidInput, match="targets has 1 of 2 signatures"):
        pub.release(tmp_path / "usb", signers=("root1", "targets", "online"))
    media = pub.release(tmp_path / "usb", signers=("p384",))
    trust_service.init_trust(appliance, security,
                             (media / "metadata" / "1.root.json").read_bytes(), sign_req("sam"))
    assert media_service.import_bundle(appliance, itop, media).state == "IMPORTED"


def test_appliance_key_publishes_a_lora_adapter(trusted, itop, vendor, keys, first_media,
                                                 tmp_path):
    media_service.import_bundle(trusted, itop, first_media)
    vendor.add("lora_adapter", "site-adapter", key="lora", role="appliance-lora",
               base_model="tiny-base", base_digest=v1_digest(first_media, "tiny-base"))
    media = vendor.release(tmp_path / "usb-lora", signers=("lora", "online"))
    assert (media / "targets" / "lora" / "bundle.json").exists()
    result = media_service.import_bundle(trusted, itop, media)
    role = trusted.conn.execute("SELECT role, kind FROM bundle_components WHERE bundle_id = ?",
                                (result.bundle_id,)).fetchall()
    assert role == [("appliance-lora", "lora_adapter")]
    shown = trust_service.show_trust(trusted, itop)
    lora = next(p for p in shown["publishers"] if p["role"] == "appliance-lora")
    assert lora["kinds"] == ["lora_adapter"] and lora["keyids"] == [keys.keyid("lora")]


def test_publisher_refuses_wrong_keys(vendor, keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    ed = tmp_path / "ed.pem"
    ed.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    src = tiny_base(tmp_path / "b")
    with pytest.raises(InvalidInput, match="not an ECDSA key"):
        publish.add_component(vendor.repo, "base_model", src, ed, name="b")
    with pytest.raises(InvalidInput, match="is not a targets key"):
        publish.add_component(vendor.repo, "base_model", src, keys.private("attacker"),
                              name="b")
    with pytest.raises(InvalidInput, match="may not publish base_model"):
        publish.add_component(vendor.repo, "base_model", src, keys.private("lora"), name="b",
                              role="appliance-lora")
    assert not (vendor.repo / "release" / "targets" / "components" / "b").exists()


def test_publisher_refusals_speak_to_the_publisher(vendor, keys, tmp_path):
    """The import's own checks run as a component is added, worded for the one who can fix
    them; a trusted root that is not one is refused before it is shipped."""
    from appliance.bundle.model import EngineSpec
    src = tiny_base(tmp_path / "e")
    bad = EngineSpec(gpu_archs=("banana",), trtllm_version="0.17.0", tp=1, pp=1,
                     min_gpu_memory_mib=40000)
    with pytest.raises(InvalidInput, match="gpu_archs must list architectures") as err:
        publish.add_component(vendor.repo, "trtllm_engine", src, keys.private("targets"),
                              name="e", engine=bad)
    assert err.value.hint == "correct the component's options and add it again"
    assert not (vendor.repo / "release" / "targets" / "components" / "e").exists()
    not_a_root = tmp_path / "trusted_root.json"
    not_a_root.write_text("{}")
    with pytest.raises(InvalidInput, match="malformed sigstore trusted root"):
        publish.set_trusted_root(vendor.repo, not_a_root)
    assert not publish.Repo(vendor.repo).release().trusted_root


def test_publishing_to_media_that_cannot_take_it_publishes_nothing(vendor, tmp_path):
    vendor.add("base_model", "tiny-base")
    with pytest.raises(InvalidInput, match="does not exist"):
        vendor.release(tmp_path / "not-mounted" / "b.tar")
    with pytest.raises(ApplianceError, match=r"^could not publish to /proc/b\.tar: "):
        vendor.release(Path("/proc/b.tar"))   # /proc takes no new files, for root too
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        vendor.release(tmp_path / "file")
    # Nothing was promoted: the same release still publishes, whole, under its own name.
    out = vendor.release(tmp_path / "usb")
    assert (out / "metadata" / "timestamp.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()
                  if "partial" in p.name or p.name.endswith(".tmp")) == []
    assert publish.Repo(vendor.repo).config().last_version == 1


def test_publishing_never_replaces_a_tar_that_appeared_meanwhile(tmp_path):
    """`--to X.tar` is checked free before the release is written, but another program (or
    a second publish) can create X.tar meanwhile: the tar writer puts its file in place
    only if the name is still free, and leaves no temporary file behind."""
    from appliance.bundle import release

    src = tmp_path / "timestamp.json"
    src.write_text("{}")
    to = tmp_path / "b.tar"
    to.write_bytes(b"theirs")  # appeared after the check
    with pytest.raises(FileExistsError):
        release._write_tar(to, {"metadata/timestamp.json": src})
    assert to.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "timestamp.json"]
    release._write_tar(tmp_path / "c.tar", {"metadata/timestamp.json": src})
    with tarfile.open(tmp_path / "c.tar") as t:
        assert t.getnames() == ["metadata/timestamp.json"]


def test_trust_init_refusals_are_recorded(appliance, security, make_user, first_media, keys,
                                          tmp_path):
    root = (first_media / "metadata" / "1.root.json").read_bytes()
    it = make_user(["it"], "ivo")
    with pytest.raises(PermissionDenied):
        trust_service.init_trust(appliance, it, root, sign_req("ivo"))
    with pytest.raises(BundleRefused, match="not signed by its own threshold"):
        trust_service.init_trust(appliance, security, root.replace(b'"version": 1',
                                                                   b'"version": 7'),
                                 sign_req("sam"))
    with pytest.raises(BundleRefused, match="fingerprint differs"):
        trust_service.init_trust(appliance, security, root, sign_req("sam"),
                                 expect_fingerprint="ab" * 32)
    out = trust_service.init_trust(appliance, security, root, sign_req("sam"),
                                   expect_fingerprint=fingerprint(root).lower())
    assert out["root_version"] == 1
    with pytest.raises(InvalidInput, match="already initialised"):
        trust_service.init_trust(appliance, security, root, sign_req("sam"))
    events = [json.loads(b) for (b,) in appliance.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'trust.init' ORDER BY seq")]
    assert [e["outcome"] for e in events] == ["failure", "failure", "success", "failure"]
    signed = events[2]
    assert signed["signature"]["meaning"] == "approved"
    assert signed["signature"]["username"] == "sam"
    assert signed["new"]["fingerprint"] == fingerprint(root)
    sig = appliance.conn.execute("SELECT record_type, meaning FROM signatures").fetchall()
    assert sig == [("trust_root", "approved")]


def test_ctrl_c_during_copy_is_recorded_and_leaves_no_record(trusted, itop, first_media):
    def interrupt(progress) -> None:
        if progress.done_bytes:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        media_service.import_bundle(trusted, itop, first_media, interrupt)
    event = json.loads(trusted.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'media.import' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0])
    assert event["outcome"] == "failure" and event["reason"] == "interrupted (Ctrl-C)"
    assert trusted.conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 0
    versions = dict(trusted.conn.execute(
        "SELECT role, MAX(version) FROM trust_metadata GROUP BY role"))
    assert versions == {"root": 1}
    # Running the import again completes it.
    assert media_service.import_bundle(trusted, itop, first_media).state == "IMPORTED"


def test_publisher_tools_refuse_text_the_importer_would_refuse(tmp_path, keys, vendor):
    with pytest.raises(InvalidInput, match="control character"):
        publish.init_repo(tmp_path / "r", "notes", "Acme\nforged", [keys.public("root1")])
    with pytest.raises(InvalidInput, match="control character"):
        publish.set_release(vendor.repo, description="update\u2028forged")
