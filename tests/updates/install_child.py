"""Runs one install in its own process (for tests that give it a tiny file system) and prints
one JSON line: the outcome or the refusal, and what is left on disk and in the records.

Usage: python install_child.py HOME REF GPU_READING [FILL_AT]

With FILL_AT (a `Hooks.point` label), a file beside HOME fills its file system at that point
(a real full disk under the database); once the install has failed the file is removed and
`update status` runs, and its recovery is reported too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from appliance.context import Appliance
from appliance.errors import ApplianceError
from appliance.hardware import RecordedSource
from appliance.services import auth, updates
from appliance.updates.install import Edges
from appliance.updates.lifecycle import find_bundle
from appliance.updates.recovery import consistency
from tests.conftest import ADMIN, PASSWORD


class FillAt:
    """The disk edge: at `label`, fill the file system that holds `filler`."""

    def __init__(self, label: str, filler: Path) -> None:
        self.label, self.filler = label, filler

    def point(self, label: str) -> None:
        if label != self.label:
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)


def main(home: str, ref: str, reading: str, fill_at: str | None = None) -> None:
    out: dict = {}
    filler = Path(home).parent / "filler"
    with Appliance.open(Path(home)) as app:
        session = auth.login(app, ADMIN, PASSWORD)
        edges = Edges(source=RecordedSource(Path(reading)))
        if fill_at:
            edges.hooks = FillAt(fill_at, filler)
        try:
            result = updates.install(app, session, ref, edges)
            out.update(ok=True, outcome=result.outcome, placement=result.placement)
        except ApplianceError as exc:
            out.update(ok=False, type=type(exc).__name__, error=exc.message, hint=exc.hint)
        if fill_at:
            out["current_at_failure"] = os.readlink(app.layout.releases / "current")
            filler.unlink()
            st = updates.status(app, session)
            out["status"] = {"resolved": st["recovery"]["resolved"],
                             "consistent": st["consistent"], "current": st["current"]}
        releases = app.layout.releases
        out["left"] = sorted(str(p.relative_to(releases)) for p in releases.rglob("*")
                             if p.name != ".install.lock")
        out["current"] = os.readlink(releases / "current") \
            if os.path.lexists(releases / "current") else None
        out["state"] = str(find_bundle(app.conn, ref).state)
        out["journal"] = app.conn.execute("SELECT outcome, open FROM install_journal ORDER BY "
                                          "id DESC LIMIT 1").fetchone()
        out["problems"] = consistency(app)
        out["undone"] = [json.loads(r[0])["reason"] for r in app.conn.execute(
            "SELECT body FROM audit_view WHERE action = 'update.install_undone'")]
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
