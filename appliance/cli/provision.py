"""`appliance provision ...`: run or check playbooks, follow them, browse runs, inventory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    ReasonOpt,
    UserOpt,
    console,
    emit,
    login,
    open_app,
)
from appliance.errors import InvalidInput
from appliance.text import shown

app = typer.Typer(help="Provision servers with the appliance's Ansible playbooks.",
                  no_args_is_help=True)
inventory_app = typer.Typer(help="The hosts provisioning reaches.", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")

VarOpt = Annotated[list[str] | None, typer.Option(
    "--var", "-e", help="Extra variable NAME=VALUE (VALUE may be JSON). Repeatable.")]
VarsFileOpt = Annotated[Path | None, typer.Option(
    "--vars-file", help="YAML or JSON file of extra variables.")]
InventoryOpt = Annotated[str, typer.Option(
    "--inventory", "-i", help="local (this server) or cluster (every inventory host).")]
LimitOpt = Annotated[str | None, typer.Option("--limit", help="Only these hosts (pattern).")]
TimeoutOpt = Annotated[int, typer.Option("--timeout", help="Stop the run after SECONDS.")]


def _why_unreadable(exc: Exception) -> str:
    """One line: YAML's own messages span several, with a caret drawing."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return exc.strerror if isinstance(exc, OSError) else " ".join(str(exc).split())


MAX_VARS_FILE = 1024 * 1024  # bytes: variables, not data


def _load_vars_yaml(text: str) -> Any:
    """YAML without aliases: `*name` repeats a node by reference, so a few lines of nested
    aliases (a "billion laughs") expand to more than memory holds once copied as JSON."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: ANN001, ANN202 - PyYAML's signature
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed", self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader


def parse_vars(items: list[str] | None, vars_file: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hint = "pass a YAML or JSON file of NAME: VALUE"
    if vars_file is not None:
        import yaml
        try:
            with vars_file.open("rb") as fh:  # bounded: /dev/zero or a disk image never ends
                raw = fh.read(MAX_VARS_FILE + 1)
            if len(raw) > MAX_VARS_FILE:
                raise InvalidInput(f"variables file {vars_file} is larger than "
                                   f"{MAX_VARS_FILE} bytes", hint)
            loaded = _load_vars_yaml(raw.decode("utf-8")) or {}
        except RecursionError as exc:
            raise InvalidInput(f"cannot read variables file {vars_file}: nested too deeply",
                               hint) from exc
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            why = _why_unreadable(exc)
            raise InvalidInput(f"cannot read variables file {vars_file}: {why}",
                               hint) from exc
        if not isinstance(loaded, dict):
            raise InvalidInput(f"{vars_file} must hold a mapping of NAME: VALUE")
        out.update(loaded)
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"bad variable {item!r}", "use NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except RecursionError as exc:
            raise InvalidInput(f"variable {name!r} is nested too deeply",
                               "pass a flatter value") from exc
        except ValueError:
            out[name] = raw
    return out


def _print_events(batch) -> None:
    for e in batch:
        if e.kind in ("started",):
            continue
        if e.kind == "play":
            console.print(f"PLAY {e.task}", markup=False)
            continue
        where = f"{e.role} : {e.task}" if e.role else e.task
        console.print(f"[{e.done}/{e.total}] {e.kind:<11} {e.host}  {where}", markup=False)
        if e.kind in ("failed", "unreachable"):
            console.print(f"    {shown(e.message)}", markup=False)  # a host's own words


def _summary(rec) -> str:
    """Plain text: `emit` prints it as is (never markup), so [brackets] need no escape."""
    lines = [f"{rec.mode} {rec.playbook} on {rec.inventory} ({', '.join(rec.targets)}): "
             f"{rec.status} in {rec.duration_s or 0:.1f} s  (run {rec.id})"]
    for host, c in sorted(rec.hosts.items()):
        lines.append(f"  {host:<20} ok={c['ok']} changed={c['changed']} failed={c['failed']} "
                     f"skipped={c['skipped']} unreachable={c['unreachable']}")
    if rec.failure:
        lines.append(f"  failure: {rec.failure}")
    return "\n".join(shown(line) for line in lines)


def _run(ctx: typer.Context, playbook: str, check: bool, inventory: str, limit: str | None,
         var: list[str] | None, vars_file: Path | None, timeout: int, user: str | None,
         password_stdin: bool, as_json: bool) -> None:
    from appliance.errors import ApplianceError, ProvisionFailed
    from appliance.services import provision

    extra = parse_vars(var, vars_file)
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        request = provision.RunRequest(playbook, inventory, check, extra, limit, timeout)
        handle = provision.start(appl, session, request, None if as_json else _print_events)
        unrecorded: ApplianceError | None = None
        try:
            while not handle.join(0.5):
                pass
        except KeyboardInterrupt:
            # Through the handle, not the session: a run may outlast the idle limit, and
            # the one who started it must still be able to stop it.
            try:
                provision.cancel_started(appl, handle, "interrupted at the terminal")
            except ApplianceError as exc:  # the run is stopped all the same
                unrecorded = exc
        rec = handle.wait()
    emit(rec.to_dict(), as_json, _summary(rec))
    if unrecorded is not None:
        raise ProvisionFailed(f"{rec.mode} {rec.playbook} {rec.status}; the cancel was not "
                              f"recorded: {unrecorded.message}",
                              f"see `appliance provision show {rec.id}`")
    if rec.status != "successful":
        raise ProvisionFailed(f"{rec.mode} {rec.playbook} {rec.status}: "
                              f"{rec.failure or 'no task failed'}",
                              f"see `appliance provision show {rec.id}`")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    playbook: Annotated[str, typer.Argument(help="site.yml, update.yml or verify.yml")],
    check: Annotated[bool, typer.Option("--check", help="Show what would change.")] = False,
    inventory: InventoryOpt = "cluster",
    limit: LimitOpt = None,
    var: VarOpt = None,
    vars_file: VarsFileOpt = None,
    timeout: TimeoutOpt = 3600,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a playbook on the inventory and follow it task by task."""
    _run(ctx, playbook, check, inventory, limit, var, vars_file, timeout, user,
         password_stdin, as_json)


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    playbook: Annotated[str, typer.Argument(help="site.yml, update.yml or verify.yml")],
    inventory: InventoryOpt = "cluster",
    limit: LimitOpt = None,
    var: VarOpt = None,
    vars_file: VarsFileOpt = None,
    timeout: TimeoutOpt = 3600,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what a playbook would change (check mode with diffs); changes nothing."""
    _run(ctx, playbook, True, inventory, limit, var, vars_file, timeout, user,
         password_stdin, as_json)


@app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id (see `appliance provision runs`).")],
    reason: ReasonOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop a running playbook and every process it started."""
    from appliance.services import provision

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        rec = provision.cancel(appl, session, run_id, reason)
    emit({"run": rec.id, "cancel_requested": True}, as_json,
         f"Cancel requested for run {rec.id}")


@app.command("runs")
def runs_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 20,
    before: Annotated[str | None, typer.Option("--before", help="Page: older than RUN.")
                      ] = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The history of provisioning runs."""
    from appliance.services import provision

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        runs = provision.list_runs(appl, session, limit, before)
    lines = [f"{r.id}  {r.started_at}  {r.started_by:<10} {r.mode:<5} {r.playbook:<11} "
             f"{r.inventory:<7} {r.status}" + (f"  {r.failure}" if r.failure else "")
             for r in runs]
    emit([r.to_dict() for r in runs], as_json, "\n".join(lines) or "No runs yet.")


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    events: Annotated[bool, typer.Option("--events", help="List every task result.")
                      ] = False,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """One run: per-host results, its failure, optionally every task event."""
    from appliance.services import provision

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        rec = provision.get_run(appl, session, run_id)
        evs = provision.run_events(appl, session, run_id) if events else []
    data = rec.to_dict()
    text = _summary(rec)
    if events:
        data["events"] = [e.to_dict() for e in evs]
        for e in evs:
            if e.kind in ("started", "play"):
                continue
            text += "\n" + shown(f"  {e.kind:<11} {e.host}  "
                                 f"{e.role + ' : ' if e.role else ''}{e.task}")
            if e.kind in ("failed", "unreachable"):
                text += "\n      " + shown(e.message)  # a host's own words
    emit(data, as_json, text)


@app.command("artifacts")
def artifacts_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    name: Annotated[str | None, typer.Argument(help="Artifact to print (default: list).")
                    ] = None,
    offset: Annotated[int, typer.Option("--offset", help="Start at this byte.")] = 0,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List a run's stored artifacts, or print one (a page at a time)."""
    from appliance.services import provision

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        if name is None:
            items = provision.list_artifacts(appl, session, run_id)
            emit([vars(a) for a in items], as_json,
                 "\n".join(f"{a.size:>10}  {a.name}" for a in items))
            return
        chunk = provision.read_artifact(appl, session, run_id, name, offset)
    emit(vars(chunk), as_json, chunk.text + (
        f"\n-- more: --offset {chunk.next_offset}" if chunk.next_offset else ""))


@app.command("playbooks")
def playbooks_cmd(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The installed playbooks."""
    from appliance.services import provision

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        names = provision.list_playbooks(appl, session)
    emit(names, as_json, "\n".join(names))


@inventory_app.command("list")
def inventory_list_cmd(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Every host, localhost first."""
    from appliance.services import provision_inventory

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        hosts = provision_inventory.list_hosts(appl, session)
    lines = [f"{h.name:<20} {h.connection:<5} "
             + (f"{h.user}@{h.address}:{h.port}" if h.connection == "ssh" else "local")
             + f"  root={h.appliance_root}  python={h.python}"
             + "".join(f"\n    {fp}" for fp in h.fingerprints()) for h in hosts]
    emit([h.to_dict() for h in hosts], as_json, "\n".join(lines))


@inventory_app.command("add")
def inventory_add_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Host name as runs report it.")],
    address: Annotated[str | None, typer.Option(
        "--address", help="IP or DNS name (default: NAME).")] = None,
    port: Annotated[int, typer.Option("--port", help="SSH port.")] = 22,
    ssh_user: Annotated[str, typer.Option("--ssh-user", help="SSH login on the host.")
                        ] = "root",
    key: Annotated[Path | None, typer.Option(
        "--key", help="SSH private key from the media (copied into the appliance).")] = None,
    host_key_file: Annotated[Path | None, typer.Option(
        "--host-key-file", help="The host's public host key (known_hosts or .pub); "
        "without it the key is scanned once and its fingerprint shown.")] = None,
    root: Annotated[str, typer.Option("--root", help="appliance_root on that host.")] = "/",
    python: Annotated[str, typer.Option("--python", help="Python on that host.")
                      ] = "/usr/bin/python3",
    var: VarOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a host to the cluster inventory (localhost: set its root, Python, variables)."""
    import sys

    from appliance.provision.inventory import LOCALHOST, Host
    from appliance.services import provision_inventory

    local = name == LOCALHOST
    host = Host(name=name, connection="local" if local else "ssh",
                address=address or name, port=port, user=ssh_user, appliance_root=root,
                python=sys.executable if local and python == "/usr/bin/python3" else python,
                vars=parse_vars(var, None))
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        added = provision_inventory.add_host(appl, session, host, key_source=key,
                                             host_key_file=host_key_file)
    emit(added.to_dict(), as_json, f"Added {added.name}" + "".join(
        f"\n  host key {fp}" for fp in added.fingerprints()))


@inventory_app.command("remove")
def inventory_remove_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Host name.")],
    reason: ReasonOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a host (and the SSH key copied for it)."""
    from appliance.services import provision_inventory

    provision_inventory.removal_reason(name, reason)  # refused before a password is asked
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        provision_inventory.remove_host(appl, session, name, reason or "")
    from appliance.provision.inventory import LOCALHOST
    emit({"removed": name}, as_json, f"Removed {name}" + (
        " (its settings are the built-in defaults again)" if name == LOCALHOST else ""))
