"""Builds real signed bundles for tests: tiny models made locally, real ECDSA keys, the same
publisher code the CLI runs (init-repo, add-component, sign, publish). No hub, no network.

Keys are generated once per test session (module cache); bundles are cheap to build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.bundle import keys as bkeys
from appliance.bundle import publish
from appliance.bundle.demo_bundle import (  # noqa: F401 (re-exported for tests)
    ENGINE,
    safetensors_bytes,
    tiny_adapter,
    tiny_base,
    tiny_engine,
    tiny_golden,
)
from appliance.errors import InvalidInput

# Bundles are "built" a few days before the test clock (2026-01-15) reads them.
BUILT = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

KEY_NAMES = ("root1", "root2", "root3", "targets", "online", "lora", "attacker", "p384")


@dataclass(frozen=True)
class Keys:
    dir: Path

    def private(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def public(self, name: str) -> bytes:
        return bkeys.public_path_for(self.private(name)).read_bytes()

    def keyid(self, name: str) -> str:
        return bkeys.keyid_of(bkeys.load_private(self.private(name)).public_key())


_KEYS: dict[str, Keys] = {}


def session_keys(base: Path) -> Keys:
    """One set of keys per test session, generated on first use."""
    if "keys" not in _KEYS:
        d = base / "keys"
        for name in KEY_NAMES:
            bkeys.generate(d / f"{name}.pem", "p384" if name == "p384" else "p256")
        _KEYS["keys"] = Keys(d)
    return _KEYS["keys"]



@dataclass
class Publisher:
    """A vendor's working repository plus the sources of its components."""

    keys: Keys
    repo: Path
    src: Path

    def add(self, kind: str, name: str, key: str = "targets", **kw) -> None:
        makers = {"base_model": tiny_base, "lora_adapter": tiny_adapter,
                  "golden_set": tiny_golden, "trtllm_engine": tiny_engine,
                  "evaluation_evidence": tiny_golden}
        d = self.src / name
        if not d.exists():
            makers[kind](d)
        if kind == "trtllm_engine":
            kw.setdefault("engine", ENGINE)
        publish.add_component(self.repo, kind, d, self.keys.private(key), name=name, **kw)

    def release(self, out: Path, signers: tuple[str, ...] = ("root1", "targets", "online"),
                now: datetime = BUILT) -> Path:
        if not (self.repo / "release" / "metadata").exists():
            publish.build(self.repo, now)
        for s in signers:
            try:
                publish.sign(self.repo, self.keys.private(s), now)
            except InvalidInput:
                pass    # a key with nothing to sign in this release (e.g. root unchanged)
        return publish.publish(self.repo, out)


def new_publisher(base: Path, keys: Keys, name: str = "demo-clinical", *,
                  root: tuple[str, ...] = ("root1",), root_threshold: int = 1,
                  lora: bool = True, expires_days: dict[str, int] | None = None) -> Publisher:
    repo = base / f"repo-{name}"
    if repo.exists():
        shutil.rmtree(repo)
    publish.init_repo(repo, name, "Demo Vendor", [keys.public(r) for r in root],
                      root_threshold=root_threshold, targets_keys=[keys.public("targets")],
                      online_keys=[keys.public("online")],
                      lora_keys=[keys.public("lora")] if lora else None,
                      expires_days=expires_days)
    return Publisher(keys, repo, base / f"src-{name}")


def full_release(pub: Publisher, out: Path, **kw) -> Path:
    """Base model, LoRA adapter on it, engine and golden set: one complete bundle."""
    pub.add("base_model", "tiny-base", tags=["cpu", "demo"])
    pub.add("lora_adapter", "tiny-adapter", base_model="tiny-base")
    pub.add("trtllm_engine", "tiny-engine-h100", tags=["h100"])
    pub.add("golden_set", "tiny-golden")
    return pub.release(out, **kw)


def copy_media(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
