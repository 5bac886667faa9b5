"""The pure parts: event tracking and throttling, the task plan, redaction."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.provision.events import EventTracker, failure_message
from appliance.provision.patterns import selected
from appliance.provision.plan import tasks_per_host
from appliance.provision.redaction import redact, scrub_tree, secret_values

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def _ev(counter: int, event: str, host: str = "h1", **data) -> dict:
    return {"counter": counter, "event": event,
            "event_data": {"host": host, "task": f"t{counter}", "role": "runtime", **data}}


def test_tracker_counts_progress_and_returns_true_for_every_event() -> None:
    batches: list[list] = []
    tr = EventTracker(["h1", "h2"], 3, batches.append, throttle_s=3600)
    raw = [
        _ev(1, "runner_on_start"),
        _ev(2, "runner_on_ok", res={"changed": True}),
        _ev(3, "runner_on_ok", host="h2", res={"changed": False}),
        _ev(4, "runner_on_failed", host="h2", res={"msg": "disk\n  full"}),
        _ev(5, "runner_on_skipped", res={"skip_reason": "Conditional result was False"}),
        _ev(6, "runner_on_failed", res={"msg": "ignored"}, ignore_errors=True),
        {"counter": 7, "event": "weird", "event_data": None},
    ]
    assert all(tr.handle(r) is True for r in raw)
    assert len(batches) == 1  # first event flushed at once, the rest wait for the throttle
    tr.flush()
    events = [e for b in batches for e in b]
    assert [e.kind for e in events] == ["started", "changed", "ok", "failed", "skipped", "ok"]
    counts = tr.host_counts()
    assert counts["h1"] == {"ok": 1, "changed": 1, "failed": 0, "skipped": 1,
                            "unreachable": 0, "changed_by_role": {"runtime": 1}}
    assert counts["h2"]["failed"] == 1
    # h2 stopped after 2 results, h1 still has its 3 planned: 5 known, 5 done.
    assert (events[-1].done, events[-1].total) == (5, 5)
    assert tr.failures[0].line() == "h2: runtime : t4: disk full"


def test_throttle_delivers_at_most_every_interval() -> None:
    batches: list[list] = []
    tr = EventTracker(["h1"], 100, batches.append, throttle_s=0.05)
    for i in range(200):
        tr.handle(_ev(i, "runner_on_ok", res={}))
    time.sleep(0.06)
    tr.handle(_ev(200, "runner_on_ok", res={}))
    tr.flush()
    assert sum(len(b) for b in batches) == 201
    assert len(batches) <= 4


def test_failure_message_prefers_msg_and_looks_into_loop_items() -> None:
    assert failure_message({"msg": "boom", "stderr": "x"}) == "boom"
    assert failure_message({"stderr": "  trace  "}) == "trace"
    assert failure_message({"msg": "One or more items failed",
                            "results": [{"failed": False}, {"failed": True, "msg": "item 2"}]}
                           ) == "item 2"


def test_plan_counts_the_roles_tasks() -> None:
    n = tasks_per_host(PLAYBOOKS, "site.yml")
    # facts + every task in the five roles' tasks/main.yml (blocks expanded); the exact
    # figure is checked against a real run in test_site_localhost
    assert 25 <= n <= 60
    assert tasks_per_host(PLAYBOOKS, "update.yml") < n
    assert tasks_per_host(PLAYBOOKS, "missing.yml") == 0


def test_redaction_by_name_at_any_depth(tmp_path: Path) -> None:
    data = {"db_password": "pw-1234", "nested": {"api_token": "tok-9876", "keep": "ok"},
            "ssh_private_key_file": "/keys/id", "items": [{"secret": "s-5555"}]}
    assert redact(data) == {"db_password": "[redacted]",
                            "nested": {"api_token": "[redacted]", "keep": "ok"},
                            "ssh_private_key_file": "/keys/id",
                            "items": [{"secret": "[redacted]"}]}
    secrets = secret_values(data)
    assert secrets == {"pw-1234", "tok-9876", "s-5555"}
    f = tmp_path / "out.json"
    f.write_text('{"msg": "pw-1234 and tok-9876"}')
    assert scrub_tree(tmp_path, secrets) == 1
    assert f.read_text() == '{"msg": "[redacted] and [redacted]"}'


def test_everything_inside_a_secret_named_value_is_secret() -> None:
    """`redact` hides the whole dict or list, so its inner values must be scrubbed too."""
    data = {"api_token": {"value": "tok-inner-1", "meta": [{"id": "id-inner-2"}]},
            "db_password": ["pw-list-3", {"note": "note-inner-4"}], "keep": {"v": "ok-5"}}
    assert redact(data) == {"api_token": "[redacted]", "db_password": "[redacted]",
                            "keep": {"v": "ok-5"}}
    assert secret_values(data) == {"tok-inner-1", "id-inner-2", "pw-list-3", "note-inner-4"}


def test_an_artifact_page_past_its_end_is_empty(tmp_path: Path) -> None:
    """`provision artifacts RUN NAME --offset` beyond the file, up to 2^63 and past it,
    was an OSError or OverflowError traceback from seek."""
    from appliance.provision.artifacts import read_page

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "extravars").write_text('{"a": 1}')
    for offset in (8, 9, 2**63 - 1, 10**23):
        page = read_page(tmp_path, "env/extravars", offset)
        assert page is not None and (page.offset, page.text, page.next_offset) == (8, "", None)
    assert read_page(tmp_path, "env/extravars", -5).text == '{"a": 1}'


_HOSTS = ("localhost", "gpu-1", "gpu-2", "node.a")
_ANSIBLE_SUBSET = """
import json, sys
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
inv = InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
out = {}
for limit in json.loads(sys.argv[2]):
    inv.subset(limit)
    inv.clear_pattern_cache()
    out[limit] = [h.name for h in inv.get_hosts("all")]
print(json.dumps(out))
"""


def test_a_limit_selects_the_hosts_ansible_selects(tmp_path: Path) -> None:
    """The run's summary names the hosts its limit selects: read as Ansible reads it (term
    order, globs over group names, `host:port`), checked against Ansible's own inventory."""
    limits = ["localhost", "gpu-*", "!gpu-*", "all,!gpu-*,localhost", "gpu-*,&*-2",
              "!localhost:gpu-1", "a*", "ungr*,!node.a", "gpu-1,gpu-9", "node.*",
              "gpu-1:22", "localhost,gpu-2:x", "&gpu-1", "GPU-1", "gpu-?,!gpu-1", "*"]
    hosts_yml = tmp_path / "hosts.yml"
    hosts_yml.write_text(json.dumps({"all": {"hosts": {h: {} for h in _HOSTS}}}))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path), "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore"}
    out = subprocess.run([sys.executable, "-c", _ANSIBLE_SUBSET, str(hosts_yml),
                          json.dumps(limits)], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout
    ansible = {k: sorted(v) for k, v in json.loads(out).items()}
    ours = {limit: sorted(selected(limit, _HOSTS)) for limit in limits}
    assert ours == ansible
    assert ours["all,!gpu-*,localhost"] == ["localhost", "node.a"]
    assert selected(None, _HOSTS) == _HOSTS
