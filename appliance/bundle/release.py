"""A release's metadata: built once from the components added, signed one key at a time
(k of n), checked against every threshold, and written to media as a directory or tar.

Snapshot and timestamp name versions only, so their content is fixed when the release is
built and each signer signs the same bytes, in any order, on any machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from appliance.bundle import keys as bkeys
from appliance.bundle.components import PAYLOAD_TYPE, parse_statement
from appliance.bundle.model import (
    LORA_PATHS,
    LORA_ROLE,
    METADATA_DIR,
    SIGSTORE_ROOT_TARGET,
    TARGETS_DIR,
    BundleDescription,
    ComponentRef,
)
from appliance.bundle.repo import Repo, RepoConfig, dump
from appliance.clock import format_ts
from appliance.durable import StagedFile, fsync_dir, write_atomic
from appliance.errors import ApplianceError, InvalidInput
from appliance.text import shown

SERIALIZER = JSONSerializer(compact=False)


def _expiry(now: datetime, cfg: RepoConfig, role: str) -> datetime:
    return (now + timedelta(days=cfg.expires_days.get(role, 180))).replace(microsecond=0)


def _tuf_keys(cfg: RepoConfig, keyids: list[str]) -> dict:
    return {k: bkeys.tuf_key(bkeys.load_public(cfg.keys[k].encode(), k)) for k in keyids}


def _root_for(cfg: RepoConfig, version: int, now: datetime) -> Root:
    root = Root(version=version, expires=_expiry(now, cfg, "root"), consistent_snapshot=False)
    for role, rk in cfg.roles.items():
        for key in _tuf_keys(cfg, rk.keyids).values():
            root.add_key(key, role)
        root.roles[role].threshold = rk.threshold
    return root


def build(directory: Path, now: datetime | None = None) -> None:
    """Build this release's metadata (unsigned). `now` sets creation time and expiry."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    repo = Repo(Path(directory))
    cfg = repo.config()
    spec = repo.release()
    if not spec.components:
        raise InvalidInput("the release has no components", "run `bundle add-component` first")
    roots = repo.published_roots()
    out = repo.release_metadata
    repo.drop_signatures()
    out.mkdir(parents=True)
    new_root = _root_for(cfg, roots[-1].signed.version + 1 if roots else 1, now)
    if not roots or _root_changed(roots[-1].signed, new_root):
        _write(out / f"{new_root.version}.root.json", Metadata(new_root))
    lora_only = all(c.role == LORA_ROLE for c in spec.components)
    # A LoRA-only release (the appliance publishing its own adapter) leaves the vendor's
    # signed targets metadata as it is: only the delegated role, snapshot and timestamp move.
    reuse_targets = lora_only and (repo.published / "targets.json").exists()
    targets: dict[str, Targets] = {}
    if not reuse_targets:
        targets["targets"] = Targets(version=repo.published_version("targets") + 1,
                                     expires=_expiry(now, cfg, "targets"))
    if cfg.delegations and not reuse_targets:
        keys = _tuf_keys(cfg, [k for rk in cfg.delegations.values() for k in rk.keyids])
        targets["targets"].delegations = Delegations(keys=keys, roles={
            name: DelegatedRole(name, list(rk.keyids), rk.threshold, True, paths=LORA_PATHS)
            for name, rk in cfg.delegations.items()})
    if any(c.role == LORA_ROLE for c in spec.components):
        targets[LORA_ROLE] = Targets(version=repo.published_version(LORA_ROLE) + 1,
                                     expires=_expiry(now, cfg, LORA_ROLE))
    refs = []
    for c in spec.components:
        sig_path = c.custom["payload"] + ".sig"
        data = (repo.release_targets / sig_path).read_bytes()
        tf = TargetFile.from_data(sig_path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = c.custom
        targets[c.role].targets[sig_path] = tf
        refs.append(ComponentRef(sig_path, hashlib.sha256(data).hexdigest()))
    desc = BundleDescription(cfg.name, spec.version, cfg.publisher, format_ts(now),
                             tuple(refs), spec.description)
    desc_bytes = dump(desc.to_dict())
    desc_role = LORA_ROLE if lora_only else "targets"
    desc_path = "lora/bundle.json" if lora_only else "bundle.json"
    write_atomic(repo.release_targets / desc_path, desc_bytes)
    targets[desc_role].targets[desc_path] = TargetFile.from_data(desc_path, desc_bytes,
                                                                 ["sha256"])
    if spec.trusted_root:
        if reuse_targets:
            raise InvalidInput("a LoRA-only release cannot ship a trusted root",
                               "ship it in a vendor release")
        data = (repo.release_targets / SIGSTORE_ROOT_TARGET).read_bytes()
        targets["targets"].targets[SIGSTORE_ROOT_TARGET] = TargetFile.from_data(
            SIGSTORE_ROOT_TARGET, data, ["sha256"])
    snapshot = Snapshot(version=repo.published_version("snapshot") + 1,
                        expires=_expiry(now, cfg, "snapshot"))
    snapshot.meta = {f"{role}.json": MetaFile(version=t.version) for role, t in targets.items()}
    if reuse_targets:
        snapshot.meta["targets.json"] = MetaFile(version=repo.published_version("targets"))
    timestamp = Timestamp(version=repo.published_version("timestamp") + 1,
                          expires=_expiry(now, cfg, "timestamp"),
                          snapshot_meta=MetaFile(version=snapshot.version))
    for role, t in targets.items():
        _write(out / f"{role}.json", Metadata(t))
    _write(out / "snapshot.json", Metadata(snapshot))
    _write(out / "timestamp.json", Metadata(timestamp))


def statement_of(sig: bytes) -> bytes:
    """The in-toto statement inside a model signature (key or keyless): the DSSE payload."""
    try:
        return base64.b64decode(json.loads(sig)["dsseEnvelope"]["payload"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not a sigstore bundle with a DSSE envelope: {exc}",
                           "pass the .sig file model_signing wrote") from None


def _root_changed(old: Root, new: Root) -> bool:
    return old.keys != new.keys or old.roles != new.roles


def _write(path: Path, md: Metadata) -> None:
    write_atomic(path, md.to_bytes(SERIALIZER))


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    signed: int
    threshold: int
    expires: str

    @property
    def complete(self) -> bool:
        return self.signed >= self.threshold


def _metadata_files(repo: Repo) -> dict[str, Path]:
    """role name -> release metadata file (a new root under its own name)."""
    files = {}
    for p in sorted(repo.release_metadata.glob("*.json")):
        role = "root" if p.name.endswith(".root.json") else p.name[: -len(".json")]
        files[role] = p
    return files


def _delegators(repo: Repo) -> tuple[list[Root], Targets | None]:
    """The roots that must approve the release (previous and new) and the new targets."""
    files = _metadata_files(repo)
    roots = [r.signed for r in repo.published_roots()[-1:]]
    if "root" in files:
        roots.append(Metadata[Root].from_bytes(files["root"].read_bytes()).signed)
    path = files.get("targets", repo.published / "targets.json")
    targets = Metadata[Targets].from_bytes(path.read_bytes()).signed
    return roots, targets


def status(directory: Path) -> list[RoleStatus]:
    """Signatures collected per role; for a new root, the weaker of old and new roots."""
    repo = Repo(Path(directory))
    cfg = repo.config()  # no repository at all is said as such, not "nothing is being signed"
    if not repo.release_metadata.exists():
        if not repo.release_dir.exists() and cfg.last_version:
            # publish ends a release: its payload is gone from the working repository
            raise InvalidInput(f"release {cfg.last_version} was published already and "
                               "nothing is being signed", "copy the published directory or "
                               "tar for more media; add components to start the next release")
        raise InvalidInput("nothing is being signed yet", "run `appliance bundle sign` first")
    roots, targets = _delegators(repo)
    out = []
    for role, path in _metadata_files(repo).items():
        md = Metadata.from_bytes(path.read_bytes())
        payload = md.signed_bytes
        if role == "root":
            results = [r.get_verification_result("root", payload, md.signatures) for r in roots]
        elif role == LORA_ROLE:
            results = [targets.get_verification_result(role, payload, md.signatures)]
        else:
            results = [roots[-1].get_verification_result(role, payload, md.signatures)]
        worst = min(results, key=lambda r: len(r.signed) - r.threshold)
        out.append(RoleStatus(role, md.signed.version, len(worst.signed), worst.threshold,
                              md.signed.expires.isoformat()))
    return out


def sign(directory: Path, key: Path, now: datetime | None = None) -> list[str]:
    """Add this key's signature to every metadata file it may sign; build first if needed.
    Returns the roles signed."""
    repo = Repo(Path(directory))
    if not repo.release_metadata.exists():
        build(directory, now)
    private = bkeys.load_private(key)
    signer = bkeys.tuf_signer(private)
    keyid = signer.public_key.keyid
    roots, targets = _delegators(repo)
    signed = []
    for role, path in _metadata_files(repo).items():
        if role == "root":
            allowed = {k for r in roots for k in r.roles["root"].keyids}
        elif role == LORA_ROLE:
            allowed = set(_role_of(targets, role).keyids)
        else:
            allowed = set(roots[-1].roles[role].keyids)
        if keyid not in allowed:
            continue
        md = Metadata.from_bytes(path.read_bytes())
        md.sign(signer, append=True)
        _write(path, md)
        signed.append(role)
    if not signed:
        raise InvalidInput(f"key {keyid[:16]} may sign nothing in this release",
                           "check `appliance bundle status` for the keys each role needs")
    return signed


def _role_of(targets: Targets, name: str) -> Role:
    if targets.delegations is None or targets.delegations.roles is None \
            or name not in targets.delegations.roles:
        raise InvalidInput(f"role {name} is not delegated", "init-repo with --lora-key")
    return targets.delegations.roles[name]


def publish(directory: Path, to: Path) -> Path:
    """Write the signed release to a new directory or one uncompressed .tar, then make it
    the repository's published state (the next release's versions follow it)."""
    repo = Repo(Path(directory))
    incomplete = [s for s in status(directory) if not s.complete]
    if incomplete:
        s = incomplete[0]
        raise InvalidInput(f"role {s.role} has {s.signed} of {s.threshold} signatures",
                           "sign with more keys: `appliance bundle sign --key ...`")
    files = _release_files(repo)
    expected = _signed_digests(repo, files)
    to = Path(to)
    if not to.parent.is_dir():
        raise InvalidInput(f"directory {to.parent} does not exist",
                           "mount the media, or choose another --to")
    if to.suffix == ".tar":
        if to.exists():
            raise InvalidInput(f"{to} exists", "choose a new file")
    elif to.exists() and not to.is_dir():
        raise InvalidInput(f"{to} is a file", "choose a new directory, or a new FILE.tar")
    elif to.exists() and any(to.iterdir()):
        raise InvalidInput(f"{to} is not empty", "choose a new or empty directory")
    try:
        (_write_tar if to.suffix == ".tar" else _write_dir)(to, files, expected)
    except FileExistsError:
        raise InvalidInput(f"{to} appeared while the release was written",
                           "choose a new file; nothing was published") from None
    except OSError as exc:
        raise ApplianceError(f"could not publish to {to}: {exc.strerror or exc}",
                             "check that the media is mounted, writable and has room; "
                             "nothing was published") from exc
    _promote(repo)
    return to


def _release_files(repo: Repo) -> dict[str, Path]:
    """relpath on media -> source file, sorted."""
    files: dict[str, Path] = {}
    new = {p.name: p for p in repo.release_metadata.glob("*.json")}
    old_roots = {p.name: p for p in repo.published.glob("*.root.json")} \
        if repo.published.exists() else {}
    roots = {**old_roots, **{n: p for n, p in new.items() if n.endswith(".root.json")}}
    for name, p in roots.items():
        files[f"{METADATA_DIR}/{name}"] = p
    latest = max(roots, key=lambda n: int(n.split(".")[0]))
    files[f"{METADATA_DIR}/root.json"] = roots[latest]
    for name, p in new.items():
        if not name.endswith(".root.json"):
            files[f"{METADATA_DIR}/{name}"] = p
    # Roles the snapshot names but this release did not rebuild come from the published set.
    snapshot = Metadata[Snapshot].from_bytes(new["snapshot.json"].read_bytes()).signed
    for name in snapshot.meta:
        if name not in new:
            files[f"{METADATA_DIR}/{name}"] = repo.published / name
    for p in sorted(repo.release_targets.rglob("*")):
        if p.is_file():
            files[f"{TARGETS_DIR}/{p.relative_to(repo.release_targets).as_posix()}"] = p
    return dict(sorted(files.items()))


_RESTART = "start the release again: remove the working repository's release/ directory " \
    "and add the components again; nothing was published"


def _signed_digests(repo: Repo, files: dict[str, Path]) -> dict[str, str]:
    """media path -> the SHA-256 a signature gives it: each target from the release's
    targets metadata, each payload file from its component's model signature. A file in
    the working repository that none lists, or one they list that is gone, is refused here:
    the importer would refuse the whole bundle for it."""
    expected: dict[str, str] = {}
    for role in ("targets.json", f"{LORA_ROLE}.json"):
        path = repo.release_metadata / role
        if not path.exists():
            continue
        for name, tf in Metadata[Targets].from_bytes(path.read_bytes()).signed.targets.items():
            expected[f"{TARGETS_DIR}/{name}"] = tf.hashes["sha256"]
            if name.endswith(".sig"):
                manifest = parse_statement(PAYLOAD_TYPE, statement_of(
                    (repo.release_targets / name).read_bytes()), name)
                for f in manifest.files:
                    expected[f"{TARGETS_DIR}/{name[:-len('.sig')]}/{f.relpath}"] = f.sha256
    unsigned = [rel for rel in files if rel.startswith(f"{TARGETS_DIR}/") and rel not in expected]
    missing = [rel for rel in expected if rel not in files]
    if unsigned or missing:
        what = f"{shown(unsigned[0])} is in the release but no signature lists it" if unsigned \
            else f"{shown(missing[0])} is signed but gone from the working repository"
        raise InvalidInput(what, _RESTART)
    return expected


class _Hashing:
    """A file read through it is hashed on the way (tarfile reads the source once)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        return data


def _check_copied(rel: str, sha: str, expected: dict[str, str] | None) -> None:
    if expected is not None and rel in expected and sha != expected[rel]:
        raise InvalidInput(f"{shown(rel)} changed since it was signed", _RESTART)


def _write_tar(to: Path, files: dict[str, Path],
               expected: dict[str, str] | None = None) -> None:
    """One uncompressed tar, written under a temporary name and put in place when whole,
    never over a file that took the name meanwhile (FileExistsError). Each file is hashed
    as it is written and checked against `expected` (the signed digests)."""
    staged = StagedFile(to, overwrite=False)
    try:
        with staged.open() as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel, src in files.items():
                    with src.open("rb") as f:
                        info = tarfile.TarInfo(rel)
                        info.size = os.fstat(f.fileno()).st_size
                        info.mode = 0o644
                        info.mtime = 0
                        hashing = _Hashing(f)
                        tar.addfile(info, hashing)
                    _check_copied(rel, hashing.sha.hexdigest(), expected)
            out.flush()
            os.fsync(out.fileno())
        staged.commit()
    except BaseException:
        staged.discard()
        raise


def _write_dir(to: Path, files: dict[str, Path],
               expected: dict[str, str] | None = None) -> None:
    """A directory, built beside `to` under a new name of its own (never one that is there
    already: it may be the vendor's) and renamed when whole: media never holds half a
    bundle under the bundle's name. Files are checked against `expected` as copied."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.", suffix=".partial", dir=to.parent))
    try:
        for rel, src in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            with src.open("rb") as f, open(dest, "xb") as out:
                while block := f.read(_BLOCK):
                    sha.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            _check_copied(rel, sha.hexdigest(), expected)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the bundle from other accounts
        if to.exists():
            to.rmdir()  # empty, checked above
        tmp.rename(to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(to.parent)


_BLOCK = 4 << 20


def _promote(repo: Repo) -> None:
    cfg = repo.config()
    spec = repo.release()
    repo.published.mkdir(exist_ok=True)
    for p in repo.release_metadata.glob("*.json"):
        shutil.copyfile(p, repo.published / p.name)
    cfg.last_version = spec.version
    repo.save_config(cfg)
    shutil.rmtree(repo.release_dir)

