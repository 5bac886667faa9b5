"""How many tasks a playbook runs per host, counted from its YAML before it starts.

Ansible announces tasks one at a time, so a progress bar needs a total from somewhere:
our playbooks are static (roles and imports, no dynamic includes), so counting the task
files gives the figure. Anything dynamic counts as one task and the total grows as the
run reports more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_BLOCK_KEYS = ("block", "rescue", "always")


def tasks_per_host(project_dir: Path, playbook: str) -> int:
    try:
        plays = yaml.safe_load((project_dir / playbook).read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError):
        return 0
    total = 0
    for play in plays if isinstance(plays, list) else []:
        if not isinstance(play, dict):
            continue
        if "import_playbook" in play:
            total += tasks_per_host(project_dir, str(play["import_playbook"]))
            continue
        if play.get("gather_facts", True) not in (False, "false", "no"):
            total += 1
        total += _count(play.get("pre_tasks"), project_dir)
        for role in play.get("roles") or []:
            name = role if isinstance(role, str) else (role or {}).get("role", "")
            total += _count_file(project_dir / "roles" / str(name) / "tasks" / "main.yml")
        total += _count(play.get("tasks"), project_dir)
        total += _count(play.get("post_tasks"), project_dir)
    return total


def _count_file(path: Path) -> int:
    try:
        return _count(yaml.safe_load(path.read_text(encoding="utf-8")), path.parent)
    except (OSError, yaml.YAMLError):
        return 0


def _count(tasks: Any, base: Path) -> int:
    n = 0
    for task in tasks if isinstance(tasks, list) else []:
        if not isinstance(task, dict):
            continue
        if any(k in task for k in _BLOCK_KEYS):
            # rescue runs only after a failure; the plan counts the path that succeeds
            n += _count(task.get("block"), base) + _count(task.get("always"), base)
            continue
        imported = task.get("import_tasks") or task.get("ansible.builtin.import_tasks")
        if isinstance(imported, str):
            n += _count_file(base / imported)
            continue
        n += 1
    return n
