"""`appliance media ...`: find bundles on removable media, import one, reclaim the store's disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    ReasonOpt,
    UserOpt,
    emit,
    login,
    open_app,
)
from appliance.text import shown

app = typer.Typer(help="Bundles on removable media: scan and import; reclaim the store's disk.",
                  no_args_is_help=True)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("scan")
def scan(
    ctx: typer.Context,
    path: Annotated[list[Path] | None, typer.Option(
        "--path", help="A directory or .tar to look in (besides removable media).")] = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List bundles found (name, version, publisher, components, size, new/update/older)
    after verifying their metadata; copies nothing."""
    from appliance.services import media

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        entries = media.scan(appl, session, path)
    # Paths, names and reasons come from media: each is shown on its own line, escaped.
    lines = [] if entries else ["No bundles found on removable media or the given paths."]
    for e in entries:
        where = shown(e.path)
        if e.status == "refused" or not e.name:
            lines.append(f"{where}: {e.status.upper()}: {shown(e.reason)}")
            continue
        installed = f", installed v{e.installed_version}" if e.installed_version else ""
        if e.status == "older":
            lines.append(f"{where}: {shown(e.name)} v{e.version} (unverified) "
                         f"[older{installed}]: {shown(e.reason)}")
            continue
        lines.append(f"{where}: {shown(e.name)} v{e.version} by {shown(e.publisher)}, "
                     f"{_size(e.size)} [{e.status}{installed}]")
        lines += [f"    {c['kind']:<20} {shown(c['name']):<28} {_size(c['size'])}"
                  for c in e.components]
    emit([e.to_dict() for e in entries], as_json, "\n".join(lines))


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Bundle directory or .tar on the media.")],
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle completely, then copy its payload into the content store."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from appliance.cli.common import err_console
    from appliance.services import media

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        # The description is a file name from the media: text, not markup.
        bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                       DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                       console=err_console,
                       disable=as_json or not err_console.is_terminal, transient=True)
        task = bar.add_task("verifying", total=None)

        def progress(p) -> None:
            bar.update(task, completed=p.done_bytes, total=p.total_bytes,
                       description=(p.current.rsplit("/", 1)[-1] or "copying")[:32])

        with bar:
            result = media.import_bundle(appl, session, path, progress)
    d = result.to_dict()
    what = "already imported" if result.already_imported else result.state
    emit(d, as_json,
         f"{shown(result.name)} v{result.version} by {shown(result.publisher)}: {what}\n"
         f"  digest {result.digest}\n"
         f"  copied {_size(result.copied_bytes)} ({result.files_copied} files), "
         f"already present {_size(result.skipped_bytes)} ({result.files_skipped} files"
         f"{media.skipped_note(result)}), {result.seconds:.1f} s")


@app.command("list")
def list_(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Imported bundles and their state."""
    from appliance.services import media

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        rows = media.bundles(appl, session)
    emit(rows, as_json, "\n".join(
        f"{r['id']:>4}  {shown(r['name'])} v{r['version']}  {r['state']:<10} "
        f"{shown(r['publisher'])}  {r['imported_at']} by {shown(r['imported_by'])}"
        for r in rows) or "No bundles imported.")


@app.command("reclaim")
def reclaim(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be removed.")] = False,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove the stored objects of rejected and rolled-back bundles (and of imports never
    resumed) that nothing else needs; bundle records and the audit trail stay."""
    from appliance.services import store

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        result = store.reclaim(appl, session, reason or "", dry_run)
    verb = "would remove" if result.dry_run else "removed"
    owners = f" (of {', '.join(result.bundles)})" if result.bundles else ""
    unrecorded = f", {result.unrecorded} recorded by no bundle" if result.unrecorded else ""
    emit(result.to_dict(), as_json,
         f"{verb} {_objects(result.objects)}, {_size(result.bytes)}{owners}{unrecorded}; "
         f"kept {_objects(result.kept_objects)}, {_size(result.kept_bytes)}")


def _objects(n: int) -> str:
    return f"{n} object{'s' if n != 1 else ''}"
