"""Hostile media, end to end through the import service: each case is refused with a
one-line reason and exit code 8, leaves an audit event with that reason, and changes
nothing in the trusted metadata, the bundle records or the content store.

The tar-entry and store-level byte cases live in test_media.py and test_store.py; here are
the metadata, signature, manifest and freshness cases, plus tampered and tar media through
the whole import.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tarfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing._signing.sign_sigstore_pb import pae
from tuf.api.metadata import Metadata

from appliance.bundle import publish
from appliance.bundle.components import PAYLOAD_TYPE, parse_statement, verify_key_signature
from appliance.bundle.keys import load_private, tuf_key, tuf_signer
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.errors import BundleRefused
from appliance.identity.session import Session
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import (
    BUILT,
    Keys,
    Publisher,
    full_release,
    new_publisher,
    session_keys,
    tiny_adapter,
)
from tests.bundle.hostile import (
    SIGNERS,
    Snapshot,
    force_publish,
    forge_statement,
    meta,
    resign,
    resign_component,
    set_custom,
    set_description,
    set_target,
    sha,
)
from tests.conftest import PASSWORD

_CACHE: dict[str, tuple[Path, Path, Path]] = {}


def base_release(root: Path, keys: Keys) -> tuple[Path, Path, Path]:
    """Once per session: a vendor (root threshold 2 of root1, root2) and its first release."""
    if "base" not in _CACHE:
        pub = new_publisher(root / "hostile-base", keys, root=("root1", "root2"),
                            root_threshold=2)
        media = full_release(pub, root / "hostile-base" / "usb1", signers=SIGNERS)
        _CACHE["base"] = (pub.repo, pub.src, media)
    return _CACHE["base"]


@dataclass
class Env:
    app: Appliance
    it: Session
    tmp: Path
    keys: Keys
    pub: Publisher
    v1: Path

    @property
    def base_digest(self) -> str:
        targets = json.loads(meta(self.v1, "targets").read_bytes())["signed"]["targets"]
        return targets["components/tiny-base.sig"]["custom"]["digest"]

    def copy(self, name: str) -> Path:
        return shutil.copytree(self.v1, self.tmp / name)

    def tampered_copy(self, name: str) -> Path:
        """A copy of release 1 with one payload byte of the base model flipped."""
        m = self.copy(name)
        p = m / BASE_FILE
        data = bytearray(p.read_bytes())
        data[100] ^= 0x01
        p.write_bytes(bytes(data))
        return m

    def release(self, name: str, adapter: str = "tiny-adapter-2", **kw) -> Path:
        """The vendor's next release: an adapter update on the base of release 1 (so release
        1 must be imported first)."""
        self.pub.add("lora_adapter", adapter, base_model="tiny-base",
                     base_digest=self.base_digest, **kw)
        return self.pub.release(self.tmp / name, signers=SIGNERS)

    def imported(self, media: Path) -> None:
        media_service.import_bundle(self.app, self.it, media)


@pytest.fixture
def env(tmp_path, tmp_path_factory, appliance, make_user) -> Env:
    keys = session_keys(tmp_path_factory.getbasetemp())
    repo, src, v1 = base_release(tmp_path_factory.getbasetemp(), keys)
    pub = Publisher(keys, shutil.copytree(repo, tmp_path / "repo"),
                    shutil.copytree(src, tmp_path / "src"))
    security = make_user(["security"], "sam")
    it = make_user(["it"], "ivan")
    trust_service.init_trust(appliance, security, (v1 / "metadata" / "1.root.json").read_bytes(),
                             SignatureRequest("approved", "initial trust", PASSWORD, "sam",
                                              acknowledge_statement=True))
    return Env(appliance, it, tmp_path, keys, pub, v1)


CASES: dict[str, Callable[[Env], tuple[Path, str]]] = {}


def case(fn: Callable[[Env], tuple[Path, str]]) -> Callable[[Env], tuple[Path, str]]:
    CASES[fn.__name__] = fn
    return fn


BASE_FILE = "targets/components/tiny-base/model.safetensors"


# --- payload and file list --------------------------------------------------------------

@case
def truncated_file(e: Env):
    m = e.copy("m")
    p = m / BASE_FILE
    p.write_bytes(p.read_bytes()[:-10])
    return m, "truncated"


@case
def padded_file(e: Env):
    m = e.copy("m")
    with (m / BASE_FILE).open("ab") as f:
        f.write(b"\0" * 8)
    return m, "truncated or padded"


@case
def missing_file(e: Env):
    m = e.copy("m")
    (m / "targets/components/tiny-base/tokenizer.json").unlink()
    return m, "missing file targets/components/tiny-base/tokenizer.json"


@case
def extra_file(e: Env):
    m = e.copy("m")
    (m / "targets/components/tiny-base/backdoor.py").write_text("import os\n")
    return m, "extra file targets/components/tiny-base/backdoor.py"


@case
def extra_file_outside_components(e: Env):
    m = e.copy("m")
    (m / "autorun.sh").write_text("#!/bin/sh\n")
    return m, "extra file autorun.sh"


@case
def extra_metadata_file(e: Env):
    m = e.copy("m")
    (m / "metadata" / "evil.json").write_text("{}")
    return m, "extra file metadata/evil.json"


@case
def renamed_file(e: Env):
    m = e.copy("m")
    (m / "targets/components/tiny-base/config.json").rename(
        m / "targets/components/tiny-base/config.json.bak")
    return m, "renamed"


@case
def missing_description(e: Env):
    m = e.copy("m")
    (m / "targets" / "bundle.json").unlink()
    return m, "exactly one bundle description"


@case
def two_descriptions(e: Env):
    m = e.copy("m")
    (m / "targets" / "lora").mkdir()
    shutil.copyfile(m / "targets" / "bundle.json", m / "targets" / "lora" / "bundle.json")
    return m, "exactly one bundle description"


# --- signatures and keys -----------------------------------------------------------------

@case
def unsigned_component(e: Env):
    """A component the description names, but which no TUF role lists."""
    m = e.copy("m")
    tiny_adapter(m / "targets/components/rogue")
    sig = resign_component(m, "rogue", e.keys, "targets",
                           {p.name: p.read_bytes() for p in (m / "targets/components/rogue")
                            .iterdir()}, e.tmp)
    (m / "targets/components/rogue.sig").write_bytes(sig)
    set_description(m, e.keys, lambda d: d["components"].append(
        {"target": "components/rogue.sig", "sha256": sha(sig)}))
    return m, "components/rogue.sig is not signed"


@case
def component_signature_file_tampered(e: Env):
    m = e.copy("m")
    p = m / "targets/components/tiny-base.sig"
    p.write_bytes(p.read_bytes().replace(b'"hint"', b'"hint" '))
    return m, "targets/components/tiny-base.sig is"


@case
def model_signature_by_unknown_key(e: Env):
    """An attacker's key makes a valid model signature; the metadata (re-signed by a
    compromised targets key) even names the attacker's key id, which no role lists."""
    m = e.copy("m")
    files = {p.name: p.read_bytes() for p in (m / "targets/components/tiny-base").iterdir()}
    files["model.safetensors"] = files["model.safetensors"][:-4] + b"EVIL"
    (m / BASE_FILE).write_bytes(files["model.safetensors"])
    sig = resign_component(m, "tiny-base", e.keys, "attacker", files, e.tmp)
    digest = verify_key_signature(sig, load_private(e.keys.private("attacker")).public_key(),
                                  "x").digest

    def custom(c: dict) -> None:
        c["signer"]["keyid"] = e.keys.keyid("attacker")
        c["digest"] = digest
    set_target(m, "targets", "components/tiny-base.sig", sig, e.keys, custom=custom)
    set_description(m, e.keys, lambda d: d["components"][0].update(sha256=sha(sig)))
    return m, "is not a key of role targets"


@case
def model_signature_by_other_key_than_named(e: Env):
    """The metadata names the vendor's key but the model signature is the attacker's."""
    m = e.copy("m")
    files = {p.name: p.read_bytes() for p in (m / "targets/components/tiny-base").iterdir()}
    sig = resign_component(m, "tiny-base", e.keys, "attacker", files, e.tmp)
    set_target(m, "targets", "components/tiny-base.sig", sig, e.keys)
    set_description(m, e.keys, lambda d: d["components"][0].update(sha256=sha(sig)))
    return m, "made with a key the metadata does not name"


@case
def statement_edited_without_resigning(e: Env):
    """The file digest inside the model signature is swapped for the tampered file's."""
    m = e.copy("m")
    (m / BASE_FILE).write_bytes(b"\0" * (m / BASE_FILE).stat().st_size)
    new = sha((m / BASE_FILE).read_bytes())

    def change(st: dict) -> None:
        for r in st["predicate"]["resources"]:
            if r["name"] == "model.safetensors":
                r["digest"] = new
    sig = forge_statement((m / "targets/components/tiny-base.sig").read_bytes(), change)
    set_target(m, "targets", "components/tiny-base.sig", sig, e.keys)
    set_description(m, e.keys, lambda d: d["components"][0].update(sha256=sha(sig)))
    return m, "model signature"


def _restatement(e: Env, change: Callable[[dict], None], name: str = "tiny-base"):
    """A statement rewritten and validly re-signed with the vendor's targets key."""
    m = e.copy("m")
    sigpath = m / f"targets/components/{name}.sig"
    def change_and_rehash(st: dict) -> None:
        change(st)
        # An attacker keeps the statement self-consistent unless the subject is the attack.
        if st["subject"][0]["digest"]["sha256"] != "0" * 64:
            st["subject"][0]["digest"]["sha256"] = hashlib.sha256(b"".join(
                bytes.fromhex(r["digest"]) for r in st["predicate"]["resources"])).hexdigest()
    forged = forge_statement(sigpath.read_bytes(), change_and_rehash)
    # Re-sign the forged statement's DSSE with the real targets key (a compromised
    # component-signing step), so only our own statement checks can catch it.
    bundle = json.loads(forged)
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    key = load_private(e.keys.private("targets"))
    bundle["dsseEnvelope"]["signatures"] = [{"sig": base64.b64encode(key.sign(
        pae(payload), ec.ECDSA(hashes.SHA256()))).decode(), "keyid": ""}]
    sig = json.dumps(bundle).encode()
    set_target(m, "targets", f"components/{name}.sig", sig, e.keys)
    set_description(m, e.keys, lambda d: [c.update(sha256=sha(sig)) for c in d["components"]
                                          if c["target"] == f"components/{name}.sig"])
    return m


def _resources(change: Callable[[list], None]) -> Callable[[dict], None]:
    def f(st: dict) -> None:
        change(st["predicate"]["resources"])
    return f


@case
def statement_duplicate_file(e: Env):
    m = _restatement(e, _resources(lambda rs: rs.append(dict(rs[0]))))
    return m, "duplicate or case-colliding file"


@case
def statement_case_colliding_files(e: Env):
    m = _restatement(e, _resources(lambda rs: rs.append(dict(rs[0], name=rs[0]["name"].upper()))))
    return m, "duplicate or case-colliding file"


@case
def statement_path_traversal(e: Env):
    m = _restatement(e, _resources(lambda rs: rs.append(dict(rs[0], name="../../etc/passwd"))))
    return m, "unsafe path"


@case
def statement_subject_digest_mismatch(e: Env):
    m = _restatement(e, lambda st: st["subject"][0]["digest"].update(sha256="0" * 64))
    return m, "statement subject digest does not match its files"


@case
def metadata_digest_differs_from_model_signature(e: Env):
    m = e.copy("m")
    set_custom(m, "components/tiny-base.sig", e.keys, lambda c: c.update(digest="ab" * 32))
    return m, "model signature digest differs"


@case
def targets_signed_by_unknown_key(e: Env):
    m = e.copy("m")
    resign(m, "targets", e.keys, ("attacker",))
    return m, "not enough valid signatures"


@case
def timestamp_unsigned(e: Env):
    m = e.copy("m")
    resign(m, "timestamp", e.keys, ())
    return m, "not enough valid signatures"


@case
def root_rotation_too_few_old_keys(e: Env):
    """Root v2 moves trust to the attacker's key; only one of the two old root keys signed."""
    publish.set_role_keys(e.pub.repo, "root", [e.keys.public("attacker")], 1)
    e.pub.add("golden_set", "more-golden")
    m = force_publish(e.pub, e.tmp / "m", ("root1", "attacker", "targets", "online"))
    return m, "not enough valid signatures"


@case
def root_rotation_not_signed_by_new_keys(e: Env):
    publish.set_role_keys(e.pub.repo, "root", [e.keys.public("root3")], 1)
    e.pub.add("golden_set", "more-golden")
    m = force_publish(e.pub, e.tmp / "m", ("root1", "root2", "targets", "online"))
    return m, "not enough valid signatures"


@case
def appliance_key_publishes_base_model(e: Env):
    """The appliance's own key may publish LoRA adapters only."""
    d = e.tmp / "src" / "local-lora"
    tiny_adapter(d)
    publish.add_component(e.pub.repo, "lora_adapter", d, e.keys.private("lora"),
                          name="local-lora", role="appliance-lora", base_model="tiny-base",
                          base_digest=e.base_digest)
    m = e.pub.release(e.tmp / "m", signers=SIGNERS)
    set_custom(m, "lora/local-lora.sig", e.keys,
               lambda c: (c.update(kind="base_model"), c.pop("base_model")),
               role="appliance-lora", signer="lora")
    return m, "may not publish base_model"


@case
def vendor_target_in_delegated_role_signed_by_vendor(e: Env):
    """appliance-lora metadata signed by the vendor's targets key instead of the LoRA key."""
    d = e.tmp / "src" / "local-lora"
    tiny_adapter(d)
    publish.add_component(e.pub.repo, "lora_adapter", d, e.keys.private("lora"),
                          name="local-lora", role="appliance-lora", base_model="tiny-base",
                          base_digest=e.base_digest)
    m = e.pub.release(e.tmp / "m", signers=SIGNERS)
    resign(m, "appliance-lora", e.keys, ("targets",))
    return m, "not enough valid signatures"


# --- freshness ----------------------------------------------------------------------------

@case
def expired_timestamp(e: Env):
    m = e.copy("m")
    resign(m, "timestamp", e.keys, ("online",),
           lambda s: setattr(s, "expires", BUILT + timedelta(days=1)))
    return m, "timestamp.json is expired"


@case
def expired_targets(e: Env):
    m = e.copy("m")
    resign(m, "targets", e.keys, ("targets",),
           lambda s: setattr(s, "expires", BUILT + timedelta(days=1)))
    return m, "expired metadata"


@case
def rollback_to_older_release(e: Env):
    e.imported(e.v1)
    e.imported(e.release("v2"))
    return e.copy("m"), "rollback"


@case
def replayed_older_timestamp(e: Env):
    e.imported(e.v1)
    v2 = e.release("v2")
    e.imported(v2)
    m = shutil.copytree(v2, e.tmp / "m")
    shutil.copyfile(meta(e.v1, "timestamp"), meta(m, "timestamp"))
    return m, "replay"


@case
def mix_snapshot_of_other_release(e: Env):
    e.imported(e.v1)
    m = shutil.copytree(e.release("v2"), e.tmp / "m")
    shutil.copyfile(meta(e.v1, "snapshot"), meta(m, "snapshot"))
    return m, "mix-and-match"


@case
def mix_targets_of_other_release(e: Env):
    e.imported(e.v1)
    m = shutil.copytree(e.release("v2"), e.tmp / "m")
    shutil.copyfile(meta(e.v1, "targets"), meta(m, "targets"))
    return m, "mix-and-match"


@case
def clock_rollback(e: Env):
    from appliance.services import auth
    e.app.clock.advance(days=30)
    auth.login(e.app, "ivan", PASSWORD)         # an audit event 30 days on
    e.app.clock.advance(days=-20)               # then the clock is set back
    e.it = auth.login(e.app, "ivan", PASSWORD)
    return e.copy("m"), "clock rollback"


@case
def older_bundle_version_in_newer_metadata(e: Env):
    e.imported(e.v1)
    e.imported(e.release("v2"))
    publish.set_release(e.pub.repo, description="re-issue")
    spec_path = e.pub.repo / "release" / "release.json"
    spec = json.loads(spec_path.read_text())
    spec["version"] = 1
    spec_path.write_text(json.dumps(spec))
    return e.release("v3", adapter="tiny-adapter-3"), "not newer than the installed"


# --- malformed and oversized ------------------------------------------------------------

@case
def metadata_over_size_limit(e: Env):
    m = e.copy("m")
    p = meta(m, "timestamp")
    p.write_bytes(p.read_bytes() + b" " * 20_000)
    return m, "metadata limit"


@case
def malformed_json_metadata(e: Env):
    m = e.copy("m")
    meta(m, "snapshot").write_bytes(b'{"signed": {"_type": "snapshot",')
    return m, "metadata refused"


@case
def malformed_json_description(e: Env):
    m = e.copy("m")
    set_target(m, "targets", "bundle.json", b"{not json", e.keys)
    return m, "bundle description is not valid JSON"


@case
def description_publisher_with_newline(e: Env):
    """A newline in the publisher would forge a line in `media scan`, `import` and `list`."""
    m = e.copy("m")
    set_description(m, e.keys, lambda d: d.update(publisher="Acme\nnotes v9 by Trusted"))
    return m, "'publisher' contains a control character or line separator"


@case
def description_text_with_line_separator(e: Env):
    m = e.copy("m")
    set_description(m, e.keys, lambda d: d.update(description="update\u2028forged"))
    return m, "'description' contains a control character or line separator"


@case
def unknown_description_schema_version(e: Env):
    m = e.copy("m")
    set_description(m, e.keys, lambda d: d.update(schema_version=2))
    return m, "unknown schema version 2"


@case
def unknown_component_schema_version(e: Env):
    m = e.copy("m")
    set_custom(m, "components/tiny-base.sig", e.keys, lambda c: c.update(schema_version=99))
    return m, "unknown schema version 99"


@case
def unknown_tuf_spec_version(e: Env):
    m = e.copy("m")
    resign(m, "timestamp", e.keys, ("online",), lambda s: setattr(s, "spec_version", "2.0.0"))
    return m, "metadata refused"


@case
def unknown_component_kind(e: Env):
    m = e.copy("m")
    set_custom(m, "components/tiny-golden.sig", e.keys, lambda c: c.update(kind="firmware"))
    return m, "unknown kind 'firmware'"


@case
def description_lists_component_twice(e: Env):
    m = e.copy("m")
    set_description(m, e.keys, lambda d: d["components"].append(d["components"][0]))
    return m, "lists a component twice"


@case
def unverified_metadata_on_reimport(e: Env):
    """python-tuf does not re-read a snapshot whose version it already trusts; a changed
    copy on the media is still refused rather than carried along unverified."""
    e.imported(e.v1)
    m = e.copy("m")
    p = meta(m, "snapshot")
    p.write_bytes(p.read_bytes().replace(b'"_type": "snapshot"', b'"_type":  "snapshot"'))
    return m, "metadata/snapshot.json is not the metadata that was verified"


@case
def root_json_not_newest_root(e: Env):
    m = e.copy("m")
    p = m / "metadata" / "root.json"
    p.write_bytes(p.read_bytes() + b"\n")
    return m, "not the newest signed root"


@case
def old_root_file_garbage(e: Env):
    """python-tuf never reads a root version the appliance already trusts; the copy on the
    media is compared with the stored one instead of being carried along unread."""
    m = e.copy("m")
    (m / "metadata" / "1.root.json").write_bytes(b"this is not json at all")
    return m, "metadata/1.root.json is not the root of version 1 that was verified"


@case
def old_root_file_edited_after_rotation(e: Env):
    """Root v2 is walked in this run; the v1 on the media is compared with the stored v1."""
    publish.set_role_keys(e.pub.repo, "root", [e.keys.public("root2"), e.keys.public("root3")],
                          2)
    e.pub.add("golden_set", "more-golden")
    m = e.pub.release(e.tmp / "m", signers=(*SIGNERS, "root3"))
    p = m / "metadata" / "1.root.json"
    p.write_bytes(p.read_bytes().replace(b'"_type": "root"', b'"_type":  "root"', 1))
    return m, "metadata/1.root.json is not the root of version 1 that was verified"


@case
def rotated_key_resigns_trusted_timestamp_version(e: Env):
    """Root v2 rotates the timestamp key and the vendor re-signs the same timestamp version
    with it: a version the appliance trusts with other bytes. Refused while verifying (not
    a database error at the final commit), so the refusal is recorded."""
    e.imported(e.v1)
    m = e.copy("m")
    md = Metadata.from_bytes((m / "metadata" / "1.root.json").read_bytes())
    md.signed.version = 2
    for keyid in list(md.signed.roles["timestamp"].keyids):
        md.signed.revoke_key(keyid, "timestamp")
    md.signed.add_key(tuf_key(load_private(e.keys.private("p384")).public_key()), "timestamp")
    md.signatures.clear()
    for s in ("root1", "root2"):
        md.sign(tuf_signer(load_private(e.keys.private(s))), append=True)
    for name in ("2.root.json", "root.json"):
        (m / "metadata" / name).write_bytes(md.to_bytes(publish.SERIALIZER))
    resign(m, "timestamp", e.keys, ("p384",))
    return m, "timestamp v1 is already trusted with other content"


@case
def lora_base_model_not_installed(e: Env):
    d = e.tmp / "src" / "orphan"
    tiny_adapter(d)
    publish.add_component(e.pub.repo, "lora_adapter", d, e.keys.private("targets"),
                          name="orphan", base_model="other-base", base_digest="cd" * 32)
    return e.pub.release(e.tmp / "m", signers=SIGNERS), "is neither in the bundle nor installed"


@case
def no_trusted_root(e: Env):
    """A second appliance whose trust store was never initialised."""
    from appliance.services import auth, users
    from appliance.services.setup import init_appliance
    from tests.conftest import ADMIN, FAST
    other = init_appliance(e.tmp / "other-home", ADMIN, "Alice", PASSWORD, clock=e.app.clock,
                           settings=FAST, terminal="t")
    admin = auth.login(other, ADMIN, PASSWORD)
    users.add_user(other, admin, "ivan", "Ivan", ["it"], PASSWORD, "test",
                   must_change_password=False)
    e.app, e.it = other, auth.login(other, "ivan", PASSWORD)
    return e.copy("m"), "the trust store is empty"


# --- tar media through the whole import ---------------------------------------------------

def _tar(src: Path, out: Path, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    with tarfile.open(out, "w") as tar:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                tar.add(p, p.relative_to(src).as_posix())
        if extra:
            extra(tar)
    return out


@case
def tar_with_parent_path(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("targets/../../etc/cron.d/x")
        tar.addfile(info)
    return _tar(e.v1, e.tmp / "m.tar", extra), "'..'"


@case
def tar_with_symlink(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("targets/components/tiny-base/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/shadow"
        tar.addfile(info)
    return _tar(e.v1, e.tmp / "m.tar", extra), "link"


@case
def tar_with_tampered_metadata(e: Env):
    m = e.copy("m")
    p = meta(m, "targets")
    p.write_bytes(p.read_bytes().replace(b'"version": 1', b'"version": 2', 1))
    return _tar(m, e.tmp / "m.tar"), "not enough valid signatures"


@case
def tar_with_absolute_path(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        tar.addfile(tarfile.TarInfo("/etc/cron.d/evil"))
    return _tar(e.v1, e.tmp / "m.tar", extra), "absolute path"


@case
def tar_with_hard_link(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("targets/components/tiny-base/hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "targets/bundle.json"
        tar.addfile(info)
    return _tar(e.v1, e.tmp / "m.tar", extra), "link"


@case
def tar_with_device(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("targets/components/tiny-base/sda")
        info.type = tarfile.BLKTYPE
        info.devmajor, info.devminor = 8, 0
        tar.addfile(info)
    return _tar(e.v1, e.tmp / "m.tar", extra), "device"


@case
def tar_with_duplicate_entry(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        tar.add(e.v1 / "targets" / "bundle.json", "targets/bundle.json")
    return _tar(e.v1, e.tmp / "m.tar", extra), "duplicate path"


@case
def tar_with_case_colliding_entries(e: Env):
    def extra(tar: tarfile.TarFile) -> None:
        tar.add(e.v1 / "targets" / "bundle.json", "targets/Bundle.json")
    return _tar(e.v1, e.tmp / "m.tar", extra), "differ only by case"


@case
def targets_threshold_not_met(e: Env):
    """Targets now needs 2 of 2 keys; the release carries one targets signature."""
    publish.set_role_keys(e.pub.repo, "targets", [e.keys.public("targets"),
                                                  e.keys.public("p384")], 2)
    e.pub.add("golden_set", "more-golden")
    m = force_publish(e.pub, e.tmp / "m", ("root1", "root2", "targets", "online"))
    return m, "targets was signed by 1/2 keys"


def _run_refused(e: Env, media: Path, expect: str) -> BundleRefused:
    before = Snapshot.take(e.app)
    audit_before = e.app.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    with pytest.raises(BundleRefused) as err:
        media_service.import_bundle(e.app, e.it, media)
    exc = err.value
    text = f"error: {exc.message} ({exc.hint})"
    assert "\n" not in text and exc.exit_code == 8
    assert expect in exc.message, exc.message
    assert Snapshot.take(e.app) == before
    rows = e.app.conn.execute("SELECT body FROM audit_view WHERE seq > ? AND action = "
                              "'media.import'", (audit_before,)).fetchall()
    assert len(rows) == 1
    body = json.loads(rows[0][0])
    assert body["outcome"] == "failure" and body["reason"] == exc.message
    assert body["actor"]["username"] == e.it.username
    return exc


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_media_is_refused_cleanly(env: Env, name: str) -> None:
    media, expect = CASES[name](env)
    _run_refused(env, media, expect)


def test_there_are_at_least_thirty_hostile_cases() -> None:
    assert len(CASES) >= 30


def test_tampered_payload_byte_through_full_import(env: Env) -> None:
    """Metadata all valid; one payload byte flipped. The store's one-pass hash refuses it
    and nothing of the refused bundle is kept: no object, no bundle, no trust change."""
    m = env.tampered_copy("m")
    before = Snapshot.take(env.app)
    with pytest.raises(BundleRefused) as err:
        media_service.import_bundle(env.app, env.it, m)
    assert "\n" not in str(err.value) and err.value.exit_code == 8
    after = Snapshot.take(env.app)
    assert after.trust == before.trust and after.bundles == before.bundles == []
    assert after.tmp == []
    assert after.objects == before.objects
    event = json.loads(env.app.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'media.import' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0])
    assert event["outcome"] == "failure" and "model.safetensors" in event["reason"]
    # The untampered media then imports, every signed file copied and verified.
    result = media_service.import_bundle(env.app, env.it, env.v1)
    assert result.state == "IMPORTED"
    store = ContentStore(env.app.layout.store)
    assert all(store.has(d) for d in _signed_digests(env.v1))


def _signed_digests(media: Path) -> set[str]:
    out = set()
    for sig in (media / "targets" / "components").glob("*.sig"):
        payload = base64.b64decode(json.loads(sig.read_bytes())["dsseEnvelope"]["payload"])
        out |= {f.sha256 for f in parse_statement(PAYLOAD_TYPE, payload, "x").files}
    return out


def test_older_release_verified_while_a_newer_one_imports_is_refused(env: Env,
                                                                      monkeypatch) -> None:
    """Two imports at once: release 2 verified against release 1's trust while release 3
    was being imported by another process. Release 3 commits first; release 2 must not
    then be recorded (a rollback the verification would have refused), and nothing of it
    is kept."""
    env.imported(env.v1)
    v2 = env.release("usb2")
    v3 = env.release("usb3", adapter="tiny-adapter-3")
    other = Appliance.open(env.app.layout.root, clock=env.app.clock)
    take_lock = ContentStore.lock

    def lock_after_the_other_import(store: ContentStore):
        # Between release 2's verification and its store lock, release 3 is imported whole
        # through another connection (another `appliance media import`).
        monkeypatch.setattr(ContentStore, "lock", take_lock)
        media_service.import_bundle(other, env.it, v3)
        return take_lock(store)

    monkeypatch.setattr(ContentStore, "lock", lock_after_the_other_import)
    try:
        with pytest.raises(BundleRefused) as err:
            media_service.import_bundle(env.app, env.it, v2)
    finally:
        other.close()
    assert "trusted metadata changed while this import was verifying" in err.value.message
    assert "\n" not in str(err.value) and err.value.exit_code == 8
    before = Snapshot.take(env.app)
    assert env.app.conn.execute("SELECT version FROM bundles ORDER BY id").fetchall() == [
        (1,), (3,)]
    assert dict(env.app.conn.execute("SELECT role, MAX(version) FROM trust_metadata "
                                     "GROUP BY role"))["targets"] == 3
    event = json.loads(env.app.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'media.import' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0])
    assert event["outcome"] == "failure" and event["target"]["id"] == "demo-clinical@2"
    # Imported again, release 2 is now judged against release 3's trust: a rollback.
    with pytest.raises(BundleRefused, match="rollback|older|not newer"):
        media_service.import_bundle(env.app, env.it, v2)
    assert Snapshot.take(env.app) == before


def test_a_copy_of_an_imported_bundle_is_not_read_and_says_so(env: Env) -> None:
    """Importing a bundle the appliance already holds reads no payload from the media (the
    store's objects were verified when first copied; `reimport_unchanged` is the figure),
    so a copy with a changed payload byte is answered "already imported" and the result
    says the media's files were not read: it vouches for the appliance's copy, not the
    stick's. Nothing on the appliance changes."""
    env.imported(env.v1)
    m = env.tampered_copy("m")
    before = Snapshot.take(env.app)
    again = media_service.import_bundle(env.app, env.it, m)
    assert again.already_imported and again.copied_bytes == 0 and again.files_skipped > 0
    assert media_service.skipped_note(again) == ", not read from the media"
    after = Snapshot.take(env.app)
    assert after.objects == before.objects and after.bundles == before.bundles


def test_media_removed_mid_import_says_to_reinsert_and_resumes(env: Env) -> None:
    """The stick is pulled as the payload copy starts (its tree disappears): one line that
    says to check the media and import again, not that the bundle is badly signed; the
    failure is recorded, only verified objects stay, and the next import resumes."""
    m = env.copy("m")
    pulled: list[bool] = []

    def pull(_progress) -> None:
        if not pulled:
            pulled.append(True)
            shutil.rmtree(m)

    with pytest.raises(BundleRefused) as err:
        media_service.import_bundle(env.app, env.it, m, pull)
    assert pulled and "\n" not in str(err.value) and err.value.exit_code == 8
    assert "cannot open" in err.value.message
    assert "media is still inserted" in err.value.hint and "signed" not in err.value.hint
    event = json.loads(env.app.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'media.import' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0])
    assert event["outcome"] == "failure" and event["reason"] == err.value.message
    after = Snapshot.take(env.app)
    assert after.bundles == [] and after.tmp == []
    assert set(after.objects) <= _signed_digests(env.v1)
    shutil.copytree(env.v1, m)
    result = media_service.import_bundle(env.app, env.it, m)
    assert result.state == "IMPORTED" and result.files_skipped == len(after.objects)


@pytest.mark.parametrize("where", ["dir", "tar", "not-a-tar"])
def test_media_path_with_control_characters_is_named_escaped(env: Env, where: str) -> None:
    """The media's path is in every refusal about its files, and a directory name or a
    mount point (a stick's volume label) can hold a newline or an escape sequence: the
    refusal stays one line of plain text, the path's characters escaped."""
    name = "usb\nerror: forged line\x1b[2J"
    if where == "dir":
        m = shutil.copytree(env.v1, env.tmp / name)
    else:
        m = env.tmp / f"{name}.tar"
        if where == "tar":
            _tar(env.v1, m)
        else:
            m.write_bytes(b"not a tar" * 200)
    # One payload byte changed: refused by the copy, whose message names the media.
    if where != "not-a-tar":
        with tarfile.open(m) if where == "tar" else nullcontext() as t:
            at = t.getmember(BASE_FILE).offset_data if t else 100
        p = m if where == "tar" else m / BASE_FILE
        data = bytearray(p.read_bytes())
        data[at] ^= 0x01
        p.write_bytes(bytes(data))
    with pytest.raises(BundleRefused) as err:
        media_service.import_bundle(env.app, env.it, m)
    message = err.value.message
    assert "\n" not in message and "\x1b" not in message
    assert "usb\\nerror: forged line\\x1b[2J" in message
    event = json.loads(env.app.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'media.import' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0])
    assert event["outcome"] == "failure" and event["reason"] == message
