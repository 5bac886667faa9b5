"""Tools for crafting hostile media from a valid bundle: re-sign metadata after a change (as
an attacker holding some key would), forge model signatures, swap files between releases.

Everything uses the real formats and real keys; nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, TargetFile

from appliance.bundle import keys as bkeys
from appliance.bundle import publish
from appliance.bundle.components import sign_component
from appliance.bundle.repo import Repo
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.errors import InvalidInput
from tests.bundle.bundlekit import BUILT, Keys, Publisher

SIGNERS = ("root1", "root2", "targets", "online", "lora")


def meta(media: Path, role: str) -> Path:
    return media / "metadata" / f"{role}.json"


def resign(media: Path, role: str, keys: Keys, signers: tuple[str, ...],
           mutate: Callable[[Any], None] | None = None, file: str | None = None) -> None:
    """Change a metadata file's signed part and sign it again with `signers` only."""
    path = media / "metadata" / (file or f"{role}.json")
    md = Metadata.from_bytes(path.read_bytes())
    if mutate is not None:
        mutate(md.signed)
    md.signatures.clear()
    for s in signers:
        md.sign(bkeys.tuf_signer(bkeys.load_private(keys.private(s))), append=True)
    path.write_bytes(md.to_bytes(publish.SERIALIZER))


def set_target(media: Path, role: str, target: str, data: bytes, keys: Keys,
               signer: str = "targets", custom: Callable[[dict], None] | None = None) -> None:
    """Replace a target's bytes on media and list the new hash in re-signed metadata."""
    (media / "targets" / target).parent.mkdir(parents=True, exist_ok=True)
    (media / "targets" / target).write_bytes(data)

    def mutate(signed: Any) -> None:
        old = signed.targets.get(target)
        tf = TargetFile.from_data(target, data, ["sha256"])
        if old is not None and "custom" in old.unrecognized_fields:
            tf.unrecognized_fields["custom"] = json.loads(json.dumps(old.custom))
        if custom is not None:
            c = tf.unrecognized_fields.setdefault("custom", {})
            custom(c)
        signed.targets[target] = tf

    resign(media, role, keys, (signer,), mutate)


def set_description(media: Path, keys: Keys, change: Callable[[dict], None]) -> None:
    desc = json.loads((media / "targets" / "bundle.json").read_bytes())
    change(desc)
    set_target(media, "targets", "bundle.json", json.dumps(desc).encode(), keys)


def set_custom(media: Path, target: str, keys: Keys, change: Callable[[dict], None],
               role: str = "targets", signer: str = "targets") -> None:
    def mutate(signed: Any) -> None:
        change(signed.targets[target].unrecognized_fields["custom"])
    resign(media, role, keys, (signer,), mutate)


def forge_statement(sig: bytes, change: Callable[[dict], None]) -> bytes:
    """Edit the signed statement inside a model signature without re-signing it."""
    bundle = json.loads(sig)
    env = bundle["dsseEnvelope"]
    st = json.loads(base64.b64decode(env["payload"]))
    change(st)
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    return json.dumps(bundle).encode()


def resign_component(media: Path, name: str, keys: Keys, key: str, files: dict[str, bytes],
                     tmp: Path) -> bytes:
    """A new, validly made model signature over `files` with `key` (any key)."""
    d = tmp / "forged" / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return sign_component(d, keys.private(key))


def force_publish(pub: Publisher, out: Path, signers: tuple[str, ...]) -> Path:
    """Publish what was signed even if thresholds are not met (an attacker's publisher)."""
    publish.build(pub.repo, BUILT)
    for s in signers:
        try:
            publish.sign(pub.repo, pub.keys.private(s), BUILT)
        except InvalidInput:
            pass    # this key may sign nothing here
    repo = Repo(pub.repo)
    for rel, src in publish._release_files(repo).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
    return out


@dataclass
class Snapshot:
    """What must not change when media is refused."""

    trust: list[tuple]
    bundles: list[tuple]
    objects: list[str]
    tmp: list[str] = field(default_factory=list)

    @classmethod
    def take(cls, app: Appliance) -> Snapshot:
        store = ContentStore(app.layout.store)
        objs = sorted(p.name for p in store.objects.glob("*/*")) if store.objects.exists() \
            else []
        tmp = sorted(p.name for p in store.tmp.iterdir()) if store.tmp.exists() else []
        return cls(app.conn.execute("SELECT role, version, sha256 FROM trust_metadata "
                                    "ORDER BY role, version").fetchall(),
                   app.conn.execute("SELECT id, digest, state FROM bundles").fetchall(),
                   objs, tmp)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
