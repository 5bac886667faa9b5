"""Offline verification of a bundle on media, everything small before any payload byte.

Order: TUF metadata from the media against the trusted metadata (python-tuf's Updater,
reading through a fetcher that only reads the media), then the bundle description, then
each component's signature file (a TUF target) and its model signature with a key the TUF
metadata names, and finally the media's file list against the signed manifests. Only the
result of this (files with signed digests) is handed to the content store.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from appliance.bundle import components as comp
from appliance.bundle import keys as bkeys
from appliance.bundle.media import MediaSource
from appliance.bundle.model import (
    DESCRIPTION_TARGETS,
    LORA_ROLE,
    MAX_DESCRIPTION,
    MAX_ROOT,
    MAX_SIGNATURE,
    MAX_SNAPSHOT,
    MAX_TARGETS,
    MAX_TIMESTAMP,
    MAX_TRUSTED_ROOT,
    METADATA_DIR,
    ROLE_KINDS,
    SIGSTORE_ROOT_TARGET,
    TARGETS_DIR,
    BundleDescription,
    ComponentInfo,
    refuse,
)
from appliance.bundle.store import WantedFile
from appliance.bundle.trust import TrustState
from appliance.errors import ApplianceError, BundleRefused

_BASE = "media://bundle/"


@dataclass(frozen=True)
class VerifiedComponent:
    info: ComponentInfo
    role: str
    target: str                 # signature target path
    signature_sha256: str
    files: tuple[WantedFile, ...]


@dataclass(frozen=True)
class VerifiedBundle:
    description: BundleDescription
    description_bytes: bytes
    digest: str                 # SHA-256 of the signed description
    components: tuple[VerifiedComponent, ...]
    metadata_version: int       # targets version
    trust_updates: tuple[tuple[str, bytes], ...]   # (role, bytes) now verified

    @property
    def size(self) -> int:
        return sum(c.info.size for c in self.components)

    def wanted(self) -> list[WantedFile]:
        return [w for c in self.components for w in c.files]


def _limit(name: str) -> int:
    if name.endswith("root.json"):
        return MAX_ROOT
    return {"timestamp.json": MAX_TIMESTAMP, "snapshot.json": MAX_SNAPSHOT}.get(
        name, MAX_TARGETS)


class MediaFetcher(FetcherInterface):
    """python-tuf's downloads, served from the media listing. It never touches a network."""

    def __init__(self, media: MediaSource, listing: dict[str, int]) -> None:
        self.media = media
        self.listing = listing

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(_BASE):
            raise tuf_exc.DownloadHTTPError(f"not on the media: {url}", 404)
        rel = url[len(_BASE):]
        if rel not in self.listing:
            raise tuf_exc.DownloadHTTPError(f"{rel} is not on the media", 404)
        name = rel.rsplit("/", 1)[-1]
        if self.listing[rel] > _limit(name):
            raise refuse(f"{rel} is {self.listing[rel]} bytes, over the {_limit(name)}-byte "
                         f"metadata limit")
        return iter([self.media.read_bytes(rel, _limit(name))])


class StaleMetadata(BundleRefused):
    """Metadata older than (or not matching the versions of) what is trusted: a rollback,
    a replay, or a mix of releases. `media scan` shows such media as older."""


def _tuf_refusal(exc: BaseException) -> BundleRefused:
    if isinstance(exc.__cause__, BundleRefused):
        return exc.__cause__
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        text = " ".join(str(exc).split())[:200]
        return StaleMetadata(f"version check failed (rollback, replay or mix-and-match of "
                             f"releases): {text}")
    return refuse(_tuf_reason(exc))


def _tuf_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return f"expired metadata: {text}"
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return f"not enough valid signatures: {text}"
    if isinstance(exc, tuf_exc.DownloadHTTPError):
        return f"missing metadata: {text}"
    return f"metadata refused: {text}"


_TUF_ERRORS = (tuf_exc.RepositoryError, tuf_exc.DownloadError)


def verify_media(trusted: TrustState, media: MediaSource, now: datetime,
                 installed_base: Callable[[str], bool], scratch: Path | None = None
                 ) -> VerifiedBundle:
    """Verify everything but payload bytes; raise BundleRefused with a one-line reason."""
    listing = {f.relpath: f.size for f in media.list_files()}
    with tempfile.TemporaryDirectory(prefix="trust-", dir=scratch) as tmp:
        tmpdir = Path(tmp)
        for role, body in trusted.others.items():
            (tmpdir / f"{role}.json").write_bytes(body)
        config = UpdaterConfig(max_root_rotations=64, max_delegations=8,
                               root_max_length=MAX_ROOT, timestamp_max_length=MAX_TIMESTAMP,
                               snapshot_max_length=MAX_SNAPSHOT,
                               targets_max_length=MAX_TARGETS, prefix_targets_with_hash=False)
        try:
            updater = Updater(str(tmpdir), _BASE + METADATA_DIR + "/",
                              fetcher=MediaFetcher(media, listing), config=config,
                              bootstrap=trusted.root)
            # Expiry is judged by the appliance clock (tests fix it; production checks it
            # against the audit trail first), not by this process's idea of now. python-tuf
            # reads the reference time from its trusted set and has no public setter.
            updater._trusted_set.reference_time = now
            updater.refresh()
        except _TUF_ERRORS as exc:
            raise _tuf_refusal(exc) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise refuse(f"metadata refused: {' '.join(str(exc).split())[:200]}") from None
        v = _Verification(updater, media, listing, tmpdir, trusted.root_history)
        bundle = v.run(installed_base)
    return bundle


class _Verification:
    def __init__(self, updater: Updater, media: MediaSource, listing: dict[str, int],
                 tmpdir: Path, stored_roots: dict[int, bytes]) -> None:
        self.updater = updater
        self.media = media
        self.listing = listing
        self.tmpdir = tmpdir
        self.stored_roots = stored_roots
        self.expected: set[str] = set()

    def target(self, path: str, max_size: int) -> tuple[TargetFile, bytes]:
        """A signed target's info and its bytes from the media, length and hash checked."""
        try:
            info = self.updater.get_targetinfo(path)
        except _TUF_ERRORS as exc:
            raise _tuf_refusal(exc) from None
        if info is None:
            raise refuse(f"{path} is not signed: no TUF role lists it")
        rel = f"{TARGETS_DIR}/{path}"
        if rel not in self.listing:
            raise refuse(f"missing file {rel}")
        if self.listing[rel] != info.length:
            raise refuse(f"{rel} is {self.listing[rel]} bytes, its signed length is "
                         f"{info.length} (truncated or altered)")
        if info.length > max_size:
            raise refuse(f"{rel} is over the {max_size}-byte limit")
        data = self.media.read_bytes(rel, max_size)
        try:
            info.verify_length_and_hashes(data)
        except tuf_exc.LengthOrHashMismatchError:
            raise refuse(f"{rel} does not match its signed SHA-256 (tampered)") from None
        self.expected.add(rel)
        return info, data

    def verified(self, role: str) -> Targets:
        """Targets metadata the Updater verified and persisted in its metadata directory."""
        return Metadata[Targets].from_bytes((self.tmpdir / f"{role}.json").read_bytes()).signed

    def final_root(self) -> tuple[Root, int]:
        history = self.tmpdir / "root_history"
        version = max(int(p.name.split(".")[0]) for p in history.glob("*.root.json"))
        md = Metadata[Root].from_bytes((history / f"{version}.root.json").read_bytes())
        return md.signed, version

    def role_of(self, path: str) -> tuple[str, set[str]]:
        """Which role listed `path`, and the keys that role names (for model signatures)."""
        top = self.verified("targets")
        if path in top.targets:
            root, _ = self.final_root()
            role = root.roles["targets"]
            return "targets", set(role.keyids)
        if top.delegations is None or not top.delegations.roles:
            raise refuse(f"{path} is listed by no known role")
        for name, drole in top.delegations.roles.items():
            if not drole.is_delegated_path(path):
                continue
            delegated = self.verified(name)
            if delegated.delegations is not None:
                raise refuse(f"role {name} delegates further; one level of delegation only")
            if path in delegated.targets:
                return name, set(drole.keyids)
        raise refuse(f"{path} is listed by no known role")

    def key_for(self, role: str, keyid: str) -> ec.EllipticCurvePublicKey:
        if role == "targets":
            root, _ = self.final_root()
            key = root.keys.get(keyid)
        else:
            delegations = self.verified("targets").delegations
            key = delegations.keys.get(keyid) if delegations else None
        if key is None:
            raise refuse(f"key {keyid[:16]} is not named by the TUF metadata")
        try:
            return bkeys.crypto_public(key)
        except (ValueError, ApplianceError) as exc:
            raise refuse(f"key {keyid[:16]} cannot verify model signatures: {exc}") from None

    def run(self, installed_base: Callable[[str], bool]) -> VerifiedBundle:
        present = [p for p in DESCRIPTION_TARGETS if f"{TARGETS_DIR}/{p}" in self.listing]
        if len(present) != 1:
            raise refuse("media must hold exactly one bundle description "
                         f"({' or '.join(TARGETS_DIR + '/' + p for p in DESCRIPTION_TARGETS)})")
        desc_info, desc_bytes = self.target(present[0], MAX_DESCRIPTION)
        try:
            raw = json.loads(desc_bytes)
        except ValueError:
            raise refuse("bundle description is not valid JSON") from None
        description = BundleDescription.from_dict(raw)
        desc_role, _ = self.role_of(present[0])
        components = [self.component(ref.target, ref.sha256, desc_role)
                      for ref in description.components]
        names = [c.info.name for c in components]
        if len(set(names)) != len(names):
            raise refuse("two components share a name")
        self.check_listing()
        self.check_bases(components, installed_base)
        updates = self.trust_updates()
        return VerifiedBundle(description, desc_bytes, hashlib.sha256(desc_bytes).hexdigest(),
                              tuple(components), self.verified("targets").version, updates)

    def component(self, target: str, sha256: str, desc_role: str) -> VerifiedComponent:
        if not target.endswith(".sig"):
            raise refuse(f"component {target} is not a signature target (*.sig)")
        tinfo, data = self.target(target, MAX_SIGNATURE)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise refuse(f"{target} is not the signature the bundle description names")
        role, role_keyids = self.role_of(target)
        if desc_role == LORA_ROLE and role != LORA_ROLE:
            raise refuse(f"{target}: an appliance-published bundle may only hold its own "
                         "components")
        info = ComponentInfo.from_custom(tinfo.custom, target)
        if info.kind not in ROLE_KINDS.get(role, ()):
            raise refuse(f"{target}: role {role} may not publish {info.kind} components")
        what = f"component {info.name}"
        if info.signer.method == "key":
            if info.signer.keyid not in role_keyids:
                raise refuse(f"{what}: signing key {info.signer.keyid[:16]} is not a key of "
                             f"role {role}")
            manifest = comp.verify_key_signature(data, self.key_for(role, info.signer.keyid),
                                                 what)
        else:
            _, root_bytes = self.target(SIGSTORE_ROOT_TARGET, MAX_TRUSTED_ROOT)
            manifest = comp.verify_sigstore_signature(data, root_bytes, info.signer.identity,
                                                      info.signer.issuer, what)
        if manifest.digest != info.digest:
            raise refuse(f"{what}: model signature digest differs from the TUF metadata")
        if len(manifest.files) != info.files:
            raise refuse(f"{what}: model signature lists {len(manifest.files)} files, the "
                         f"metadata says {info.files}")
        prefix = f"{TARGETS_DIR}/{info.payload}/"
        wanted = []
        for f in manifest.files:
            rel = prefix + f.relpath
            self.expected.add(rel)
            # A missing file is reported with the whole listing (it may be a rename).
            wanted.append(WantedFile(rel, f.sha256, self.listing.get(rel, -1)))
        total = sum(w.size for w in wanted)
        if all(w.size >= 0 for w in wanted) and total != info.size:
            raise refuse(f"{what}: files on the media total {total} bytes, the signed size is "
                         f"{info.size} (truncated or padded)")
        return VerifiedComponent(info, role, target, sha256, tuple(wanted))

    def check_bases(self, components: list[VerifiedComponent],
                    installed_base: Callable[[str], bool]) -> None:
        bases = {c.info.digest for c in components if c.info.kind == "base_model"}
        for c in components:
            base = c.info.base_model
            if base is not None and base.digest not in bases and not installed_base(base.digest):
                raise refuse(f"component {c.info.name}: base model {base.name} "
                             f"({base.digest[:16]}) is neither in the bundle nor installed")

    def check_listing(self) -> None:
        """Every file on the media is accounted for by signed metadata, and nothing is
        missing: extra, missing and renamed files are all refused."""
        _, root_version = self.final_root()
        allowed_meta = {f"{METADATA_DIR}/{n}" for n in ("root.json", "timestamp.json",
                                                        "snapshot.json")}
        allowed_meta |= {f"{METADATA_DIR}/{v}.root.json" for v in range(1, root_version + 1)}
        snapshot = json.loads((self.tmpdir / "snapshot.json").read_bytes())["signed"]
        allowed_meta |= {f"{METADATA_DIR}/{name}" for name in snapshot["meta"]}
        final_root = (self.tmpdir / "root_history" / f"{root_version}.root.json").read_bytes()
        root_json = f"{METADATA_DIR}/root.json"
        if root_json in self.listing and self.media.read_bytes(root_json, MAX_ROOT) != final_root:
            raise refuse(f"{root_json} is not the newest signed root")
        # Role metadata on the media must be exactly what was verified (python-tuf skips a
        # file whose version it already trusts, and never loads a role it does not need).
        self.check_old_roots(root_version)
        for rel in sorted(m for m in allowed_meta if m in self.listing):
            name = rel.rsplit("/", 1)[-1]
            if name.endswith("root.json"):
                continue
            verified = self.tmpdir / name
            if not verified.is_file() or verified.read_bytes() != self.media.read_bytes(
                    rel, _limit(name)):
                raise refuse(f"{rel} is not the metadata that was verified")
        expected = self.expected | {m for m in allowed_meta if m in self.listing}
        extra = sorted(set(self.listing) - expected)
        missing = sorted(self.expected - set(self.listing))
        if extra and missing:
            raise refuse(f"file {missing[0]} is missing and {extra[0]} is not signed "
                         "(renamed?)")
        if extra:
            raise refuse(f"extra file {extra[0]} is not in any signed manifest")
        if missing:
            raise refuse(f"missing file {missing[0]}")

    def check_old_roots(self, newest: int) -> None:
        """Each `N.root.json` on the media is the root of version N that was verified:
        walked by python-tuf in this run, or held by the appliance from earlier (python-tuf
        never reads those again). Versions from before the appliance's first trusted root
        must chain to it: signed by their own keys, and their keys signed the next version."""
        known = {**self.stored_roots}
        for p in (self.tmpdir / "root_history").glob("*.root.json"):
            known[int(p.name.split(".")[0])] = p.read_bytes()
        later_md: Metadata[Root] | None = None
        for version in range(newest, 0, -1):
            rel = f"{METADATA_DIR}/{version}.root.json"
            on_media = (self.media.read_bytes(rel, MAX_ROOT) if rel in self.listing
                        else None)
            if version in known:
                if on_media is not None and on_media != known[version]:
                    raise refuse(f"{rel} is not the root of version {version} that was "
                                 "verified")
                later_md = Metadata[Root].from_bytes(known[version])
                continue
            if on_media is None:
                later_md = None         # a gap: nothing older can be chained
                continue
            later_md = self._chained_root(rel, version, on_media, later_md)

    def _chained_root(self, rel: str, version: int, data: bytes,
                      later_md: Metadata[Root] | None) -> Metadata[Root]:
        """An old root the appliance never held, accepted only as a link of the chain that
        leads to the first root it trusts."""
        try:
            md = Metadata.from_bytes(data)
        except (tuf_exc.RepositoryError, ValueError, TypeError, KeyError):
            raise refuse(f"{rel} is not TUF root metadata") from None
        if not isinstance(md.signed, Root) or md.signed.version != version:
            raise refuse(f"{rel} is not root metadata of version {version}")
        if later_md is None:
            raise refuse(f"{rel} cannot be checked: root version {version + 1} is missing")
        try:
            md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
            md.signed.verify_delegate("root", later_md.signed_bytes, later_md.signatures)
        except tuf_exc.UnsignedMetadataError:
            raise refuse(f"{rel} is not a root of the verified rotation chain") from None
        return md

    def trust_updates(self) -> tuple[tuple[str, bytes], ...]:
        out = [("root", p.read_bytes()) for p in
               sorted((self.tmpdir / "root_history").glob("*.root.json"),
                      key=lambda p: int(p.name.split(".")[0]))]
        for p in sorted(self.tmpdir.glob("*.json")):
            if p.name != "root.json" and not p.is_symlink():
                out.append((p.name[: -len(".json")], p.read_bytes()))
        return tuple(out)

