"""Publishing: init-repo, add-component, sign (one call per signer, so k-of-n works) and
publish to a directory or one uncompressed tar. Used by vendors and by the appliance itself.

The metadata of a release is built once, on the first `sign`, from the components added;
adding a component afterwards drops the collected signatures (they would no longer match).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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

from appliance.bundle import components as comp
from appliance.bundle import keys as bkeys
from appliance.bundle.model import (
    KINDS,
    LORA_PATHS,
    LORA_ROLE,
    METADATA_DIR,
    ROLE_KINDS,
    ROLE_PREFIX,
    SIGSTORE_ROOT_TARGET,
    TARGETS_DIR,
    BaseModelRef,
    BundleDescription,
    ComponentInfo,
    ComponentRef,
    EngineSpec,
    Signer,
)
from appliance.bundle.repo import (
    ComponentSpec,
    Repo,
    RepoConfig,
    RoleKeys,
    check_name,
    check_roles,
    dump,
    write_atomic,
)
from appliance.clock import format_ts
from appliance.errors import InvalidInput

SERIALIZER = JSONSerializer(compact=False)


def init_repo(directory: Path, name: str, publisher: str, root_keys: list[bytes],
              root_threshold: int = 1, targets_keys: list[bytes] | None = None,
              targets_threshold: int = 1, online_keys: list[bytes] | None = None,
              lora_keys: list[bytes] | None = None,
              expires_days: dict[str, int] | None = None) -> Repo:
    """Create a working repository. Keys are public PEMs; targets default to the root keys,
    snapshot and timestamp ("online") to the targets keys."""
    repo = Repo(Path(directory))
    if repo.exists():
        raise InvalidInput(f"{directory} already holds a bundle repository",
                           "use it, or choose a new directory")
    if not publisher.strip():
        raise InvalidInput("the publisher name is empty", "pass --publisher")
    cfg = RepoConfig(check_name(name, "bundle name"), publisher.strip(), {}, {})
    rk = [cfg.add_key(k, "root key") for k in root_keys]
    tk = [cfg.add_key(k, "targets key") for k in targets_keys] if targets_keys else rk
    ok = [cfg.add_key(k, "online key") for k in online_keys] if online_keys else tk
    cfg.roles = {"root": RoleKeys(rk, root_threshold),
                 "targets": RoleKeys(tk, targets_threshold),
                 "snapshot": RoleKeys(ok, 1), "timestamp": RoleKeys(ok, 1)}
    if lora_keys:
        cfg.delegations[LORA_ROLE] = RoleKeys([cfg.add_key(k, "LoRA key") for k in lora_keys],
                                              1)
    if expires_days:
        cfg.expires_days.update(expires_days)
    check_roles(cfg.roles)
    repo.root.mkdir(parents=True, exist_ok=True)
    repo.save_config(cfg)
    return repo


def set_role_keys(directory: Path, role: str, public_keys: list[bytes], threshold: int) -> None:
    """Rotate or revoke: the next release carries a new root (or targets, for the LoRA
    delegation) naming these keys; it needs the old root keys' threshold too."""
    repo = Repo(Path(directory))
    cfg = repo.config()
    ids = [cfg.add_key(k, f"{role} key") for k in public_keys]
    if role == LORA_ROLE:
        cfg.delegations[role] = RoleKeys(ids, threshold)
    elif role in cfg.roles:
        cfg.roles[role] = RoleKeys(ids, threshold)
        check_roles(cfg.roles)
    else:
        raise InvalidInput(f"unknown role {role!r}",
                           f"use root, targets, snapshot, timestamp or {LORA_ROLE}")
    repo.save_config(cfg)
    _drop_signatures(repo)


def _drop_signatures(repo: Repo) -> None:
    if repo.release_metadata.exists():
        shutil.rmtree(repo.release_metadata)


def add_component(directory: Path, kind: str, path: Path, key: Path | None, *,
                  name: str | None = None, tags: list[str] | None = None,
                  role: str = "targets", base_model: str | None = None,
                  base_digest: str | None = None, engine: EngineSpec | None = None,
                  sigstore_signature: Path | None = None, identity: str = "",
                  issuer: str = "") -> ComponentSpec:
    """Copy a component's files into the release and sign them with model signing (or take a
    keyless signature made elsewhere). The key must be one the role that lists it names."""
    repo = Repo(Path(directory))
    cfg = repo.config()
    spec = repo.release()
    if kind not in KINDS:
        raise InvalidInput(f"unknown component kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if role not in ROLE_KINDS or (role == LORA_ROLE and LORA_ROLE not in cfg.delegations):
        raise InvalidInput(f"role {role!r} cannot list components here",
                           "use targets, or init-repo with --lora-key for appliance-lora")
    if kind not in ROLE_KINDS[role]:
        raise InvalidInput(f"role {role} may not publish {kind} components",
                           "only lora_adapter components go to appliance-lora")
    src = Path(path)
    if not src.is_dir():
        raise InvalidInput(f"{src} is not a directory", "a component is a directory of files")
    name = check_name(name or src.name.lower(), "component name")
    if any(c.name == name for c in spec.components):
        raise InvalidInput(f"component {name} is already in this release", "choose another name")
    payload = f"{ROLE_PREFIX[role]}/{name}"
    dest = repo.release_targets / payload
    files = _copy_tree(src, dest)
    try:
        if sigstore_signature is not None:
            sig = Path(sigstore_signature).read_bytes()
            signer = Signer("sigstore", identity=identity, issuer=issuer)
            manifest = comp.parse_statement(comp.PAYLOAD_TYPE, _statement_of(sig), name)
        else:
            if key is None:
                raise InvalidInput("no signing key", "pass --key KEYFILE")
            private = bkeys.load_private(key)
            keyid = bkeys.keyid_of(private.public_key())
            allowed = cfg.delegations[role].keyids if role == LORA_ROLE \
                else cfg.roles["targets"].keyids
            if keyid not in allowed:
                raise InvalidInput(f"key {keyid[:16]} is not a {role} key of this repository",
                                   "sign components with a key of the role that lists them")
            sig = comp.sign_component(dest, Path(key))
            manifest = comp.verify_key_signature(sig, private.public_key(), name)
            signer = Signer("key", keyid=keyid)
        base = None
        if kind == "lora_adapter":
            base = _base_ref(spec.components, base_model, base_digest)
        elif base_model or base_digest:
            raise InvalidInput("only a lora_adapter names a base model", "drop --base-model")
        if (kind == "trtllm_engine") != (engine is not None):
            raise InvalidInput("a trtllm_engine needs --gpu-arch, --trtllm-version, --tp, --pp "
                               "and --min-gpu-memory-mib; other kinds take none")
        info = ComponentInfo(name=name, kind=kind, payload=payload,
                             size=sum(files.values()), files=len(files),
                             digest=manifest.digest, signer=signer,
                             tags=tuple(sorted(set(tags or []))), base_model=base,
                             engine=engine)
        ComponentInfo.from_custom(info.to_custom(), payload + ".sig")   # same checks as import
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    write_atomic(repo.release_targets / (payload + ".sig"), sig)
    cs = ComponentSpec(name, kind, role, info.to_custom())
    spec.components.append(cs)
    repo.save_release(spec)
    _drop_signatures(repo)
    return cs


def _statement_of(sig: bytes) -> bytes:
    """The statement inside a keyless signature made elsewhere (verified at import)."""
    try:
        return base64.b64decode(json.loads(sig)["dsseEnvelope"]["payload"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not a sigstore bundle with a DSSE envelope: {exc}",
                           "pass the .sig file model_signing wrote") from None


def _base_ref(components: list[ComponentSpec], base_model: str | None,
              base_digest: str | None) -> BaseModelRef:
    if base_model is None:
        raise InvalidInput("a lora_adapter needs its base model", "pass --base-model NAME")
    if base_digest is None:
        found = [c for c in components if c.name == base_model and c.kind == "base_model"]
        if not found:
            raise InvalidInput(f"no base_model component {base_model} in this release",
                               "add it first, or pass --base-digest for an installed one")
        base_digest = found[0].custom["digest"]
    return BaseModelRef(check_name(base_model, "base model name"), base_digest)


def set_trusted_root(directory: Path, trusted_root: Path) -> None:
    """Ship a sigstore trusted_root.json as a target (for keyless components)."""
    repo = Repo(Path(directory))
    spec = repo.release()
    write_atomic(repo.release_targets / SIGSTORE_ROOT_TARGET, Path(trusted_root).read_bytes())
    spec.trusted_root = True
    repo.save_release(spec)
    _drop_signatures(repo)


def set_release(directory: Path, version: int | None = None, description: str | None = None
                ) -> None:
    repo = Repo(Path(directory))
    spec = repo.release()
    if version is not None:
        if version <= repo.config().last_version:
            raise InvalidInput(f"version {version} is not above the last published "
                               f"{repo.config().last_version}", "versions only go up")
        spec.version = version
    if description is not None:
        spec.description = description
    repo.save_release(spec)
    _drop_signatures(repo)


def _copy_tree(src: Path, dest: Path) -> dict[str, int]:
    if dest.exists():
        shutil.rmtree(dest)
    files: dict[str, int] = {}
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_symlink():
            raise InvalidInput(f"{p} is a symbolic link", "bundles hold regular files only")
        if p.is_dir():
            continue
        if not p.is_file():
            raise InvalidInput(f"{p} is not a regular file", "bundles hold regular files only")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        files[rel] = target.stat().st_size
    if not files:
        raise InvalidInput(f"{src} holds no files", "a component needs at least one file")
    return files


# --- building and signing metadata -------------------------------------------------------

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
    _drop_signatures(repo)
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
    if not repo.release_metadata.exists():
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
    to = Path(to)
    if to.suffix == ".tar":
        if to.exists():
            raise InvalidInput(f"{to} exists", "choose a new file")
        _write_tar(to, files)
    else:
        if to.exists() and any(to.iterdir()):
            raise InvalidInput(f"{to} is not empty", "choose a new or empty directory")
        for rel, src in files.items():
            dest = to / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
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


def _write_tar(to: Path, files: dict[str, Path]) -> None:
    tmp = to.with_name(to.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel, src in files.items():
            info = tarfile.TarInfo(rel)
            info.size = src.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with src.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(to)


def _promote(repo: Repo) -> None:
    cfg = repo.config()
    spec = repo.release()
    repo.published.mkdir(exist_ok=True)
    for p in repo.release_metadata.glob("*.json"):
        shutil.copyfile(p, repo.published / p.name)
    cfg.last_version = spec.version
    repo.save_config(cfg)
    shutil.rmtree(repo.release_dir)

