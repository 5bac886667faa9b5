"""The core is headless: importing every `appliance` module never loads Textual or `tui`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import appliance

PROBE = """
import importlib, json, pkgutil, sys
import appliance
names = [m.name for m in pkgutil.walk_packages(appliance.__path__, "appliance.")
         if not m.name.endswith(".__main__")]  # runs the CLI when imported
for name in names:
    importlib.import_module(name)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("textual", "tui"))
print(json.dumps({"modules": len(names), "loaded": loaded}))
"""


def test_importing_every_appliance_module_never_imports_textual():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["modules"] > 20
    assert result["loaded"] == []


def test_no_appliance_source_mentions_textual_imports():
    """Catches lazy imports inside functions too, which the probe above cannot run."""
    pattern = re.compile(r"^\s*(from|import)\s+textual\b", re.M)
    root = Path(appliance.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
