"""The bundle format's own documents, parsed strictly: the `custom` field of a component's
signature target and the bundle description (`bundle.json`).

Both arrive inside TUF-verified bytes, but a publisher's mistake (or a compromised publisher
key) must still end in a clean refusal, never in a KeyError deep in the importer. The JSON
Schemas in bundles/schema/ describe the same rules for vendors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.errors import BundleRefused
from appliance.text import unsafe_character

SCHEMA_VERSION = 1

KINDS = ("base_model", "lora_adapter", "trtllm_engine", "golden_set", "evaluation_evidence")

TOP_ROLES = ("root", "timestamp", "snapshot", "targets")
LORA_ROLE = "appliance-lora"
# Which delegated role may list which component kinds; "targets" is the vendor.
ROLE_KINDS: dict[str, frozenset[str]] = {
    "targets": frozenset(KINDS),
    LORA_ROLE: frozenset({"lora_adapter"}),
}
# Where each role's targets live on media (relative to targets/).
ROLE_PREFIX = {"targets": "components", LORA_ROLE: "lora"}
LORA_PATHS = ["lora/*", "lora/*/*"]

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
DESCRIPTION_TARGETS = ("bundle.json", "lora/bundle.json")
SIGSTORE_ROOT_TARGET = "sigstore/trusted_root.json"

# Size limits for everything read before payload: a hostile stick cannot make the
# importer read a gigabyte of "metadata".
MAX_ROOT = 64 * 1024
MAX_TIMESTAMP = 16 * 1024
MAX_SNAPSHOT = 256 * 1024
MAX_TARGETS = 1024 * 1024
MAX_DESCRIPTION = 64 * 1024
MAX_SIGNATURE = 4 * 1024 * 1024
MAX_TRUSTED_ROOT = 256 * 1024
MAX_COMPONENTS = 64
MAX_FILES = 10_000

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,31}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GPU_ARCH_RE = re.compile(r"^sm_[0-9]{2,3}[a-z]?$")


def refuse(message: str) -> BundleRefused:
    return BundleRefused(message)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise refuse(f"{what} is not a JSON object")
    return value


def _only(d: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise refuse(f"{what} has unknown field {extra[0]!r}")


def _str(d: dict[str, Any], key: str, what: str, pattern: re.Pattern[str] | None = None,
         max_len: int = 200) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise refuse(f"{what}: {key!r} must be a non-empty string")
    if pattern is not None and not pattern.match(v):
        raise refuse(f"{what}: {key!r} has an invalid value {v[:80]!r}")
    return v


def _int(d: dict[str, Any], key: str, what: str, minimum: int = 0) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise refuse(f"{what}: {key!r} must be an integer >= {minimum}")
    return v


def _schema_version(d: dict[str, Any], what: str) -> None:
    v = d.get("schema_version")
    if v != SCHEMA_VERSION:
        raise refuse(f"{what} has unknown schema version {v!r} (this appliance reads "
                     f"{SCHEMA_VERSION})")


@dataclass(frozen=True)
class BaseModelRef:
    """The base model a LoRA adapter was trained on: its name and model-signing digest."""

    name: str
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest}


@dataclass(frozen=True)
class EngineSpec:
    """What a TensorRT-LLM engine was built for; hardware selection matches on it."""

    gpu_archs: tuple[str, ...]
    trtllm_version: str
    tp: int
    pp: int
    min_gpu_memory_mib: int

    def to_dict(self) -> dict[str, Any]:
        return {"gpu_archs": list(self.gpu_archs), "trtllm_version": self.trtllm_version,
                "tp": self.tp, "pp": self.pp, "min_gpu_memory_mib": self.min_gpu_memory_mib}


@dataclass(frozen=True)
class Signer:
    """How a component's model signature was made.

    `key`: with a key the TUF metadata names for the role that lists the component (keyid).
    `sigstore`: keyless, checked against the trusted_root.json target and this identity.
    """

    method: str
    keyid: str = ""
    identity: str = ""
    issuer: str = ""

    def to_dict(self) -> dict[str, Any]:
        if self.method == "key":
            return {"method": "key", "keyid": self.keyid}
        return {"method": "sigstore", "identity": self.identity, "issuer": self.issuer}


@dataclass(frozen=True)
class ComponentInfo:
    """The `custom` field of a component's signature target: what the component is."""

    name: str
    kind: str
    payload: str              # directory under targets/ holding the files
    size: int                 # total bytes of all files
    files: int                # number of files
    digest: str               # model-signing subject digest (over every file digest)
    signer: Signer
    tags: tuple[str, ...] = ()
    base_model: BaseModelRef | None = None
    engine: EngineSpec | None = None

    def to_custom(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "kind": self.kind, "name": self.name,
            "payload": self.payload, "size": self.size, "files": self.files,
            "digest": self.digest, "signer": self.signer.to_dict(), "tags": list(self.tags),
        }
        if self.base_model is not None:
            d["base_model"] = self.base_model.to_dict()
        if self.engine is not None:
            d["engine"] = self.engine.to_dict()
        return d

    @classmethod
    def from_custom(cls, raw: Any, target: str) -> ComponentInfo:
        what = f"component {target}"
        d = _obj(raw, f"{what} custom field")
        _schema_version(d, what)
        _only(d, {"schema_version", "kind", "name", "payload", "size", "files", "digest",
                  "signer", "tags", "base_model", "engine"}, what)
        kind = d.get("kind")
        if kind not in KINDS:
            raise refuse(f"{what} has unknown kind {kind!r}")
        name = _str(d, "name", what, NAME_RE)
        payload = _str(d, "payload", what)
        expected_payload = target[: -len(".sig")] if target.endswith(".sig") else None
        if payload != expected_payload:
            raise refuse(f"{what}: payload directory {payload!r} does not match its signature "
                         f"target")
        tags = d.get("tags", [])
        if not isinstance(tags, list) or len(tags) > 32 or not all(
                isinstance(t, str) and TAG_RE.match(t) for t in tags):
            raise refuse(f"{what}: tags must be a list of short lowercase tags")
        s = _obj(d.get("signer"), f"{what} signer")
        method = s.get("method")
        if method == "key":
            _only(s, {"method", "keyid"}, f"{what} signer")
            signer = Signer("key", keyid=_str(s, "keyid", f"{what} signer", SHA256_RE))
        elif method == "sigstore":
            _only(s, {"method", "identity", "issuer"}, f"{what} signer")
            signer = Signer("sigstore", identity=_str(s, "identity", f"{what} signer"),
                            issuer=_str(s, "issuer", f"{what} signer"))
        else:
            raise refuse(f"{what} has unknown signing method {method!r}")
        base = None
        if kind == "lora_adapter":
            b = _obj(d.get("base_model"), f"{what} base_model")
            _only(b, {"name", "digest"}, f"{what} base_model")
            base = BaseModelRef(_str(b, "name", what, NAME_RE),
                                _str(b, "digest", what, SHA256_RE))
        elif "base_model" in d:
            raise refuse(f"{what}: only a lora_adapter names a base model")
        engine = None
        if kind == "trtllm_engine":
            e = _obj(d.get("engine"), f"{what} engine")
            _only(e, {"gpu_archs", "trtllm_version", "tp", "pp", "min_gpu_memory_mib"},
                  f"{what} engine")
            archs = e.get("gpu_archs")
            if not isinstance(archs, list) or not archs or not all(
                    isinstance(a, str) and GPU_ARCH_RE.match(a) for a in archs):
                raise refuse(f"{what}: gpu_archs must list architectures like 'sm_90'")
            engine = EngineSpec(tuple(archs), _str(e, "trtllm_version", what),
                                _int(e, "tp", what, 1), _int(e, "pp", what, 1),
                                _int(e, "min_gpu_memory_mib", what, 1))
        elif "engine" in d:
            raise refuse(f"{what}: only a trtllm_engine carries an engine section")
        return cls(name=name, kind=kind, payload=payload, size=_int(d, "size", what),
                   files=_int(d, "files", what, 1), digest=_str(d, "digest", what, SHA256_RE),
                   signer=signer, tags=tuple(tags), base_model=base, engine=engine)


@dataclass(frozen=True)
class ComponentRef:
    target: str      # the signature target path, e.g. components/tiny-base.sig
    sha256: str      # its digest, so the description's digest binds every component


@dataclass(frozen=True)
class BundleDescription:
    """`bundle.json`: one release's name, version, publisher and component list."""

    name: str
    version: int
    publisher: str
    created: str
    components: tuple[ComponentRef, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "name": self.name, "version": self.version,
                "publisher": self.publisher, "created": self.created,
                "description": self.description,
                "components": [{"target": c.target, "sha256": c.sha256}
                               for c in self.components]}

    @classmethod
    def from_dict(cls, raw: Any) -> BundleDescription:
        what = "bundle description"
        d = _obj(raw, what)
        _schema_version(d, what)
        _only(d, {"schema_version", "name", "version", "publisher", "created", "description",
                  "components"}, what)
        comps = d.get("components")
        if not isinstance(comps, list) or not comps or len(comps) > MAX_COMPONENTS:
            raise refuse(f"{what}: components must list 1 to {MAX_COMPONENTS} components")
        refs = []
        for c in comps:
            c = _obj(c, f"{what} component")
            _only(c, {"target", "sha256"}, f"{what} component")
            refs.append(ComponentRef(_str(c, "target", what), _str(c, "sha256", what,
                                                                   SHA256_RE)))
        if len({r.target for r in refs}) != len(refs):
            raise refuse(f"{what} lists a component twice")
        desc = d.get("description", "")
        if not isinstance(desc, str) or len(desc) > 2000:
            raise refuse(f"{what}: description must be a string of at most 2000 characters")
        publisher, created = _str(d, "publisher", what), _str(d, "created", what)
        # Shown in listings and kept in the audit trail: a newline could forge a line there.
        for key, value in (("publisher", publisher), ("created", created),
                           ("description", desc)):
            found = unsafe_character(value)
            if found:
                raise refuse(f"{what}: {key!r} contains a control character or line "
                             f"separator ('{found}')")
        return cls(name=_str(d, "name", what, NAME_RE), version=_int(d, "version", what, 1),
                   publisher=publisher, created=created, components=tuple(refs),
                   description=desc)


def safe_relpath(path: str, what: str) -> str:
    """A relative POSIX path that cannot leave its directory or alias another file."""
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in path.split("/")) or len(path) > 1024):
        raise refuse(f"{what}: unsafe path {path[:120]!r}")
    if any(ord(ch) < 32 for ch in path):
        raise refuse(f"{what}: control character in path {path[:120]!r}")
    return path
