"""Publishing: init-repo, add-component, sign (one call per signer, so k-of-n works) and
publish to a directory or one uncompressed tar. Used by vendors and by the appliance itself.

The metadata of a release is built once, on the first `sign`, from the components added;
adding a component afterwards drops the collected signatures (they would no longer match).
Building, signing and writing media live in release.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.bundle import components as comp
from appliance.bundle import keys as bkeys
from appliance.bundle.model import (
    KINDS,
    LORA_ROLE,
    MAX_FILES,
    ROLE_KINDS,
    ROLE_PREFIX,
    SIGSTORE_ROOT_TARGET,
    BaseModelRef,
    ComponentInfo,
    EngineSpec,
    Signer,
    safe_relpath,
)
from appliance.bundle.release import (  # noqa: F401 (the publishing API in one place)
    SERIALIZER,
    RoleStatus,
    _release_files,
    build,
    publish,
    sign,
    statement_of,
    status,
)
from appliance.bundle.repo import (
    ComponentSpec,
    Repo,
    RepoConfig,
    RoleKeys,
    check_name,
    check_roles,
)
from appliance.durable import write_atomic
from appliance.errors import BundleRefused, HardwareRefused, InvalidInput
from appliance.text import one_line, shown


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
    # One line, as the appliance requires of the bundle description it reads.
    publisher = one_line(publisher, "the publisher name")
    if not publisher:
        raise InvalidInput("the publisher name is empty", "pass --publisher")
    cfg = RepoConfig(check_name(name, "bundle name"), publisher, {}, {})
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
    repo.drop_signatures()


def add_component(directory: Path, kind: str, path: Path, key: Path | None, *,
                  name: str | None = None, tags: list[str] | None = None,
                  role: str = "targets", base_model: str | None = None,
                  base_digest: str | None = None, engine: EngineSpec | None = None,
                  sigstore_signature: Path | None = None, identity: str = "",
                  issuer: str = "", check_engine: bool = True) -> ComponentSpec:
    """Copy a component's files into the release and sign them with model signing (or take a
    keyless signature made elsewhere). The key must be one the role that lists it names.
    An engine's own config.json is held to its declared profile as the appliance will hold
    it (`check_engine=False` only to publish one the appliance must refuse, in tests)."""
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
            try:
                sig = Path(sigstore_signature).read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read {shown(str(sigstore_signature))}: "
                                   f"{exc.strerror}", "pass --sigstore-signature with the "
                                   "model signature file made by model signing") from None
            signer = Signer("sigstore", identity=identity, issuer=issuer)
            manifest = comp.parse_statement(comp.PAYLOAD_TYPE, statement_of(sig), name)
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
        if engine is not None and check_engine:
            _check_engine(dest, name, engine)
        if kind == "evaluation_evidence":
            _check_evidence(dest, name, spec.components)
    except BundleRefused as exc:  # the import's checks, said to the publisher
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInput(exc.message, "correct the component's options and add it again"
                           ) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    write_atomic(repo.release_targets / (payload + ".sig"), sig)
    cs = ComponentSpec(name, kind, role, info.to_custom())
    spec.components.append(cs)
    repo.save_release(spec)
    repo.drop_signatures()
    return cs


def _check_engine(engine_dir: Path, name: str, engine: EngineSpec) -> None:
    """The check `update check` makes after import, made before the engine is shipped."""
    from appliance.hardware.engine_config import verify_engine
    from appliance.hardware.profiles import EngineProfile

    declared = EngineProfile(id=name, kind="trtllm_engine", gpu_archs=engine.gpu_archs,
                             trtllm_version=engine.trtllm_version, tp_size=engine.tp,
                             pp_size=engine.pp,
                             min_gpu_memory_gib=engine.min_gpu_memory_mib / 1024)
    try:
        verify_engine(engine_dir, declared)
    except HardwareRefused as exc:
        raise InvalidInput(exc.message, "add the directory TensorRT-LLM saved the engine to "
                           "(config.json and rank<N>.engine), with the --trtllm-version, "
                           "--tp and --pp it was built with") from None


def _check_evidence(evidence_dir: Path, name: str, components: list[ComponentSpec]) -> None:
    """The check `update check` makes of carried evidence, made before it is shipped: its
    evidence.json parses, and names a golden set of this release by its digest."""
    from appliance.updates.evidence import EVIDENCE_FILE, MAX_EVIDENCE, check_evidence

    hint = (f"put {EVIDENCE_FILE} (see bundles/FORMAT.md) computed on a golden set this "
            "release carries, added first, named with its digest")
    path = evidence_dir / EVIDENCE_FILE
    if not path.is_file() or path.stat().st_size > MAX_EVIDENCE:
        raise InvalidInput(f"evidence {name} has no {EVIDENCE_FILE} of at most "
                           f"{MAX_EVIDENCE} bytes", hint)
    _, problem = check_evidence(path.read_bytes(), name, {
        c.name: c.custom["digest"] for c in components if c.kind == "golden_set"})
    if problem:
        raise InvalidInput(problem, hint)


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
    try:
        data = Path(trusted_root).read_bytes()
        comp.load_trusted_root(data, str(trusted_root))
    except OSError as exc:
        raise InvalidInput(f"cannot read {trusted_root}: {exc.strerror}",
                           "pass the sigstore trusted_root.json file") from None
    except BundleRefused as exc:
        raise InvalidInput(exc.message, "pass the trusted_root.json of the sigstore instance "
                           "that signed the keyless components") from None
    write_atomic(repo.release_targets / SIGSTORE_ROOT_TARGET, data)
    spec.trusted_root = True
    repo.save_release(spec)
    repo.drop_signatures()


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
        spec.description = one_line(description, "the description")
    repo.save_release(spec)
    repo.drop_signatures()


def _copy_tree(src: Path, dest: Path) -> dict[str, int]:
    """Copy a component's files into the release. Every name is checked before anything is
    copied, and a failure removes the copy: a file left under the release's targets would be
    published unsigned, and the importer refuses the whole bundle for it."""
    sources: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_symlink():
            raise InvalidInput(f"{shown(str(p))} is a symbolic link",
                               "bundles hold regular files only")
        if p.is_dir():
            continue
        if not p.is_file():
            raise InvalidInput(f"{shown(str(p))} is not a regular file",
                               "bundles hold regular files only")
        try:
            safe_relpath(rel, src.name)
        except BundleRefused as exc:
            raise InvalidInput(exc.message, "rename the file: the importer refuses it") from None
        if rel.casefold() in seen:
            raise InvalidInput(f"{shown(str(p))} differs from another file only by case",
                               "rename one of them: the importer refuses both")
        seen.add(rel.casefold())
        sources.append((rel, p))
    if not sources:
        raise InvalidInput(f"{shown(str(src))} holds no files",
                           "a component needs at least one file")
    if len(sources) > MAX_FILES:
        raise InvalidInput(f"{shown(str(src))} holds {len(sources)} files, more than "
                           f"{MAX_FILES}", "pack them into fewer files (shards)")
    if dest.exists():
        shutil.rmtree(dest)
    files: dict[str, int] = {}
    try:
        for rel, p in sources:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            files[rel] = target.stat().st_size
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInput(f"cannot copy {shown(str(exc.filename or src))}: "
                           f"{exc.strerror or exc}", "check the component's files and the "
                           "room left for the working repository; nothing was added") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return files
