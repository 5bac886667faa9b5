"""Random mutations of valid metadata, descriptions and model signatures: verification only
ever ends in a clean refusal (BundleRefused, one line) or a clean success; never another
exception, never a success that lets a changed component through."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.bundle.media import open_media
from appliance.bundle.trust import TrustState
from appliance.bundle.verify import verify_media
from appliance.errors import BundleRefused
from tests.bundle.bundlekit import BUILT, full_release, new_publisher, session_keys
from tests.bundle.hostile import set_custom, set_target


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, TrustState, dict]:
    """One valid published bundle, the trust it needs, and its components' signed digests."""
    base = tmp_path_factory.mktemp("fuzz")
    keys = session_keys(tmp_path_factory.getbasetemp())
    pub = new_publisher(base, keys)
    media = full_release(pub, base / "usb", signers=("root1", "targets", "online"))
    trusted = TrustState((media / "metadata" / "1.root.json").read_bytes(), {})
    good = verify_media(trusted, open_media(media), BUILT + timedelta(days=5), lambda d: False)
    return media, trusted, {c.info.name: c.info.digest for c in good.components}


MUTABLE = ["metadata/root.json", "metadata/1.root.json", "metadata/timestamp.json",
           "metadata/snapshot.json", "metadata/targets.json", "targets/bundle.json",
           "targets/components/tiny-base.sig", "targets/components/tiny-adapter.sig",
           "custom:components/tiny-adapter.sig", "custom:components/tiny-engine-h100.sig"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.text(max_size=20) | st.sampled_from(["", "0" * 64, "../x", "sm_90", "lora_adapter"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, str, bool, Any]:
    target = draw(st.sampled_from(MUTABLE))
    kind = draw(st.sampled_from(["json-set", "json-delete"] if target.startswith("custom:")
                                else ["flip", "truncate", "json-set", "json-delete"]))
    # Re-signed: the change is then signed by the vendor's own targets key (a publisher
    # bug or a stolen key), so the parsers behind the signature checks are reached too.
    resigned = target.startswith("custom:") or (target.startswith("targets/")
                                                and draw(st.booleans()))
    return target, kind, resigned, draw(st.data())


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_mutated_media_is_refused_or_verified_cleanly(valid, mutation) -> None:
    target, kind, resigned, data = mutation
    media, trusted, digests = valid
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        m = shutil.copytree(media, Path(tmp) / "m")
        keys = session_keys(Path(tmp))
        if target.startswith("custom:"):
            # The signed `custom` field of a component, changed and re-signed.
            def change(custom: dict) -> None:
                path = data.draw(st.sampled_from(_paths(custom)[1:]))
                _set(custom, path, data.draw(json_values), kind == "json-delete")
            set_custom(m, target[len("custom:"):], keys, change)
            target, resigned = "metadata/targets.json", False
            raw = (m / target).read_bytes()
            kind = "as-is"
        p = m / target
        raw = p.read_bytes()
        if kind == "as-is":
            pass
        elif kind == "flip":
            i = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
        elif kind == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        else:
            doc = json.loads(raw)
            paths = _paths(doc)
            path = data.draw(st.sampled_from(paths[1:] if kind == "json-delete" else paths))
            doc = _set(doc, path, data.draw(json_values), kind == "json-delete")
            raw = json.dumps(doc).encode()
        if resigned:
            set_target(m, "targets", target[len("targets/"):], raw, keys)
        else:
            p.write_bytes(raw)
        try:
            result = verify_media(trusted, open_media(m), BUILT + timedelta(days=5),
                                  lambda d: False, scratch=Path(tmp))
        except BundleRefused as exc:
            assert exc.message and "\n" not in exc.message
            return
        # A success may only happen where the change did not touch anything that matters:
        # the components are still exactly those whose files the vendor's key signed.
        assert sorted(c.info.digest for c in result.components) == sorted(digests.values())
